"""Everything derived from a study's `summary.json`: plots, report.html, the text table.

Runs from JSON alone (no torch, no model): `undo report RUN_DIR` regenerates the lot.
The schema is documented in docs/summary-schema.md.

    write_report(run_dir)     -> Report (plots/*.{png,svg,pdf}, table.csv, report.html,
                                 each written atomically)
    write_comparison(runs, out_dir) -> Comparison (several runs on one page, in out_dir)
    load_summary(path)        -> dict, checked against its manifest (when it has one)
                                 and validated; SummaryError names the bad field or
                                 the damage
    validate_summary(obj)     -> obj, validated
    format_table(summary)     -> fixed-width text table of every model
    compose_verdict(summary)  -> plain-language verdict from the numbers
"""

from pathlib import Path
from typing import Any

from ..integrity import IntegrityError, check_file, sidecar
from .build import Report, write_report
from .compare import Comparison, write_comparison
from .schema import SCHEMA_VERSION, SummaryError
from .schema import load as _load
from .schema import validate as validate_summary
from .table import format_table
from .verdict import compose_verdict


def load_summary(path: str | Path) -> dict[str, Any]:
    """Read a summary.json: checked against its manifest first, when it has one (a run's
    is written with one, docs/integrity.md), so damage that still parses as a valid
    summary (a number changed) is never drawn; then validated. A summary without a
    manifest (copied by hand, a fixture, an older run) is read as it is."""
    path = Path(path)
    if sidecar(path).is_file():
        try:
            check_file(path, "Run the study again (`undo run CONFIG`): it rebuilds "
                             "summary.json from its stages")
        except IntegrityError as e:
            raise SummaryError(str(e)) from None
    return _load(path)


__all__ = ["SCHEMA_VERSION", "Comparison", "Report", "SummaryError", "compose_verdict",
           "format_table", "load_summary", "validate_summary", "write_comparison",
           "write_report"]
