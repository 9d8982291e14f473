"""Atomic writes: the target holds the old content or the new, and no temporary file is left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from imageloop.files import atomic_write, atomic_write_bytes, atomic_write_text


def test_writes_create_the_folder_and_replace_the_file(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.txt"
    atomic_write_text(target, "first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["b.txt"]


def test_an_error_mid_write_keeps_the_old_file_and_removes_the_temporary_one(tmp_path: Path) -> None:
    target = tmp_path / "b.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write(b"half")
        raise RuntimeError("stop")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["b.bin"]
