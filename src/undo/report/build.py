"""`write_report(run_dir)`: every artifact derived from `summary.json`, from JSON alone.

Writes RUN_DIR/plots/{relearning,frontier,frontier_flops,pareto}.{png,svg,pdf},
RUN_DIR/table.csv and RUN_DIR/report.html (or the same under `out_dir`). Everything is
rendered in memory first and each file is then replaced atomically (temp file + rename), so
an invalid summary or a failure while drawing leaves the folder exactly as it was.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from . import arms, plots, schema
from .html import render_html
from .verdict import verdict


@dataclass
class Report:
    """What `write_report` wrote, and the summary it was made from."""

    html: Path
    plots: dict[str, Path]  # figure stem -> its PNG (the one the page inlines)
    summary: dict
    verdict: str
    verdict_composed: bool
    table: Path | None = None  # table.csv
    files: list[Path] = field(default_factory=list)  # every file written


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


def render(summary: dict) -> tuple[dict[str, dict[str, bytes]], str, str, bool]:
    """Figures (stem -> format -> bytes), the HTML page, the verdict and whether it was
    composed."""
    figures = plots.render_all(summary)
    text, composed = verdict(summary)
    page = render_html(summary, {k: f["png"] for k, f in figures.items()}, text, composed)
    return figures, page, text, composed


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_out_dir(out_dir: Path) -> None:
    """A report folder must be a folder (or not exist yet): checked before any work."""
    if out_dir.exists() and not out_dir.is_dir():
        raise schema.SummaryError(f"{out_dir}: exists and is not a folder (--out takes the "
                                  f"folder to write report.html, table.csv and plots/ into)")


def write_files(out_dir: Path, figures: dict[str, dict[str, bytes]], page: str,
                table: str) -> tuple[dict[str, Path], list[Path]]:
    """Every rendered artifact into `out_dir`, each atomically: (stem -> PNG, all files)."""
    files: dict[Path, bytes] = {
        out_dir / "plots" / f"{name}.{fmt}": data
        for name, by_fmt in figures.items() for fmt, data in by_fmt.items()}
    files[out_dir / "table.csv"] = table.encode("utf-8")
    files[out_dir / "report.html"] = page.encode("utf-8")  # last: the page links the rest
    for path, data in files.items():
        _write_atomic(path, data)
    return {name: out_dir / "plots" / f"{name}.png" for name in figures}, list(files)


def run_label(run_dir: Path) -> str:
    """A run's name in the table and figures: its folder's name."""
    return run_dir.resolve().name


def write_report(run_dir: str | Path, summary: dict | None = None,
                 out_dir: str | Path | None = None) -> Report:
    """Regenerate RUN_DIR's plots, table.csv and report.html from its summary.json
    (validated first), into RUN_DIR or `out_dir`.

    `summary` may be passed to skip re-reading the file (it is validated all the same).
    Raises SummaryError (naming the bad field) before anything is written.
    """
    src = summary_path(run_dir)
    out = src.parent if out_dir is None else Path(out_dir)
    check_out_dir(out)
    summary = schema.load(src) if summary is None else schema.validate(summary)
    figures, page, text, composed = render(summary)
    table = arms.to_csv([(run_label(src.parent), summary)])
    pngs, files = write_files(out, figures, page, table)
    return Report(out / "report.html", pngs, summary, text, composed, out / "table.csv", files)
