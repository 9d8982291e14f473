"""The schema is complete on ``import imageloop.storage`` alone, and Alembic's head builds exactly that schema.

Run in a fresh interpreter: in the test process other modules have long been imported, which would hide a table
that only a side-effect import registers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_CHECK = """
import json, sys
import imageloop.storage
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
import sqlalchemy as sa
from imageloop.storage.db import create_db_engine, upgrade_schema
from imageloop.storage.models import Base

url = sys.argv[1]
upgrade_schema(url)
db_engine = create_db_engine(url)
with db_engine.connect() as connection:
    diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata)
    migrated = sa.inspect(connection).get_table_names()
db_engine.dispose()
print(json.dumps({"metadata": sorted(Base.metadata.tables), "migrated": sorted(migrated),
                  "diff": [repr(entry) for entry in diff]}))
"""


def test_import_of_storage_alone_declares_every_table_the_migrations_create(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    done = subprocess.run([sys.executable, "-c", _CHECK, url], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["metadata"] == sorted(set(found["migrated"]) - {"alembic_version"})
    assert found["diff"] == []
