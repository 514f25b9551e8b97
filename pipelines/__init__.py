"""Runnable pipelines and the `bento-dlt` command line.

Arrow's default allocator (mimalloc) keeps freed memory cached per thread; dlt's load jobs are threads,
so a million-row sync peaked about 25 MB higher with it (BENCHMARKS.md, claim c). These programs use
Arrow's system allocator unless ARROW_DEFAULT_MEMORY_POOL is already set. It applies only if pyarrow is
not imported yet (Arrow reads the variable once), so it changes nothing in a process that imported it first.
"""

import os

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
