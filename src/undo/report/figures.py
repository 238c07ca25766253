"""The shared look of every figure: style, colours per model kind, PNG / SVG / PDF output.

Matplotlib through `Figure` objects only (no pyplot): nothing global changes, no display
backend is needed, and a figure is freed when it goes out of scope. Every figure is saved in
`FORMATS`: the PNG the HTML page inlines, SVG and PDF for a paper. The same summary gives
the same bytes in every format (no dates, a fixed SVG id salt), so a re-run of `undo report`
changes no file unless a number did.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

DPI = 200
STYLE = {
    "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.spines.top": False,
    "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25, "grid.linewidth": 0.5,
    "lines.linewidth": 1.4, "savefig.dpi": DPI, "figure.dpi": 100,
    # SVG ids (clip paths, glyphs) are hashes salted with this, not random: stable bytes.
    "svg.hashsalt": "undo-report",
    # TrueType fonts in the PDF, not Type 3 (which several publishers' checks reject).
    "pdf.fonttype": 42,
}
FORMATS = ("png", "svg", "pdf")
# Metadata that would differ between two runs (dates, the PNG writer) left out.
_METADATA: dict[str, dict[str, None]] = {
    "png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None},
}
# One colour and marker per kind everywhere; UNDO takes its colour from alpha (ALPHA_CMAP).
KIND_STYLE: dict[str, tuple[str, str]] = {
    "base": ("#7f7f7f", "s"),
    "gold": ("#000000", "*"),
    "unlearn_only": ("#d62728", "X"),
    "unlearn_distill": ("#ff7f0e", "D"),
    "oracle_base": ("#8c564b", "^"),
    "oracle_random": ("#e377c2", "v"),
}
ALPHA_CMAP = "viridis"
ALPHA_RANGE = (0.05, 0.85)  # the part of the colormap used: its yellow end is unreadable on white
CHANCE = {"color": "#555555", "linestyle": "--", "linewidth": 0.9}


def color_for(kind: str, alpha: float | None) -> str | tuple:
    if kind == "undo" and alpha is not None:
        from matplotlib import colormaps

        lo, hi = ALPHA_RANGE
        return colormaps[ALPHA_CMAP](lo + (hi - lo) * min(max(alpha, 0.0), 1.0))
    return KIND_STYLE.get(kind, ("#17becf", "o"))[0]


def marker_for(kind: str) -> str:
    return "o" if kind == "undo" else KIND_STYLE.get(kind, ("", "P"))[1]


def figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save(fig: Any, fmt: str) -> bytes:
    """One figure as `fmt` bytes (call inside `rc()`: the SVG salt and PDF fonts are read
    when saving)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=DPI, metadata=_METADATA[fmt])
    return buf.getvalue()


def render(draw: Callable[[], Any], formats: tuple[str, ...] = FORMATS) -> dict[str, bytes]:
    """Draw a figure in the report's style and save it in each format: format -> bytes."""
    with rc():
        fig = draw()
        return {fmt: save(fig, fmt) for fmt in formats}


def chance_h(ax: Any, chance: float | None, label: bool = True) -> None:
    if chance is not None and math.isfinite(chance):
        ax.axhline(chance, **CHANCE, zorder=1, label="chance" if label else None)


def rc() -> Any:
    import matplotlib

    return matplotlib.rc_context(STYLE)
