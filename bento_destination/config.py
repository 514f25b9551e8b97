"""The destination's one dlt configspec, `[destination.bento]`, and the ledger options built from it.

dlt resolves this spec once per load (keyword > `<PIPELINE>__DESTINATION__BENTO__*` and
`DESTINATION__BENTO__*` > `.dlt/secrets.toml` / `.dlt/config.toml` > defaults) and hands the sink the
resolved object. `sync()` and the `bento-dlt` command line need some of it before the load (the
credentials check, the budgets, the ledger's location and lock), so they resolve the same spec the same
way with `resolve_destination_config`: nothing here reads dlt's environment variables by hand.

`BENTO_*` variables stay a fallback outside dlt's config, applied after it (`settings()`, `budgets()`).

No `from __future__ import annotations` here: dlt reads the field types at runtime.
"""

import dataclasses
import warnings
from pathlib import Path
from typing import Any

from dlt.common.configuration import configspec, resolve_configuration
from dlt.common.configuration.exceptions import ConfigurationException
from dlt.common.configuration.inject import inject_section
from dlt.common.configuration.specs.config_section_context import ConfigSectionContext
from dlt.common.typing import TSecretStrValue
from dlt.destinations.impl.destination.configuration import CustomDestinationClientConfiguration

from bento_api import BentoConfigError, BentoSettings, Budgets, resolve_budgets, resolve_settings
from bento_api.settings import check_base_url

from .keys import DEFAULT_EVENT_KEYS, check_event_keys
from .ledger import DEFAULT_MAX_SHARE
from .settings import DEFAULT_REJECT_THRESHOLD, DESTINATION_NAME, OPERATIONS

#: the sync ledger's DuckDB file in the pipeline's working folder, unless `ledger_url` names another place
LEDGER_FILENAME = "bento_ledger.duckdb"
#: the fields that are credentials: dlt reads them only from secret providers, and they never show in a message
SECRET_FIELDS = ("site_uuid", "publishable_key", "secret_key")


@dataclasses.dataclass(frozen=True)
class LedgerOptions:
    """The ledger options of one run (`bento(...)` keywords of the same names)."""

    sync_ledger: bool = True
    ledger_url: str | None = None
    full_resync: bool = False
    allow_events_for_unsubscribed: bool = False
    max_blast_radius: float = DEFAULT_MAX_SHARE
    force: bool = False
    tag_ownership: bool = False
    #: "derived" (default): events without their own key get one derived from their content (keys.py);
    #: "none": they are sent without a key, at least once
    event_keys: str = DEFAULT_EVENT_KEYS

    def validate(self) -> None:
        check_event_keys(self.event_keys)
        _check_share("max_blast_radius", self.max_blast_radius, "a share of the known audience")

    def location(self, working_dir: str | Path) -> str:
        """`ledger_url` (resolved with the rest of the config), else the DuckDB file in the working folder."""
        return self.ledger_url or str(Path(working_dir) / LEDGER_FILENAME)


def _check_share(key: str, value: float, what: str) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise BentoConfigError(f"{key} is {what} between 0 and 1, got {value!r}")


