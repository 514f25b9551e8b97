"""The run report of one load: what each table received, sent and rejected, and what it cost in requests.

Written as JSON next to the rejects (`<working_dir>/bento_rejects/<load_id>.report.json`) after every
sink batch, so it survives a crash and the CLI can read it. `check_run` turns a bad report into a loud
error *after* dlt finished the load: raising inside the sink would leave the package pending, and dlt
1.31 loads pending packages before any new data, so one bad table would block every later run.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .rejects import PipelineRef, bento_dir, load_ids
from .settings import EMAIL_NEEDS_LEDGER, REPORT_SUFFIX, RESERVED_NOTE

#: reasons that fail a run whatever the threshold: no row of such a table can ever be sent
ALWAYS_FATAL = frozenset({"unknown_table", "email_sends_not_allowed", EMAIL_NEEDS_LEDGER})


class BentoRejectsExceeded(Exception):
    """Rows were rejected past the threshold (or a table is unknown); the load itself finished."""

    def __init__(self, message: str, reports: list[LoadReport]) -> None:
        super().__init__(message)
        self.reports = reports


def two_shares(share: float, threshold: float) -> tuple[str, str]:
    """A share and the threshold it passed, as percentages with the decimals it takes to tell them apart
    (0.13% past 0.1% reads `0.13%, threshold 0.10%`, not `0.1%, threshold 0.1%`)."""
    for digits in range(1, 5):
        shown = f"{share:.{digits}%}", f"{threshold:.{digits}%}"
        if shown[0] != shown[1]:
            return shown
    return f"{share:.4%}", f"{threshold:.4%}"


@dataclass
class TableReport:
    table: str
    operation: str | None
    received: int = 0
    sent: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    #: rows Bento counted as `failed` in an answer (it does not say which); included in `rejected`
    failed_by_bento: int = 0
    #: rows of those batches, all written to the rejects file for review
    rows_in_partly_failed_batches: int = 0
    #: extra commands sent for this table (an `unsubscribed` subscriber becomes an `unsubscribe` command)
    commands_sent: int = 0
    #: emails the sync ledger records as sent (by this load's earlier attempt or an earlier run): not sent again
    already_sent: int = 0
    #: sync ledger (changes.py): rows Bento had not seen, rows whose payload changed, rows not sent because
    #: Bento already acknowledged them (and for keyed events: already sent), remove_tags not sent (not owned)
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    tags_not_owned: int = 0
    #: events whose unique key was derived from their content (keys.py), and of them the identical rows
    #: numbered `key#n` (n >= 2) so that each stays an event
    derived_keys: int = 0
    identical_rows: int = 0
    batches: int = 0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    waited_seconds: float = 0.0
    #: time spent in this table's sink batches (summed over parallel jobs, so it can exceed the load's elapsed)
    busy_seconds: float = 0.0
    dropped_secret_columns: list[str] = field(default_factory=list)
    #: columns that name a key Bento's import would interpret (`command`): never sent
    reserved_columns: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def rejected_share(self) -> float:
        return self.rejected / self.received if self.received else 0.0


@dataclass
class LoadReport:
    load_id: str
    pipeline_name: str
    reject_threshold: float
    started_at: str = ""
    updated_at: str = ""
    elapsed_seconds: float = 0.0
    credential_checks: int = 0
    tables: dict[str, TableReport] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def totals(self) -> dict[str, float]:
        keys = ("received", "sent", "rejected", "requests", "retries", "rate_limited", "server_errors")
        return {key: sum(getattr(t, key) for t in self.tables.values()) for key in keys}

    def problems(self) -> list[str]:
        """Why this load must fail loudly; empty if it is fine."""
        out: list[str] = []
        for name, table in sorted(self.tables.items()):
            fatal = ALWAYS_FATAL & table.rejected_by_reason.keys()
            if "unknown_table" in fatal:
                out.append(
                    f"table `{name}` is not a Bento operation (subscribers, events, commands, emails): its "
                    f"{table.received} rows were not sent; map it with table_operations={{'{name}': 'subscribers'}}"
                )
            elif "email_sends_not_allowed" in fatal:
                out.append(
                    f"table `{name}` sends emails but allow_email_sends is False: its {table.received} rows were "
                    "not sent"
                )
            elif EMAIL_NEEDS_LEDGER in fatal:
                out.append(
                    f"table `{name}` sends emails with the sync ledger off: its {table.received} rows were not sent "
                    "(without the ledger a rerun would send them again)"
                )
            elif table.rejected_share > self.reject_threshold:
                reasons = ", ".join(f"{r}: {n}" for r, n in sorted(table.rejected_by_reason.items()))
                share, threshold = two_shares(table.rejected_share, self.reject_threshold)
                out.append(
                    f"table `{name}`: {table.rejected} of {table.received} rows rejected "
                    f"({share}, threshold {threshold}; {reasons})"
                )
        return out

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["totals"] = self.totals()
        out["problems"] = self.problems()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadReport:
        known = set(TableReport.__dataclass_fields__)
        tables = {
            name: TableReport(**{k: v for k, v in t.items() if k in known})
            for name, t in data.get("tables", {}).items()
        }
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "tables"}
        return cls(**fields, tables=tables)

    def save(self, folder: Path) -> Path:
        """Write atomically (a reader never sees half a file)."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.load_id}{REPORT_SUFFIX}"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
        return path

    def format(self) -> str:
        """A short human-readable summary, as the pipelines print it."""
        lines = [
            f"Bento load {self.load_id} ({self.pipeline_name}): {self.elapsed_seconds:.1f}s, "
            f"reject threshold {self.reject_threshold:.1%}"
        ]
        for name, t in sorted(self.tables.items()):
            reasons = ", ".join(f"{r}: {n}" for r, n in sorted(t.rejected_by_reason.items()))
            lines.append(
                f"  {name} -> {t.operation or '?'}: received {t.received}, sent {t.sent}, rejected {t.rejected}"
                + (f" ({reasons})" if t.rejected else "")
                + (f", commands {t.commands_sent}" if t.commands_sent else "")
                + (f", already sent {t.already_sent}" if t.already_sent else "")
                + (f"; new {t.new}, changed {t.changed}, unchanged {t.unchanged}" if t.new or t.changed or t.unchanged
                   else "")
                + (f"; keys derived {t.derived_keys}" + (f" ({t.identical_rows} identical rows numbered)"
                   if t.identical_rows else "") if t.derived_keys else "")
                + f"; requests {t.requests}, retries {t.retries}, 429s {t.rate_limited}, 5xx {t.server_errors}"
                + f", {t.busy_seconds:.1f}s in requests (parallel batches added up)"
            )
            if t.dropped_secret_columns:
                lines.append(f"    not sent (look like secrets): {', '.join(t.dropped_secret_columns)}")
            if t.reserved_columns:
                lines.append(f"    not sent ({RESERVED_NOTE}): {', '.join(t.reserved_columns)}")
            if t.ignored_columns:
                lines.append(f"    ignored (no meaning for {t.operation}): {', '.join(t.ignored_columns)}")
        for error in self.errors:
            lines.append(f"  error: {error}")
        for problem in self.problems():
            lines.append(f"  FAILED: {problem}")
        return "\n".join(lines)


