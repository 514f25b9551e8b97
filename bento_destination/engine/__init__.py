"""The diff where the data lives: new and changed rows found by DuckDB or Postgres, not by Python."""

from .columns import EngineDeclined
from .for_sync import diffed_rows
from .rows import EngineRows, EngineSource, engine_rows

__all__ = ["EngineDeclined", "EngineRows", "EngineSource", "diffed_rows", "engine_rows"]
