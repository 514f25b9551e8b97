"""Keep pandas out of a `bento-dlt sync` process until something really uses it.

pyarrow imports pandas on its first array, scalar or table, only to ask whether a value is a pandas object
(its lazy pandas shim). The sync command's inputs are DuckDB, Postgres, CSV and Parquet, read as Arrow, so
that import buys nothing and costs about 34 MB of the process's RSS (a 1,000,000-row first sync peaked at
299.1 MB with it and 265.4 MB without; BENCHMARKS.md, ten million rows). Here pyarrow's first check is answered "no
pandas"; pyarrow asks again, and then imports pandas, whenever a caller needs pandas itself (`to_pandas`,
`from_pandas`), so nothing stops working. A process that imported pandas already is left as it is.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType


class _PandasAbsent(importlib.abc.MetaPathFinder):
    """An import finder that says pandas cannot be imported (only while pyarrow checks)."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "pandas":
            raise ImportError("pandas is not needed by this command (pipelines/arrow_without_pandas.py)")
        return None


def arrow_without_pandas() -> bool:
    """Answer pyarrow's first "is pandas there?" with no; True if pandas stays out of this process for now
    (False: it was imported already, and is left as it is)."""
    if "pandas" in sys.modules:
        return False
    import pyarrow as pa

    finder = _PandasAbsent()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([0])  # pyarrow's first look for pandas happens here, and finds none
    finally:
        sys.meta_path.remove(finder)
    return "pandas" not in sys.modules