def read_report(
    pipeline: PipelineRef, load_id: str, *, pipelines_dir: str | os.PathLike[str] | None = None
) -> LoadReport | None:
    path = bento_dir(pipeline, pipelines_dir) / f"{load_id}{REPORT_SUFFIX}"
    if not path.is_file():
        return None
    return LoadReport.from_dict(json.loads(path.read_text(encoding="utf-8")))


def list_reports(pipeline: PipelineRef, *, pipelines_dir: str | os.PathLike[str] | None = None) -> list[LoadReport]:
    """Every stored report of a pipeline, oldest first."""
    reports = (read_report(pipeline, lid, pipelines_dir=pipelines_dir) for lid in load_ids(pipeline, pipelines_dir))
    return [r for r in reports if r is not None]


def last_report(
    pipeline: PipelineRef, *, pipelines_dir: str | os.PathLike[str] | None = None
) -> LoadReport | None:
    """The newest load's report (a dlt Pipeline, or its name with `pipelines_dir`)."""
    reports = list_reports(pipeline, pipelines_dir=pipelines_dir)
    return reports[-1] if reports else None


def reports_for(pipeline: PipelineRef, load_info: Any = None) -> list[LoadReport]:
    """Reports of the loads in a dlt LoadInfo (or the newest one if no LoadInfo is given)."""
    if load_info is None:
        last = last_report(pipeline)
        return [last] if last else []
    found = (read_report(pipeline, lid) for lid in getattr(load_info, "loads_ids", []))
    return [r for r in found if r is not None]


def check_run(pipeline: PipelineRef, load_info: Any = None) -> list[LoadReport]:
    """Raise BentoRejectsExceeded if a load of `load_info` rejected past its threshold; else return the reports.

    Call it after `pipeline.run(...)`: the sink itself returns normally for invalid rows so that dlt
    finishes the package instead of keeping it pending.
    """
    reports = reports_for(pipeline, load_info)
    problems = [f"load {r.load_id}: {p}" for r in reports for p in r.problems()]
    if problems:
        name = reports[0].pipeline_name
        raise BentoRejectsExceeded(
            "Bento load finished, but rows were rejected:\n  "
            + "\n  ".join(problems)
            + f"\nList them with bento_destination.list_rejects({name!r}) or `bento-dlt rejects {name}`.",
            reports,
        )
    return reports
