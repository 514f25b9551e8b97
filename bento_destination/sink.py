"""`bento`: the dlt destination. Gets each load file whole, sends it (file_sink.py), and tallies the load.

No `from __future__ import annotations` here: dlt builds the config spec from the signature's real types.

Error policy (dlt 1.31 keeps a package pending after a terminal error and loads it before new data):
- rows that can never be sent (unknown table, invalid rows, emails not allowed, refused by Bento) are
  recorded as rejected and the sink returns normally, so the package completes; `check_run` then
  raises after the load if a table passed the reject threshold;
- 401/403/404 and bad configuration -> DestinationTerminalException (a person must fix them; the
  package stays pending and loads once they are fixed);
- 429/5xx/deadlines/connection errors that outlived the client's retries -> DestinationTransientException,
  unless the request spent the run's retry budget (runcontext.py): then the run's breaker trips;
- a stopping run (a cancel or signal, the breaker, another run holding the lock) ->
  DestinationTerminalException, so dlt does not retry the job; the package stays pending for the next run;
- anything else is a bug -> DestinationTerminalException, never five silent retries.
"""

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dlt
from dlt.common.storages.load_package import commit_load_package_state, destination_state, load_package_state
from dlt.common.typing import TDataItems, TSecretStrValue
from dlt.destinations.exceptions import DestinationTerminalException, DestinationTransientException

from bento_api import (
    BentoAttemptsSpentError,
    BentoCancelledError,
    BentoClient,
    BentoConfigError,
    BentoError,
    RequestGate,
)

from .changes import BLAST_RADIUS, LEDGER_OPERATIONS, BatchChanges, batch_changes
from .config import BentoDestinationConfig
from .duplicates import read_skips
from .email_identity import base_key
from .email_ledger import EmailStates, KeyNumbering
from .event_numbers import event_numbers
from .file_progress import package_progress
from .file_sink import FileLoad, load_file
from .gc_during_load import fewer_collections
from .keys import COPY_COLUMN, DEFAULT_EVENT_KEYS, NUMBERED_HINT, key_events
from .ledger import DEFAULT_MAX_SHARE
from .load_files import file_key, sink_columns
from .loadrun import LoadRun, load_run
from .mapping import MappingOptions, map_row
from .operations import resolve_operation as resolve_operation  # imported from here by callers
from .prepass import blast_radius_verdict, package_rows
from .rows import iter_rows
from .runcontext import MAX_ATTEMPTS, current_run
from .runlock import BentoBusyError
from .send import STOPPED, BatchOutcome, Item, Sender, add_mapped, batch_digest
from .settings import (
    DEFAULT_REJECT_THRESHOLD,
    DESTINATION_NAME,
    EMAIL_NEEDS_LEDGER,
    MAX_LOAD_JOBS,
    OPERATIONS,
    REJECTS_DIRNAME,
)
from .values import RowError


def _batch_refusal(
    table_name: str, operation: str | None, allow_email_sends: bool, sync_ledger: bool = True
) -> tuple[str, str] | None:
    """(reason, detail) if no row of this table may be sent, whatever the rows hold; None to map and send them."""
    if operation is None:
        return "unknown_table", (
            f"table `{table_name}` is not a Bento operation ({', '.join(OPERATIONS)}); "
            f"map it with table_operations={{'{table_name}': 'subscribers'}} (or another operation)"
        )
    if operation == "emails" and not allow_email_sends:
        return "email_sends_not_allowed", "emails are sent only with bento(allow_email_sends=True); nothing was sent"
    if operation == "emails" and not sync_ledger:
        return EMAIL_NEEDS_LEDGER, (
            "emails are sent only with the sync ledger, which remembers every email sent so that no rerun sends "
            "it twice; run without --no-ledger (sync_ledger=True). Nothing was sent"
        )
    return None


