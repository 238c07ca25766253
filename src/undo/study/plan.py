"""What a study will do, before it does it: `undo run --dry-run`.

Nothing here loads weights or data. The model's shape comes from its config alone (a
preset, or `AutoConfig` from a local folder, GGUF header or the hub cache), instantiated
on PyTorch's meta device to count parameters; tokens and FLOPs follow from the recipes
(compute.py's 6N per trained position, 2N per teacher forward); what is cached is found
by computing each stage's folder the way the stage itself does, as far as the stages it
depends on are already on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..config import RunConfig
from .gold import Shape, model_shape, resolve_gold


@dataclass
class Row:
    name: str
    kind: str
    status: str  # cached | to run | after <stage>
    steps: int | None = None
    sequences: int | None = None  # sequences processed (upper bound: early stops)
    flops: float | None = None
    disk: int = 0  # bytes of the model the stage saves


def _positions(cfg: RunConfig) -> int | None:
    """Positions per sequence: the benchmark's window, or its typical item length."""
    return getattr(cfg.data, "seq_len", None) or getattr(cfg.data, "typical_positions", None)


TRAINED_KINDS = ("pretrain", "unlearn", "distill", "oracle")


def plan(cfg: RunConfig, known: tuple[Shape | None, str] | None = None
         ) -> tuple[list[Row], Shape | None, str]:
    """Every stage of the study in run order, with its status and estimated cost; the
    model's shape (None if unknown) and how it was found (`known`: found already)."""
    from ..artifacts import is_done
    from .graph import folder_of, study_graph

    shape, how = known or model_shape(cfg, local_only=True)
    cfg = replace(cfg, study=replace(cfg.study, gold=resolve_gold(cfg, shape)))
    positions = _positions(cfg)
    done: dict[str, Path] = {}
    rows = []
    for t in study_graph(cfg).stages:
        row = Row(t.name, t.kind, "to run")
        missing = [d for d in t.deps if d not in done]
        if missing:
            row.status = f"after {missing[0]}"
        else:
            d = folder_of(t, {dep: done[dep] for dep in t.deps})
            if d is not None and is_done(d):
                row.status = "cached"
                done[t.name] = d
        work = t.work()
        if work is not None:
            row.steps, row.sequences = work.steps, work.sequences
            if shape is not None and positions:
                row.flops = float(work.per_position * shape.matmul_params * positions
                                  * row.sequences)
        if shape is not None and t.kind in TRAINED_KINDS:
            row.disk = shape.params * shape.bytes_per_param
        rows.append(row)
    return rows, shape, how


def _si(x: float | None, unit: str = "") -> str:
    if x is None:
        return "?"
    for div, p in ((1e21, "Z"), (1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"),
                   (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{p}{unit}"
    return f"{x:.3g}{unit}"


def format_plan(cfg: RunConfig, rows: list[Row], shape: Shape | None, how: str) -> str:
    from ..stages.base import run_dir

    positions = _positions(cfg)
    size = (f"{_si(shape.params).replace('G', 'B')} parameters "
            f"({_si(shape.matmul_params).replace('G', 'B')} in matmuls), "
            f"{shape.bytes_per_param} bytes each, from the {how}") if shape else f"shape {how}"
    out = [f"plan of study {cfg.name} -> {run_dir(cfg)} (nothing run, no weights loaded)",
           f"model: {size}",
           f"positions per sequence: {positions if positions else 'unknown'}"
           + ("" if getattr(cfg.data, "seq_len", None) else " (typical item length)"),
           f"gold standard: {resolve_gold(cfg, shape)}",
           f"  {'stage':<28}{'status':<26}{'steps':>7}{'sequences':>11}{'tokens':>9}"
           f"{'FLOPs':>9}{'disk':>9}"]
    for r in rows:
        tokens = r.sequences * positions if r.sequences is not None and positions else None
        out.append(f"  {r.name[:27]:<28}{r.status[:25]:<26}"
                   f"{'-' if r.steps is None else r.steps:>7}"
                   f"{'-' if r.sequences is None else _si(r.sequences):>11}"
                   f"{_si(tokens) if tokens else '-':>9}{_si(r.flops) if r.flops else '-':>9}"
                   f"{_si(r.disk, 'B') if r.disk else '-':>9}")
    todo = [r for r in rows if r.status != "cached"]
    flops = sum(r.flops or 0 for r in todo)
    # Without the model's shape nothing can be costed: say so rather than "~0 FLOPs".
    cost = (f"~{_si(flops)} FLOPs (training passes at their full budgets; early stops spend "
            f"less), ~{_si(sum(r.disk for r in todo), 'B')} of models on disk (plus "
            f"optimizer checkpoints while a stage runs)") if shape is not None else (
        "FLOPs and disk unknown (the model's shape is unknown: see 'model:' above)")
    out.append(f"to run: {len(todo)} of {len(rows)} stages, {cost}")
    return "\n".join(out)
