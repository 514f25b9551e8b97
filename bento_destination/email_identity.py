"""The identity of an email row: the key that says "this email was already sent" across runs.

A row names its own key in a `unique_key` or `idempotency_key` column (any spelling that normalises to
those names); otherwise the key is derived from what the email is: `to`, `from`, `subject`, `html_body`,
`personalizations` and `transactional`, as mapped (so `To` and ` to ` mean the same, and a recipient's
case does not matter). Derived keys start with `email-v1:`; a new derivation would get a new prefix, so
keys recorded by an older version are never misread. Identical rows of one input are numbered
(`key#2`, `key#3`, ...; see keys.number_identical): two identical rows are two emails, and a rerun of
the same input sends neither again. Explicit keys are not numbered: two rows with one key are one email.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

from .ledger import canonical_json
from .values import field_key

#: columns (normalised names) that carry an email's own key, first found wins
KEY_COLUMNS: Final = ("idempotency_key", "unique_key")
#: the derivation's version, written into every derived key
DERIVED_PREFIX: Final = "email-v1:"
#: the payload fields a derived key covers
IDENTITY_FIELDS: Final = ("to", "from", "subject", "html_body", "personalizations", "transactional")
#: an explicit key longer than this is hashed (the ledger keeps keys short)
MAX_EXPLICIT_KEY: Final = 200


def explicit_key(row: Mapping[str, Any]) -> str | None:
    """The row's own key (`idempotency_key` or `unique_key` column), or None when it has none."""
    by_name = {field_key(str(column)): value for column, value in row.items()}
    for name in KEY_COLUMNS:
        value = by_name.get(name)
        if value is None:
            continue
        text = str(value).strip()
        if text:
            if len(text) > MAX_EXPLICIT_KEY:
                text = "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
            return f"key:{text}"
    return None


def derive_email_key(payload: Mapping[str, Any]) -> str:
    """`email-v1:` + sha256 (first 32 hex digits) of the identity fields of a mapped email payload.

    `transactional` missing counts as false (Bento's default), so adding `transactional: false` to a
    table does not make every email new.
    """
    content = {name: payload.get(name) for name in IDENTITY_FIELDS}
    content["to"] = str(content["to"] or "").strip().lower()
    content["from"] = str(content["from"] or "").strip().lower()
    content["transactional"] = bool(content["transactional"])
    digest = hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()[:32]
    return DERIVED_PREFIX + digest


def base_key(row: Mapping[str, Any], payload: Mapping[str, Any]) -> tuple[str, bool]:
    """(key before numbering, whether it was derived): the explicit key if the row has one, else the derived one."""
    own = explicit_key(row)
    return (own, False) if own is not None else (derive_email_key(payload), True)
