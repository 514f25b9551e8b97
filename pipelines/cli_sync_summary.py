"""What `bento-dlt sync` says after a send: the JSON summary and the text, from the load reports of the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bento_destination import LoadReport, list_rejects, load_ids, read_report
from bento_destination.results import results_target

from .cli_common import EXIT_OK, EXIT_REJECTS, PROG, reject_example
from .cli_input import SyncInput
from .cli_sync_settings import SyncSettings

#: rejected rows printed after a sync (all of them stay listed by `bento-dlt rejects`)
REJECTS_SHOWN = 10


def sync_outcome(
    source: SyncInput, cfg: SyncSettings, working_dir: Path, known: set[str], total: int, elapsed: float,
    notes: list[str],
) -> tuple[int, dict[str, Any], str]:
    """(exit code, JSON summary, text) of a send, from the reports of the loads it made (those not in `known`)."""
    reports = [r for lid in load_ids(working_dir) if lid not in known
               if (r := read_report(working_dir, lid)) is not None]
    problems = [problem for report in reports for problem in report.problems()]
    rejects = [r for report in reports for r in list_rejects(working_dir, report.load_id)]
    summary: dict[str, Any] = {
        "pipeline_name": cfg.pipeline_name,
        "pipelines_dir": str(working_dir.parent.resolve()),
        "table": source.table_name,
        "operation": cfg.operation,
        "input": source.label,
        "rows": total,
        "elapsed_seconds": round(elapsed, 2),
        "loads": [report.to_dict() for report in reports],
        "totals": _sum_totals(reports),
        "reject_examples": [reject_example(record, cfg.show_rows) for record in rejects[:REJECTS_SHOWN]],
        "rejected_by_reason": _reasons(reports),
        "problems": problems,
    }
    results_to = results_target(cfg.results, working_dir, cfg.results_dataset)
    summary["results"] = None if results_to is None else results_to.describe()  # where bento_sync_runs is
    if problems:  # what `--quiet` prints as its one line (exit 3)
        summary["error"] = "; ".join(problems)
    lines = [note for note in notes if not note.startswith("Bento load ")]
    lines += [report.format() for report in reports] or [f"{source.label}: no rows to send"]
    for record in rejects[:REJECTS_SHOWN]:
        lines.append(f"  rejected ({record['reason']}): {record['detail']}")
    if len(rejects) > REJECTS_SHOWN:
        lines.append(f"  ... {len(rejects) - REJECTS_SHOWN} more")
    if rejects:
        where = f" --pipelines-dir {summary['pipelines_dir']}" if cfg.pipelines_dir else ""
        lines.append(f"  list them all: {PROG} rejects --pipeline-name {cfg.pipeline_name}{where}")
    uncertain = sum(t.rejected_by_reason.get("email_send_uncertain", 0) for r in reports for t in r.tables.values())
    if uncertain:
        where = f" --pipelines-dir {summary['pipelines_dir']}" if cfg.pipelines_dir else ""
        lines.append(f"  {uncertain} emails may or may not have reached Bento and are not sent again: "
                     f"{PROG} emails uncertain --pipeline-name {cfg.pipeline_name}{where}")
    return (EXIT_REJECTS if problems else EXIT_OK), summary, "\n".join(lines)


def _reasons(reports: list[LoadReport]) -> dict[str, int]:
    out: dict[str, int] = {}
    for report in reports:
        for table in report.tables.values():
            for reason, count in table.rejected_by_reason.items():
                out[reason] = out.get(reason, 0) + count
    return out


def _sum_totals(reports: list[LoadReport]) -> dict[str, float]:
    out: dict[str, float] = {}
    for report in reports:
        for key, value in report.totals().items():
            out[key] = out.get(key, 0) + value
    return out
