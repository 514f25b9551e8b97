"""Constants of the destination: operations, endpoints, batch sizes, file names, defaults.

One table so that the sink, the mapping and the docs agree on what each Bento table means.
"""

from __future__ import annotations

from typing import Final

from bento_api.facts import COMMANDS as COMMANDS  # Bento's command names, re-exported for the mapping
from bento_api.facts import COMMANDS_NEEDING_QUERY as COMMANDS_NEEDING_QUERY
from bento_api.facts import WRITE_ENDPOINTS

#: dlt destination name, hence the config section `[destination.bento]` / `DESTINATION__BENTO__*`
DESTINATION_NAME: Final = "bento"

#: operation -> (HTTP path, body wrapper key), from Bento's facts (docs/bento-api.md, "Endpoints we use")
ENDPOINTS: Final[dict[str, tuple[str, str]]] = {op: (e.path, e.wrapper) for op, e in WRITE_ENDPOINTS.items()}
OPERATIONS: Final = tuple(ENDPOINTS)

#: rows per request for each operation (Bento's maxima, from the one table in bento_api.facts)
REQUEST_MAXIMA: Final[dict[str, int]] = {op: e.maximum for op, e in WRITE_ENDPOINTS.items()}

#: rows the pre-pass and the dry run read at a time, and the rows of a batch of the release before the sink
#: read whole files (dlt's offsets of a package it left pending count in these): the largest maximum
SINK_BATCH_SIZE: Final = max(REQUEST_MAXIMA.values())
#: load jobs (files) dlt runs at once. Each job sends its file's requests side by side on the run's shared
#: pool (request_pipeline.py), so one job alone keeps every request slot busy; more jobs only hold more
#: mapped windows. With the ledger's 16 MB cap, a streamed 1,000,000-row sync peaked about 20 MB higher at 8
#: jobs than at 3, with the same rows/s (all three changes together: 350 MB -> 325 MB, BENCHMARKS.md); two
#: jobs left a job's tail (its last requests and commits) uncovered often enough to cost about a tenth of
#: the rows/s.
MAX_LOAD_JOBS: Final = 3

#: a 400 or 422 on a request of more rows than this applied nothing: it is halved and sent again; a smaller one is
#: rejected as refused. A 413 (body too large) is split further, down to single rows (docs/destination.md).
HALVE_ABOVE: Final = 100

#: bytes a row may take as JSON, as sent. Bento documents no limit, so this is a guess that keeps one row
#: from filling a request; a larger row is rejected `row_too_large` before anything is sent
MAX_ROW_BYTES: Final = 1024 * 1024
#: bytes a request body may take: rows are packed into requests by this as well as by REQUEST_MAXIMA, so a
#: table of wide rows does not meet a server's body limit (413) on every request. Four rows of the largest
#: size fit in one.
MAX_REQUEST_BYTES: Final = 4 * MAX_ROW_BYTES

DEFAULT_REJECT_THRESHOLD: Final = 0.1

#: reject reason of email rows when the sync ledger is off: without it nothing stops a rerun sending them twice
EMAIL_NEEDS_LEDGER: Final = "email_needs_ledger"

#: a name looks like a secret when one of its words (the parts of its lowercase_underscored form) is one of these
SECRET_WORDS: Final = frozenset({
    "password", "passwd", "pwd", "passcode", "passphrase", "secret", "secrets", "token", "tokens",
    "credential", "credentials", "authorization", "bearer", "jwt", "apikey", "accesskey", "secretkey", "privatekey",
    "authkey", "accesstoken", "authtoken", "refreshtoken", "clientsecret",
})
#: ...or when its last word is one of these (`stripe_key`, `api_key`, `private_key`, `session_key`)
SECRET_LAST_WORDS: Final = frozenset({"key", "keys"})
#: names of the row contract that match the rules above but are not secrets: always sent
SECRET_EXEMPT_NAMES: Final = frozenset({"unique_key", "idempotency_key"})

#: how reports and the dry run label columns that name a key Bento's import would interpret (bento_api.facts)
RESERVED_NOTE: Final = "Bento's import would read them as instructions"

#: folder under the pipeline's working directory holding rejects and reports, one pair per load
REJECTS_DIRNAME: Final = "bento_rejects"
REJECTS_SUFFIX: Final = ".rejects.jsonl"
REPORT_SUFFIX: Final = ".report.json"
