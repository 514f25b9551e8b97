# %% [markdown]
# # Bento tags and subscribers in pandas
# Loads two resources of `bento_source` into DuckDB and reads them back as DataFrames.
# With BENTO_SITE_UUID, BENTO_PUBLISHABLE_KEY and BENTO_SECRET_KEY set it reads your account (subscribers
# need Bento's Enterprise search); without them it starts a seeded local emulator, with raised budgets.
# Cells are marked `# %%` (VS Code, Jupytext, PyCharm run them one by one).

# %%
import json
import os
from pathlib import Path

import dlt

from bento_source import bento_source

workdir = Path(os.environ.get("BENTO_NOTEBOOK_DIR", "bento_notebook"))
workdir.mkdir(parents=True, exist_ok=True)

# %%
emulator = None
credentials: dict = {}
if not os.environ.get("BENTO_SECRET_KEY"):
    from bento_api.emulator import BentoEmulator, EmulatorConfig

    emulator = BentoEmulator(EmulatorConfig(seed=7, requests_per_minute=600_000)).start()
    credentials = {**emulator.credentials, "requests_per_minute": 60_000}

# %%
pipeline = dlt.pipeline(
    pipeline_name="bento_notebook",
    pipelines_dir=str(workdir / "pipelines"),
    destination=dlt.destinations.duckdb(str(workdir / "bento_notebook.duckdb")),
    dataset_name="bento",
)
load_info = pipeline.run(bento_source(**credentials).with_resources("tags", "subscribers"))
print(load_info)

# %%
dataset = pipeline.dataset()
tags = dataset.tags.df()
subscribers = dataset.subscribers.df()
tags[["id", "name", "created_at"]].head()

# %%
# Each subscriber row carries its tag names in `tag_names`, a JSON list (text in pandas): no join needed.
people = subscribers[["email", "updated_at", "tag_names"]].copy()
people["tag_names"] = people["tag_names"].map(json.loads, na_action="ignore")  # JSON text to a Python list
customers = people[people["tag_names"].map(lambda names: isinstance(names, list) and "customer" in names)]
customers.head()

# %%
# The same names, one row per (subscriber, tag), as dlt nests lists: the child table `subscribers__tags`,
# joined on `_dlt_parent_id` = `subscribers._dlt_id`.
subscriber_tags = dataset.subscribers__tags.df()
subscriber_tags[["_dlt_parent_id", "value"]].head()

# %%
if emulator is not None:
    emulator.stop()
