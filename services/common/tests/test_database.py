"""The SQLite engine keeps its connections to a file: a busy worker's threads reuse them."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event, text

from services.common.database import make_engine


def test_connections_to_a_sqlite_file_are_reused_not_reopened(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    opened: list[object] = []
    event.listen(engine, "connect", lambda connection, _record: opened.append(connection))
    try:
        for _ in range(3):  # twelve threads' worth at once, three times over
            held = [engine.connect() for _ in range(12)]
            assert all(c.execute(text("PRAGMA journal_mode")).scalar() == "wal" for c in held)
            for connection in held:
                connection.close()
        assert len(opened) == 12
    finally:
        engine.dispose()