def _process(
    items: TDataItems,
    table_name: str,
    operation: str,
    client: BentoClient,
    outcome: BatchOutcome,
    options: MappingOptions,
    changes: BatchChanges | None = None,
    emails: EmailStates | None = None,
    gates: Callable[[str], RequestGate] | None = None,
    event_keys: str = DEFAULT_EVENT_KEYS,
    keys_counted: bool = False,
) -> None:
    rows = iter_rows(items)
    main: list[Item] = []
    derived: list[Item] = []
    copies: list[int | None] = []
    for row in rows:
        outcome.received += 1
        copy = row.pop(COPY_COLUMN, None)  # the n-th identical event, numbered by sync()'s pre-pass
        try:
            mapped = map_row(operation, row, options)
        except RowError as error:
            outcome.reject(error.reason, error.detail, row)
            continue
        if add_mapped(outcome, row, mapped, main, derived):
            copies.append(copy)
    if operation == "events":  # derived, numbered keys: a resent event is stored once (keys.py)
        derived_keys = key_events([item.payload for item in main], copies, event_keys)
        if not keys_counted:
            outcome.ledger["derived_keys"] += derived_keys
    if changes is not None:  # sync ledger: drop unchanged rows, reject consent violations (changes.py)
        main, derived = changes.filter(main, derived)
    batch_id = batch_digest(table_name, [item.payload for item in main + derived])
    numbering = KeyNumbering(destination_state(), commit_load_package_state) if emails is not None else None
    if numbering is not None:  # each email's key, numbered across the load (email_identity.py)
        keys = numbering.assign(table_name, batch_id, [base_key(item.row, item.payload) for item in main])
        for item, key in zip(main, keys, strict=True):
            item.key = key
    sender = Sender(client, outcome, emails, gates)
    if main:
        sender.send(operation, main, batch_id=batch_id)
    if derived:
        sender.send("commands", derived, batch_id=f"{batch_id}:commands", derived=True)
    if changes is not None:
        changes.acknowledge()  # only now, after Bento answered; only rows it did not refuse
    if numbering is not None:
        numbering.finished(table_name, batch_id)


def load_call(pipeline: Any) -> str | None:
    """The id of the `pipeline.run()` / `pipeline.load()` call now loading (dlt's runtime trace), if traced.

    dlt keeps the running call's trace in `Pipeline._trace` (no public accessor in 1.31); None when tracing is
    off, and then a plain run's breaker resets only with a new load id.
    """
    trace = getattr(pipeline, "_trace", None)
    transaction = getattr(trace, "transaction_id", None)
    return str(transaction) if transaction is not None else None


def _as_dlt_error(error: BaseException) -> Exception:
    if isinstance(error, BentoCancelledError | BentoAttemptsSpentError | BentoBusyError):
        # the run stops: terminal, so that dlt does not retry the job; the package stays pending (dlt 1.31)
        return DestinationTerminalException(error.message)
    if isinstance(error, BentoError):
        if error.transient:
            return DestinationTransientException(f"{error.message} (dlt will retry this batch)")
        if isinstance(error, BentoConfigError):
            return DestinationTerminalException(f"Bento destination configuration: {error.message}")
        return DestinationTerminalException(error.message)
    return DestinationTerminalException(
        f"bento destination failed unexpectedly ({type(error).__name__}: {error}); this is a bug, please report it"
    )


