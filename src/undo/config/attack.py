"""The relearning attack's section (`attack`) and the adaptive attacker's (`search`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..configlib import check
from .model import Precision


@dataclass
class AttackConfig:
    """Relearning attacks: plain CE finetuning on forget-domain attack data (docs/attacks.md).

    One run per (lr, seed) of the grid, constant LR, AdamW (the training loop's optimizer).
    The paper's grid is lrs {1e-3, 7e-4, 4e-4, 1e-4, 7e-5, 5e-5, 1e-5, 7e-6, 4e-6, 1e-6},
    500 steps, eval every 5, budgets 0/40/500 (configs/arithmetic/paper_attack.yaml); the
    CPU default is a smaller grid that was measured to contain the strongest LR.
    """

    steps: int = 100
    # Measured on the tiny benchmark (docs/attacks.md): over 4e-3..1e-6 the strongest LR
    # at budgets 40/100 was 2e-4/1e-4 for a MaxEnt model of the 4-layer tiny model and
    # 4e-4/7e-4 for its gold standard; on the 2-layer one 1e-3/4e-4 and 1e-3/1e-3. This
    # grid holds all of them.
    lrs: list[float] = field(default_factory=lambda: [1e-3, 7e-4, 4e-4, 2e-4, 1e-4])
    seeds: list[int] = field(default_factory=lambda: [0])
    batch_size: int = 32
    eval_every: int = 5  # curve points every k steps (forget curve subset)
    # Step budgets at which the worst case is reported (full eval sets there). `steps`
    # (the largest budget) is always one of them.
    budgets: list[int] = field(default_factory=lambda: [0, 40])
    # Operations whose *attack* split is trained on; null means data.forget_ops.
    ops: list[str] | None = None
    # Share of each batch drawn from the retain data's attack split. null: the paper's
    # attack for the benchmark (`paper_retain_fraction`): arithmetic the base model's
    # pretraining proportions (run_relearn_arithmetic.py's selected `..._all_data` setup
    # trains on the whole pretraining mix), text/language 0 (Korean only), WMDP 0.5
    # (run_relearn_wmdp.py). 0 is the forget-only attack (`study.attacks: forget_only`).
    retain_fraction: float | None = None
    word_fraction: float | None = None  # share of word-problem batches; null: data's
    # The attack refuses to run on data without forget-domain items unless this is set
    # (a relearning attack with no forget data measures nothing about the forget domain).
    allow_no_forget: bool = False
    lora_rank: int = 0  # 0: full finetuning; > 0: a LoRA attack through peft
    lora_alpha: float = 16.0
    lora_targets: list[str] = field(default_factory=lambda: ["all-linear"])
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float | None = 1.0
    # Items per operation and format in the curve subset of the forget eval set (a fixed
    # subset of it, never trained on); budgets use the full sets. 0: full set everywhere.
    curve_items_per_op: int = 25
    workers: int = 0  # parallel processes over the grid (CPU); 0: auto, 1: in-process
    save_weights: bool = False  # keep each run's attacked model (off: only curves)
    # How every relearning attack computes (grid, search, replays; their evaluations
    # too; undo.runtime.compute_precision), apart from the run's `precision`. bf16-mixed:
    # the authors relearned in bfloat16 (fidelity table); with float32 weights ours keeps
    # the small updates that their pure-bfloat16 weights round away. Measured beside fp32
    # attacks on the same models: every worst case within 0.02, 1.8x faster here
    # (experiments/results/attack_precision_side_by_side.json). Use fp32 on a CPU without
    # bfloat16 instructions (avx512_bf16 / AMX), where bfloat16 is slower.
    precision: Precision = "bf16-mixed"
    # Which attack runs under this config: `finetune` (the LR grid above,
    # undo.attacks.grid) or a registered attack's name (undo.attacks.registry: quantize,
    # in_context, ...). Set by the study per name of `study.attacks` and by `undo attack
    # --attack NAME`; not in a finetuning attack's cache key, so its folders stay put.
    family: str = "finetune"
    # Settings of the non-finetuning attacks, per registered name, e.g.
    # {quantize: {schemes: [int8, int4]}, in_context: {shots: [0, 1, 4, 16]}}: each is
    # checked against that attack's own typed `Config` before any work (unknown keys and
    # bad values are a ConfigError naming `attack.options.NAME.KEY`). docs/attacks.md.
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def all_budgets(self) -> list[int]:
        return sorted(set(self.budgets) | {self.steps})

    def validate(self, p: str) -> None:
        check(self.steps > 0, f"{p}.steps", self.steps, "a positive integer")
        check(bool(self.lrs) and all(x > 0 for x in self.lrs), f"{p}.lrs", self.lrs,
               "a non-empty list of positive numbers")
        check(bool(self.seeds) and len(set(self.seeds)) == len(self.seeds), f"{p}.seeds",
               self.seeds, "a non-empty list of distinct integers")
        check(len(set(self.lrs)) == len(self.lrs), f"{p}.lrs", self.lrs, "distinct values")
        check(self.batch_size > 0, f"{p}.batch_size", self.batch_size, "a positive integer")
        check(self.eval_every > 0, f"{p}.eval_every", self.eval_every, "a positive integer")
        check(all(0 <= b <= self.steps for b in self.budgets), f"{p}.budgets", self.budgets,
               f"step counts in [0, steps={self.steps}]")
        check(self.retain_fraction is None or 0 <= self.retain_fraction <= 1,
               f"{p}.retain_fraction", self.retain_fraction,
               "null (the benchmark's paper attack) or a number in [0, 1]")
        check(self.word_fraction is None or 0 <= self.word_fraction <= 1,
               f"{p}.word_fraction", self.word_fraction, "null or a number in [0, 1]")
        check(self.lora_rank >= 0, f"{p}.lora_rank", self.lora_rank, "an integer >= 0")
        check(self.lora_alpha > 0, f"{p}.lora_alpha", self.lora_alpha, "a positive number")
        check(bool(self.lora_targets), f"{p}.lora_targets", self.lora_targets,
               "module names, or ['all-linear']")
        check(self.weight_decay >= 0, f"{p}.weight_decay", self.weight_decay, "a number >= 0")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"{p}.betas",
               self.betas, "two numbers in [0, 1)")
        check(self.grad_clip is None or self.grad_clip > 0, f"{p}.grad_clip", self.grad_clip,
               "a positive number or null")
        check(self.curve_items_per_op >= 0, f"{p}.curve_items_per_op",
               self.curve_items_per_op, "an integer >= 0 (0: the full set)")
        check(self.workers >= 0, f"{p}.workers", self.workers, "an integer >= 0 (0: auto)")
        check(bool(self.family), f"{p}.family", self.family,
              "'finetune' or a registered attack's name (docs/attacks.md)")




@dataclass
class SearchConfig:
    """The adaptive attacker (`undo attack --search N`, `study.attack_search`): a seeded
    Optuna TPE search per model over the attack recipe, `attack.steps` steps per trial
    (undo.attacks.search; docs/attacks.md). A list is a categorical choice, `lr` and
    `retain_fraction` are [low, high] ranges (lr log-uniform); one value fixes a knob.
    """

    lr: list[float] = field(default_factory=lambda: [1e-6, 1e-2])
    optimizers: list[Literal["adamw", "adam", "sgd"]] = field(
        default_factory=lambda: ["adamw", "adam", "sgd"])
    # constant; cosine decay to 10% of lr; warmup: linear over the first 10% of the
    # steps, then constant.
    schedules: list[Literal["constant", "cosine", "warmup"]] = field(
        default_factory=lambda: ["constant", "cosine", "warmup"])
    batch_sizes: list[int] = field(default_factory=lambda: [8, 16, 32, 64])
    weight_decays: list[float] = field(default_factory=lambda: [0.0, 0.1])
    lora_ranks: list[int] = field(default_factory=lambda: [0, 8, 32])  # 0: full finetuning
    lora_alphas: list[float] = field(default_factory=lambda: [8.0, 32.0])
    # Which linear layers LoRA adapts: all-linear, or the attention / MLP projections
    # of every block (named through undo.architectures).
    lora_targets: list[Literal["all-linear", "attention", "mlp"]] = field(
        default_factory=lambda: ["all-linear", "attention", "mlp"])
    retain_fraction: list[float] = field(default_factory=lambda: [0.0, 0.5])
    benchmark_knobs: bool = True  # also search the benchmark's attack_knobs()
    # A trial counts only if its retain metric at the budget keeps this share of the
    # attacked model's own pre-attack value: retain >= floor * before for a
    # higher-is-better metric (accuracy), retain <= before / floor for a lower-is-better
    # one (CE). 0 disables the floor.
    utility_floor: float = 0.9
    seed: int = 0  # TPE sampler seed
    startup_trials: int = 8  # random trials before TPE models the space

    def validate(self, p: str) -> None:
        for k in ("lr", "retain_fraction"):
            v = getattr(self, k)
            check(len(v) in (1, 2) and v == sorted(v), f"{p}.{k}", v,
                   "[low, high] with low <= high, or [value]")
        check(self.lr[0] > 0, f"{p}.lr", self.lr, "positive learning rates")
        check(self.retain_fraction[0] >= 0 and self.retain_fraction[-1] <= 0.9,
               f"{p}.retain_fraction", self.retain_fraction,
               "shares in [0, 0.9] (the attack must train on forget data)")
        for k in ("optimizers", "schedules", "batch_sizes", "weight_decays", "lora_ranks",
                  "lora_alphas", "lora_targets"):
            v = getattr(self, k)
            check(bool(v) and len(set(v)) == len(v), f"{p}.{k}", v,
                   "a non-empty list of distinct choices (an empty one leaves nothing to "
                   "search)")
        check(all(b > 0 for b in self.batch_sizes), f"{p}.batch_sizes", self.batch_sizes,
               "positive integers")
        check(all(w >= 0 for w in self.weight_decays), f"{p}.weight_decays",
               self.weight_decays, "numbers >= 0")
        check(all(r >= 0 for r in self.lora_ranks), f"{p}.lora_ranks", self.lora_ranks,
               "integers >= 0 (0: full finetuning)")
        check(all(a > 0 for a in self.lora_alphas), f"{p}.lora_alphas", self.lora_alphas,
               "positive numbers")
        check(0 <= self.utility_floor <= 1, f"{p}.utility_floor", self.utility_floor,
               "a number in [0, 1] (the share of the retain metric a trial must keep; "
               "0: no floor)")
        check(self.startup_trials >= 0, f"{p}.startup_trials", self.startup_trials,
               "an integer >= 0")
