"""bento-dlt's reverse-ETL destination: `dlt.pipeline(..., destination=bento()).run(rows, table_name="subscribers")`.

Tables: subscribers -> POST /batch/subscribers, events -> POST /batch/events, commands -> POST /fetch/commands,
emails -> POST /batch/emails (only with allow_email_sends=True); `table_operations` maps other table names.
Rejected rows and a report per load live under `<pipelines_dir>/<pipeline_name>/bento_rejects/`.
"""

from .clients import check_credentials, close_clients
from .non_finite import reject_non_finite
from .rejects import bento_dir, iter_rejects, list_rejects, load_ids
from .report import BentoRejectsExceeded, LoadReport, TableReport, check_run, last_report, list_reports, read_report
from .runcontext import BentoRunCancelled, BentoRunStopped, RunCancel, bento_run
from .runlock import BentoBusyError
from .settings import DEFAULT_REJECT_THRESHOLD, OPERATIONS, REQUEST_MAXIMA, SINK_BATCH_SIZE
from .sink import bento, resolve_operation

__all__ = [
    "DEFAULT_REJECT_THRESHOLD",
    "OPERATIONS",
    "REQUEST_MAXIMA",
    "SINK_BATCH_SIZE",
    "BentoBusyError",
    "BentoRejectsExceeded",
    "BentoRunCancelled",
    "BentoRunStopped",
    "LoadReport",
    "RunCancel",
    "TableReport",
    "bento",
    "bento_dir",
    "bento_run",
    "check_credentials",
    "check_run",
    "close_clients",
    "iter_rejects",
    "last_report",
    "list_rejects",
    "list_reports",
    "load_ids",
    "read_report",
    "reject_non_finite",
    "resolve_operation",
]
