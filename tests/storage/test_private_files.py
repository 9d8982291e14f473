"""The data on disk is its owner's alone: the SQLite file (and its WAL) 0600, a new data folder and the blob folder
0700, image files 0600; an existing database file that others could read is tightened at start."""

from __future__ import annotations

import stat
from pathlib import Path

from imageloop.config import Settings
from imageloop.storage import Storage


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_data_folder_database_and_images_are_private(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    storage = Storage.open(settings)
    try:
        storage.blobs.put("images/a/b.png", b"png")
        database = settings.data_dir / "imageloop.db"
        assert _mode(settings.data_dir) == 0o700
        assert _mode(database) == 0o600
        assert _mode(Path(str(database) + "-wal")) == 0o600
        assert _mode(settings.blobs_dir) == 0o700
        assert _mode(settings.blobs_dir / "images" / "a" / "b.png") == 0o600
    finally:
        storage.close()


def test_an_existing_world_readable_database_is_tightened(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    Storage.open(settings).close()
    database = settings.data_dir / "imageloop.db"
    database.chmod(0o644)
    Storage.open(settings).close()
    assert _mode(database) == 0o600
