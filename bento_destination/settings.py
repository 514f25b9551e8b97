"""Constants of the destination: operations, endpoints, batch sizes, file names, defaults.

One table so that the sink, the mapping and the docs agree on what each Bento table means.
"""

from __future__ import annotations

import re
from typing import Final

from bento_api import BATCH_MAXIMA

#: dlt destination name, hence the config section `[destination.bento]` / `DESTINATION__BENTO__*`
DESTINATION_NAME: Final = "bento"

#: operation -> (HTTP path, body wrapper key)
ENDPOINTS: Final[dict[str, tuple[str, str]]] = {
    "subscribers": ("/batch/subscribers", "subscribers"),
    "events": ("/batch/events", "events"),
    "commands": ("/fetch/commands", "command"),
    "emails": ("/batch/emails", "emails"),
}
OPERATIONS: Final = tuple(ENDPOINTS)

#: rows per request for each operation (Bento's maxima, from the one table in bento_api)
REQUEST_MAXIMA: Final[dict[str, int]] = {op: BATCH_MAXIMA[op] for op in OPERATIONS}

#: dlt's batch_size is per destination, not per table: the largest maximum, so one dlt batch is one
#: subscribers/events request; emails and commands are split inside the sink
SINK_BATCH_SIZE: Final = max(REQUEST_MAXIMA.values())

#: a 400 on a request of more rows than this applied nothing: it is halved and sent again; a smaller one is
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

#: column names (normalised) containing any of these look like secrets and are not sent by default
SECRET_NAME_PARTS: Final = ("password", "passwd", "token", "api_key", "apikey", "secret", "private_key", "access_key")

#: folder under the pipeline's working directory holding rejects and reports, one pair per load
REJECTS_DIRNAME: Final = "bento_rejects"
REJECTS_SUFFIX: Final = ".rejects.jsonl"
REPORT_SUFFIX: Final = ".report.json"

#: Bento's email rule (DESIGN.md): trimmed, lower-cased, at most 254 characters, this pattern
EMAIL_RE: Final = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$")
MAX_EMAIL_LENGTH: Final = 254

#: commands Bento documents for /fetch/commands, and which of them need a `query`
COMMANDS_NEEDING_QUERY: Final = frozenset(
    {"add_tag", "add_tag_via_event", "remove_tag", "add_field", "remove_field", "change_email"}
)
COMMANDS: Final = COMMANDS_NEEDING_QUERY | {"subscribe", "unsubscribe"}
