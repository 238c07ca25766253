"""`write_report(run_dir)`: every artifact derived from `summary.json`, from JSON alone.

Writes RUN_DIR/plots/{relearning,frontier,pareto}.png and RUN_DIR/report.html. Everything is
rendered in memory first and each file is then replaced atomically (temp file + rename), so an
invalid summary or a failure while drawing leaves the folder exactly as it was.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import plots, schema
from .html import render_html
from .verdict import verdict


@dataclass
class Report:
    """What `write_report` wrote, and the summary it was made from."""

    html: Path
    plots: dict[str, Path]
    summary: dict
    verdict: str
    verdict_composed: bool


def summary_path(run_dir: str | Path) -> Path:
    """RUN_DIR/summary.json; a path to the summary.json itself is accepted too."""
    p = Path(run_dir)
    if p.suffix == ".json":
        return p
    if not p.exists():
        raise schema.SummaryError(f"{p}: no such run folder")
    if not p.is_dir():
        raise schema.SummaryError(f"{p}: not a run folder (expected a folder with summary.json)")
    return p / "summary.json"


def render(summary: dict) -> tuple[dict[str, bytes], str, str, bool]:
    """Figures (stem -> PNG), the HTML page, the verdict and whether it was composed."""
    figures = plots.render_all(summary)
    text, composed = verdict(summary)
    return figures, render_html(summary, figures, text, composed), text, composed


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_report(run_dir: str | Path, summary: dict | None = None) -> Report:
    """Regenerate RUN_DIR's plots and report.html from its summary.json (validated first).

    `summary` may be passed to skip re-reading the file (it is validated all the same).
    Raises SummaryError (naming the bad field) before anything is written.
    """
    src = summary_path(run_dir)
    out_dir = src.parent
    summary = schema.load(src) if summary is None else schema.validate(summary)
    figures, page, text, composed = render(summary)
    written = {}
    for name, png in figures.items():
        written[name] = out_dir / "plots" / f"{name}.png"
        _write_atomic(written[name], png)
    html = out_dir / "report.html"
    _write_atomic(html, page.encode("utf-8"))
    return Report(html, written, summary, text, composed)