@dlt.destination(
    name=DESTINATION_NAME,
    spec=BentoDestinationConfig,  # config.py: resolved once per load; sync() and the CLI resolve the same spec
    batch_size=0,  # the sink gets each load file whole and sends its requests side by side (file_sink.py)
    loader_file_format="typed-jsonl",  # list[dict] keeps its types; Arrow (DataFrames, sql_table) stays parquet
    naming_convention="direct",
    skip_dlt_columns_and_tables=True,
    max_table_nesting=0,
    # more jobs would only hold more windows: each one's requests go out side by side (settings.MAX_LOAD_JOBS)
    max_parallel_load_jobs=MAX_LOAD_JOBS,
)
def bento(
    items: TDataItems,
    table: Any,
    site_uuid: TSecretStrValue | None = dlt.secrets.value,
    publishable_key: TSecretStrValue | None = dlt.secrets.value,
    secret_key: TSecretStrValue | None = dlt.secrets.value,
    base_url: str | None = dlt.config.value,
    requests_per_minute: float | None = None,
    emails_per_minute: float | None = None,
    table_operations: dict[str, str] | None = None,
    allow_email_sends: bool = False,
    reject_threshold: float = DEFAULT_REJECT_THRESHOLD,
    allow_secret_columns: bool = False,
    user_agent: str | None = None,
    sync_ledger: bool = True,
    ledger_url: str | None = None,
    full_resync: bool = False,
    derive_event_keys: bool | None = None,
    allow_events_for_unsubscribed: bool = False,
    max_blast_radius: float = DEFAULT_MAX_SHARE,
    force: bool = False,
    tag_ownership: bool = False,
    event_keys: str = DEFAULT_EVENT_KEYS,
    record_sent_rows: bool = False,
    config: BentoDestinationConfig = dlt.config.value,
) -> None:
    """Send one load file of `table` to Bento (tables subscribers, events, commands, emails); dlt passes its path.

    Use as `dlt.pipeline(..., destination=bento(...))`; see docs/destination.md for the row contract.
    The keywords are the fields of BentoDestinationConfig (config.py); dlt passes the resolved spec itself
    as `config` (never pass it yourself).
    """
    table_name = str(table["name"])
    load_id = str(load_package_state()["load_id"])
    pipeline = dlt.current.pipeline()
    folder = Path(pipeline.working_dir) / REJECTS_DIRNAME
    context = current_run(pipeline.working_dir)  # the run's client, credentials check, locks (runcontext.py)
    try:  # the values were validated when dlt resolved the config (config.py)
        settings = config.settings()
        client = context.clients.client(settings, config.budgets(), config.user_agent)
        operation = resolve_operation(table_name, table_operations)
        ledger_options = config.ledger_options()
    except BentoError as error:
        raise _as_dlt_error(error) from None
    path = items if isinstance(items, str) else ""  # dlt hands over the load file; the sink reads it
    key = file_key(path) if path else ""
    columns = sink_columns(list(table.get("columns") or {}))
    run: LoadRun = load_run(folder, load_id, pipeline.pipeline_name, float(reject_threshold), settings.redact)
    run.expect(table_name, lambda: package_rows(pipeline, load_id, table_name))  # counted once per table
    context.begin_load(load_id, load_call(pipeline))
    recorded: set[int] = set()

    def on_error(error: BaseException, outcome: BatchOutcome) -> None:
        if isinstance(error, BentoAttemptsSpentError):
            context.trip(f"a request of `{table_name}` failed {MAX_ATTEMPTS} times in this run: {error.message}")
        recorded.add(id(error))
        run.record_error(table_name, operation, str(_as_dlt_error(error)), outcome.stats)

    try:
        if not path:
            raise TypeError("the bento sink reads whole load files (batch_size=0); do not set batch_size")
        context.check()
        if context.implicit:  # a plain pipeline.run: lock the folder from its first file on
            context.hold_pipeline()
        if operation in (*LEDGER_OPERATIONS, "emails") and ledger_options.sync_ledger:  # emails: one sender
            context.hold_ledger(ledger_options.location(pipeline.working_dir), settings.site_uuid, operation)
        if context.clients.ensure_checked(load_id, client):
            run.credentials_checked()
        refusal = _batch_refusal(table_name, operation, allow_email_sends, sync_ledger)
        if refusal is None and operation in LEDGER_OPERATIONS:
            stopped = blast_radius_verdict(
                pipeline, load_id, settings, ledger_options, table_operations, allow_secret_columns
            )
            refusal = None if stopped is None else (BLAST_RADIUS, stopped)
        mapping = MappingOptions(allow_secret_columns)
        copies: dict[int, int] = {}
        if operation == "events" and ledger_options.event_keys == "derived" and not table.get(NUMBERED_HINT):
            numbers = context.remember(  # a package of the previous release carries its numbers in COPY_COLUMN
                ("event_numbers", load_id, table_name),
                lambda: event_numbers(pipeline, load_id, table_name, columns, mapping),
            )
            copies = numbers.get(key, {})
        load = FileLoad(
            path=path, key=key, table=table_name, operation=str(operation), columns=columns, client=client,
            run=run, context=context, progress=package_progress(key), options=mapping,
            changes_for=lambda outcome: batch_changes(
                ledger_options, pipeline.working_dir, settings.site_uuid, load_id, table_name, str(operation), outcome
            ),
            gates=lambda request: context.gate(load_id, request), on_error=on_error,
            event_keys=ledger_options.event_keys, copies=copies, skip=read_skips(folder, load_id, key),
            record_sent_rows=record_sent_rows, in_flight=client.budgets.max_in_flight,
        )

        def whole_window(number: int, first: int, rows: Sequence[dict[str, Any]]) -> bool:
            """Windows sent the old way: refused as a whole, or emails (claimed and sent one request at a time)."""
            if refusal is None and operation != "emails":
                return False
            outcome = BatchOutcome(sent_rows=[] if record_sent_rows else None)
            kept = [row for offset, row in enumerate(rows) if first + offset not in load.skip]
            if refusal is not None:
                for row in kept:
                    outcome.received += 1
                    outcome.reject(*refusal, row)
            else:
                location = ledger_options.location(pipeline.working_dir)
                ledger = context.ledgers.ledger(location, settings.site_uuid, load_id)
                emails = EmailStates(ledger, load_id, pipeline.pipeline_name)
                try:
                    _process(kept, table_name, "emails", client, outcome, mapping, None, emails, load.gates)
                except BaseException as error:
                    on_error(error, outcome)
                    raise
            run.merge(table_name, operation, outcome)
            context.add_batch(outcome.received, outcome.sent)
            return True

        with fewer_collections():  # gc_during_load.py: the load's objects would trip full collections
            load_file(load, whole_window)
    except Exception as error:
        if isinstance(error, BentoAttemptsSpentError):
            context.trip(f"a request of `{table_name}` failed {MAX_ATTEMPTS} times in this run: {error.message}")
        dlt_error = _as_dlt_error(error)
        if id(error) not in recorded:
            run.record_error(table_name, operation, str(dlt_error), BatchOutcome().stats)
        keep = isinstance(error, (*STOPPED, BentoBusyError)) or not isinstance(error, BentoError)
        raise dlt_error from (error if keep else None)
