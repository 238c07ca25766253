"""Defaults scaled to a pretrained model: what `undo robustify` fills in that the user
did not set (docs/your-model.md, "How robustify sizes its defaults").

Two kinds of rule, both from the model's size alone (its config, no weights):

- **Learning rates** follow the paper's two anchors for a pretrained-size model, log-
  linearly in the parameter count between them and held constant outside: distillation
  9e-4 at 0.1B (the language setting, configs/language/gemma2-0.1b.yaml) and 2e-5 at 2.6B
  (the WMDP setting, configs/wmdp/gemma2-2b-rmu.yaml). The attack grid is centred on an
  LR that follows the same line from 1e-4 at 0.1B to 1e-5 at 2.6B (the WMDP grid's middle
  LR; the 0.1B end is ours: the paper's language grid spans 1e-3..1e-6 without saying
  which LR won). The small adaptive search around it reaches 30x either side, so an
  attack LR the rule misplaces is still found.
- **Budgets** (sequence length, batch, steps, evaluation sizes, the search's trials, and
  on a CPU a measured 0.3x on the distillation LR for its tiny steps) come from the device: `cuda` gets budgets sized like the paper's language setting (attacks
  of 500 steps, distillation up to 2000 steps of 32 x 1024 tokens, stopped by the rule);
  `cpu` gets a demonstration that ends in minutes on a ~100M model, whose numbers are far
  too small to say much about a real model (the card reports what was measured and
  whether the student recovered).

The unlearning LR is the paper's MaxEnt one (3e-5 at 0.1B); its RMU teacher at 2.6B used
5e-5, the same order, so no size rule is made up for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# (parameters, value): the paper's anchors (see the module docstring).
DISTILL_LR = ((1e8, 9e-4), (2.6e9, 2e-5))
ATTACK_LR = ((1e8, 1e-4), (2.6e9, 1e-5))
UNLEARN_LR = 3e-5
SEARCH_SPAN = 30.0
BF16_MIN_LR = 1e-4  # the search's LR range: centre / SPAN .. centre * SPAN


@dataclass(frozen=True)
class Budget:
    """What one device gets: window length, batches, step budgets, evaluation sizes."""

    alpha: float  # the one UNDO student's noise
    distill_lr_scale: float  # x the size rule's distillation LR (measured, see BUDGETS)
    seq_len: int
    unlearn_steps: int
    unlearn_batch: int
    distill_steps: int
    distill_batch: int
    distill_eval_every: int
    attack_steps: int
    attack_batch: int
    attack_budgets: tuple[int, ...]
    attack_eval_every: int
    attack_lrs: int  # LRs in the grid, spread by 3x around the centre
    search_trials: int
    search_batches: tuple[int, ...]
    eval_windows: int
    curve_windows: int
    workers: int


BUDGETS = {
    # The paper's language setting on one GPU: unlearn 100 steps, attacks of 500 steps
    # (budgets 0/40/500, eval every 5), distillation checked every 50 steps.
    "cuda": Budget(alpha=0.5, distill_lr_scale=1.0, seq_len=1024, unlearn_steps=100, unlearn_batch=8,
                   distill_steps=2000, distill_batch=32, distill_eval_every=50,
                   attack_steps=500, attack_batch=8, attack_budgets=(0, 40, 500),
                   attack_eval_every=5, attack_lrs=5, search_trials=16,
                   search_batches=(4, 8, 16, 32), eval_windows=256, curve_windows=32,
                   workers=1),
    # A demonstration on 2 CPU cores that ends in minutes for a ~100M model
    # (experiments/results/robustify_smollm2.json): every budget a few dozen steps of
    # 64-token windows, at the paper's smallest α, which a few steps can recover (α 0.2
    # started SmolLM2-135M's student at retain CE 9.1 against the teacher's 3.9, α 0.1
    # at 6.1). At 256-token steps the size rule's LR (6.4e-4 at 135M) left that student
    # at 1.052x the teacher's CE after 80 steps, 0.3x of it at 1.0497x (within the
    # rule), same teacher, side by side: smaller steps, smaller LR. One worker: the
    # stages form a chain, and one process with every core beats two with one each.
    "cpu": Budget(alpha=0.1, distill_lr_scale=0.3, seq_len=64, unlearn_steps=15,
                  unlearn_batch=2, distill_steps=100, distill_batch=4, distill_eval_every=20,
                  attack_steps=25, attack_batch=2, attack_budgets=(0, 10),
                  attack_eval_every=5, attack_lrs=2, search_trials=2, search_batches=(2, 4),
                  eval_windows=16, curve_windows=8, workers=1),
}


def log_interp(params: float, anchors: tuple[tuple[float, float], ...]) -> float:
    """The value at `params` on the log-log line through two anchors, clamped to them."""
    (n0, v0), (n1, v1) = anchors
    t = min(max((math.log(params) - math.log(n0)) / (math.log(n1) - math.log(n0)), 0.0), 1.0)
    return math.exp(math.log(v0) + t * (math.log(v1) - math.log(v0)))


def _sig(x: float) -> float:
    return float(f"{x:.2g}")


def attack_grid(centre: float, n: int) -> list[float]:
    """`n` LRs spaced 3x apart around `centre`, highest first."""
    return [_sig(centre * 3.0 ** ((n - 1) / 2 - i)) for i in range(n)]


def scaled_defaults(params: int, device: str) -> dict[str, object]:
    """Dotted config keys -> values for a pretrained model of `params` parameters on
    `device` (cuda | cpu). Everything here is a default: a key the user sets wins."""
    b = BUDGETS["cuda" if device == "cuda" else "cpu"]
    centre = log_interp(params, ATTACK_LR)
    distill_lr = _sig(log_interp(params, DISTILL_LR) * b.distill_lr_scale)
    return {
        # bfloat16 weights drop AdamW updates below ~2^-8 of a weight, and below ~1e-4
        # most updates are that small (the loop keeps no float32 master copy): float32
        # there, as the paper's WMDP run at 2e-5; `auto` (bf16 on a GPU) above.
        "model.dtype": "auto" if distill_lr >= BF16_MIN_LR else "float32",
        # Activation memory grows with the window; checkpointing is what lets a 1B+
        # model train at 1024 tokens on one GPU next to its teacher.
        "model.gradient_checkpointing": device == "cuda" and params >= 1e9,
        "study.alphas": [b.alpha],
        "data.seq_len": b.seq_len,
        "data.eval_windows": b.eval_windows,
        "unlearn.lr": UNLEARN_LR,
        "unlearn.steps": b.unlearn_steps,
        "unlearn.batch_size": b.unlearn_batch,
        "distill.lr": distill_lr,
        "distill.steps": b.distill_steps,
        "distill.batch_size": b.distill_batch,
        "distill.eval_every": b.distill_eval_every,
        "attack.lrs": attack_grid(centre, b.attack_lrs),
        "attack.steps": b.attack_steps,
        "attack.batch_size": b.attack_batch,
        "attack.budgets": list(b.attack_budgets),
        "attack.eval_every": b.attack_eval_every,
        "attack.curve_items_per_op": b.curve_windows,
        "search.lr": [_sig(centre / SEARCH_SPAN), _sig(centre * SEARCH_SPAN)],
        "search.batch_sizes": list(b.search_batches),
        "study.attack_search": b.search_trials,
        "study.workers": b.workers,
    }
