"""Everything derived from a study's `summary.json`: plots, report.html, the text table.

Runs from JSON alone (no torch, no model): `undo report RUN_DIR` regenerates the lot.
The schema is documented in docs/summary-schema.md.

    write_report(run_dir)     -> Report (plots/*.{png,svg,pdf}, table.csv, report.html,
                                 each written atomically)
    write_comparison(runs, out_dir) -> Comparison (several runs on one page, in out_dir)
    load_summary(path)        -> dict, validated; SummaryError names the bad field
    validate_summary(obj)     -> obj, validated
    format_table(summary)     -> fixed-width text table of every model
    compose_verdict(summary)  -> plain-language verdict from the numbers
"""

from .build import Report, write_report
from .compare import Comparison, write_comparison
from .schema import SCHEMA_VERSION, SummaryError
from .schema import load as load_summary
from .schema import validate as validate_summary
from .table import format_table
from .verdict import compose_verdict

__all__ = ["SCHEMA_VERSION", "Comparison", "Report", "SummaryError", "compose_verdict",
           "format_table", "load_summary", "validate_summary", "write_comparison",
           "write_report"]
