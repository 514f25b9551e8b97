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

#: a 400/413 on a batch larger than this applied nothing: halve and retry (DESIGN.md)
HALVE_ABOVE: Final = 100

DEFAULT_REJECT_THRESHOLD: Final = 0.1

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

#: keys Bento's subscriber import may interpret beyond our contract (docs/bento-api.md, "Subscriber import"): an
#: old Bento page documents a per-row `command` ("subscribe" / "unsubscribe"). A column that maps to one of them is
#: never sent: subscription changes go only through `unsubscribed` and commands, past the consent memory and the
#: blast-radius guard
RESERVED_IMPORT_KEYS: Final = frozenset({"command"})
#: how reports and the dry run label those columns
RESERVED_NOTE: Final = "Bento's import would read them as instructions"

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