@configspec
class BentoDestinationConfig(CustomDestinationClientConfiguration):
    """Every keyword of `bento(...)`; the keys are dlt secrets, so dlt's trace never stores them."""

    site_uuid: TSecretStrValue | None = None
    publishable_key: TSecretStrValue | None = None
    secret_key: TSecretStrValue | None = None
    base_url: str | None = None
    requests_per_minute: float | None = None
    emails_per_minute: float | None = None
    table_operations: dict[str, str] | None = None
    allow_email_sends: bool = False
    reject_threshold: float = DEFAULT_REJECT_THRESHOLD
    allow_secret_columns: bool = False
    user_agent: str | None = None
    sync_ledger: bool = True
    ledger_url: str | None = None
    full_resync: bool = False
    derive_event_keys: bool | None = None  # deprecated, does nothing: see event_keys
    allow_events_for_unsubscribed: bool = False
    max_blast_radius: float = DEFAULT_MAX_SHARE
    force: bool = False
    tag_ownership: bool = False
    event_keys: str = DEFAULT_EVENT_KEYS
    record_sent_rows: bool = False

    def on_resolved(self) -> None:
        """Refuse a bad value as soon as it is resolved, naming its key (never a secret's value)."""
        bad = {t: op for t, op in (self.table_operations or {}).items() if op not in OPERATIONS}
        if bad:
            raise BentoConfigError(
                f"table_operations maps {bad} to unknown operations; use one of {', '.join(OPERATIONS)}"
            )
        _check_share("reject_threshold", self.reject_threshold, "a share of rows")
        for key in ("requests_per_minute", "emails_per_minute"):
            value = getattr(self, key)
            if value is not None and not float(value) > 0:
                raise BentoConfigError(f"{key} must be a positive number, got {value!r}")
        self.ledger_options().validate()
        if self.base_url:  # the message names base_url; a URL carrying keys is refused without echoing them
            check_base_url(self.base_url)

    def settings(self) -> BentoSettings:
        """Credentials and endpoint: this config, then `BENTO_*`; one error names everything missing."""
        return resolve_settings(self.site_uuid, self.publishable_key, self.secret_key, self.base_url,
                                sections=("destination",))

    def budgets(self) -> Budgets:
        """The request budgets: this config, then `BENTO_REQUESTS_PER_MINUTE` / `BENTO_EMAILS_PER_MINUTE`."""
        return resolve_budgets(self.requests_per_minute, emails_per_minute=self.emails_per_minute)

    def ledger_options(self) -> LedgerOptions:
        return LedgerOptions(
            sync_ledger=self.sync_ledger,
            ledger_url=self.ledger_url,
            full_resync=self.full_resync,
            allow_events_for_unsubscribed=self.allow_events_for_unsubscribed,
            max_blast_radius=self.max_blast_radius,
            force=self.force,
            tag_ownership=self.tag_ownership,
            event_keys=self.event_keys,
        )


#: the keywords `bento(...)` takes, hence the fields a caller may give `resolve_destination_config`
KEYWORDS = tuple(
    name for name in BentoDestinationConfig.get_resolvable_fields()
    if name not in CustomDestinationClientConfiguration.get_resolvable_fields()
)


def resolve_destination_config(
    pipeline_name: str | None = None, destination: Any = None, /, **keywords: Any
) -> BentoDestinationConfig:
    """The spec resolved as dlt resolves it for the load of `pipeline_name`; `keywords` win as explicit values.

    `destination`: a `bento(...)` factory (a pipeline's `.destination`), whose keywords and name are used
    instead; None keywords count as not given (dlt would take an explicit None over the environment).
    Raises BentoConfigError naming the key of a value that cannot be used.
    """
    unknown = sorted(set(keywords) - set(KEYWORDS))
    if unknown:
        raise BentoConfigError(f"unknown keywords of bento(...): {', '.join(unknown)}")
    explicit = {key: value for key, value in keywords.items() if value is not None}
    context = ConfigSectionContext(pipeline_name=pipeline_name, sections=())
    try:
        with inject_section(context):
            if destination is not None:
                config = destination.configuration(None)
            else:
                config = resolve_configuration(
                    BentoDestinationConfig(), sections=("destination", DESTINATION_NAME), explicit_value=explicit
                )
    except ConfigurationException as error:
        raise BentoConfigError(f"[destination.{DESTINATION_NAME}]: {error}") from None
    if not isinstance(config, BentoDestinationConfig):
        raise BentoConfigError(f"{type(config).__name__} is not the bento destination's configuration")
    if config.derive_event_keys is not None:
        warnings.warn("derive_event_keys is deprecated and does nothing: events get derived keys by default "
                      "(event_keys='none' opts out)", DeprecationWarning, stacklevel=2)
    return config
