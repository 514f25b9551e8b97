"""The diff where the data lives: new and changed subscriber rows found by DuckDB or Postgres, not by Python."""

from .columns import EngineDeclined
from .rows import EngineRows, EngineSource, engine_rows

__all__ = ["EngineDeclined", "EngineRows", "EngineSource", "engine_rows"]
