"""The ``[records]`` config section: the decision record store.

Records live beside the subscriber store: the directory defaults to
``<[subscribers] data_dir>/records``, and they are on by default exactly
when that data directory is in use (``[subscribers] enabled``), so a
config that keeps no data on disk writes none here either.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config_table import ConfigError, Table

DEFAULT_DATA_DIR = "var"  # [subscribers] data_dir's default


@dataclass(frozen=True, slots=True)
class RecordsConfig:
    enabled: bool = True
    dir: str = f"{DEFAULT_DATA_DIR}/records"  # one SQLite file per UTC day
    retention_days: int = 90  # whole day files older than this are deleted
    # records waiting for the writer beyond which new ones are dropped (and counted)
    max_pending: int = 100_000


def parse_records(t: Table, data_dir: str, data_dir_in_use: bool) -> RecordsConfig:
    """``data_dir``/``data_dir_in_use``: the [subscribers] data directory
    and whether the subscriber store uses it, for the defaults."""
    d = RecordsConfig()
    cfg = RecordsConfig(
        enabled=t.boolean("enabled", data_dir_in_use),
        dir=t.string("dir", f"{data_dir.rstrip('/')}/records"),
        retention_days=t.integer("retention_days", d.retention_days, 1, 36_500),
        max_pending=t.integer("max_pending", d.max_pending, 1_000, 10_000_000),
    )
    t.done()
    if not cfg.dir.strip():
        raise ConfigError("records.dir", "expected a directory")
    return cfg
