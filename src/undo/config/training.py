"""The training stages' sections: the optimizer every stage shares, pretraining,
unlearning (and the sweep that picks its teacher), the noise, and distillation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..configlib import check


@dataclass
class OptimConfig:
    """Settings of the one training loop, shared by every stage."""

    steps: int = 1000
    batch_size: int = 128
    grad_accum: int = 1  # micro-batches per optimizer step (batch_size is per micro-batch)
    lr: float = 2e-3
    schedule: Literal["cosine", "constant", "linear"] = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # cosine/linear decay floor as a fraction of lr
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    grad_clip: float | None = 1.0
    log_every: int = 25
    eval_every: int = 0  # 0: no periodic evaluation
    checkpoint_every: int = 0  # 0: no mid-run checkpoints (no resume)

    def validate(self, p: str) -> None:
        check(self.steps > 0, f"{p}.steps", self.steps, "a positive integer")
        check(self.batch_size > 0, f"{p}.batch_size", self.batch_size, "a positive integer")
        check(self.grad_accum > 0, f"{p}.grad_accum", self.grad_accum, "a positive integer")
        check(self.lr > 0, f"{p}.lr", self.lr, "a positive number")
        check(self.warmup_steps >= 0, f"{p}.warmup_steps", self.warmup_steps, "an integer >= 0")
        check(0 <= self.min_lr_ratio <= 1, f"{p}.min_lr_ratio", self.min_lr_ratio, "[0, 1]")
        check(self.weight_decay >= 0, f"{p}.weight_decay", self.weight_decay, "a number >= 0")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"{p}.betas",
               self.betas, "two numbers in [0, 1)")
        check(self.grad_clip is None or self.grad_clip > 0, f"{p}.grad_clip", self.grad_clip,
               "a positive number or null")
        for k in ("log_every", "eval_every", "checkpoint_every"):
            check(getattr(self, k) >= 0, f"{p}.{k}", getattr(self, k), "an integer >= 0")


@dataclass
class PretrainConfig(OptimConfig):
    """Base (retain + forget) and gold-standard (retain only) pretraining."""

    steps: int = 2500
    lr: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.1
    eval_every: int = 500
    checkpoint_every: int = 500
    # The gold standard runs the base model's recipe (steps, batch) on retain-only data:
    # a deviation (docs/fidelity.md), the authors' gold keeps the base model's English and
    # retain shares (data.english: configs/arithmetic/paper.yaml). Equal retain *tokens*
    # fails on the tiny model, which learns in steps: 833 steps of 128 items left it at
    # 8% retain accuracy, 1500 steps of 43 items at 12.5% (docs/ARCHITECTURE.md).
    # Set either to override (null: the base model's value).
    gold_steps: int | None = None
    gold_batch_size: int | None = None

    def validate(self, p: str) -> None:
        super().validate(p)
        check(self.gold_steps is None or self.gold_steps > 0, f"{p}.gold_steps",
               self.gold_steps, "a positive integer or null")
        check(self.gold_batch_size is None or self.gold_batch_size > 0,
               f"{p}.gold_batch_size", self.gold_batch_size, "a positive integer or null")


@dataclass
class UnlearnConfig(OptimConfig):
    """Unlearning the base model into the teacher (docs/unlearning.md).

    Paper defaults: constant LR, no weight decay, grad clip 1.0. The defaults are the
    default study's MaxEnt teacher, chosen by `undo sweep` on the tiny benchmark (forget
    accuracy 0.985 -> 0.000, retain 0.993 -> 0.980, in 100 steps of 64 forget + 64 retain
    items; docs/unlearning.md).
    """

    method: str = "maxent"  # an unlearning method in undo.objectives.METHODS
    steps: int = 100
    batch_size: int = 64  # forget items per micro-batch (and as many retain items)
    lr: float = 3e-4
    schedule: Literal["cosine", "constant", "linear"] = "constant"
    weight_decay: float = 0.0
    eval_every: int = 20  # retain/forget curve in summary.json (0: before/after only)
    retain_weight: float = 4.0  # λ on the retain term (α for RMU)
    # Method-specific options, validated by the method's own config dataclass.
    method_args: dict[str, Any] = field(default_factory=dict)

    def validate(self, p: str) -> None:
        super().validate(p)
        check(self.retain_weight >= 0, f"{p}.retain_weight", self.retain_weight,
               "a number >= 0")
        # The method and its method_args, checked now rather than when the unlearning
        # stage starts (possibly after pretraining): building an objective only parses
        # its options (no model). Imported here: the objectives import this module.
        from ..objectives.unlearning import build_objective

        build_objective(self)


@dataclass
class SweepConfig:
    """Choosing the teacher (`undo sweep`): a grid over `unlearn` keys and a rule.

    `grid` maps unlearn keys to lists of values; a nested mapping reaches into
    method_args ({method_args: {beta: [0.1, 0.5]}}). Rule: lowest after[forget_metric]
    among points with after[retain_metric] >= min_retain_ratio x the base model's.
    """

    grid: dict[str, Any] = field(default_factory=lambda: {
        "lr": [5e-5, 1e-4, 2e-4], "retain_weight": [1.0, 2.0]})
    min_retain_ratio: float = 0.95
    retain_metric: str = "retain/acc"  # higher is better
    forget_metric: str = "forget/acc"  # lower is better

    def validate(self, p: str) -> None:
        check(0 <= self.min_retain_ratio <= 1, f"{p}.min_retain_ratio",
               self.min_retain_ratio, "a number in [0, 1]")
        for k in ("retain_metric", "forget_metric"):
            v = getattr(self, k)
            check(v.split("/")[0] in ("retain", "forget", "retain_heldout", "forget_heldout"),
                   f"{p}.{k}", v, "an evaluation metric such as retain/acc or forget/acc")


def alpha_ok(alpha: float) -> bool:
    """THE rule for α, wherever it is set (`noise.alpha`, each of `study.alphas`)."""
    return isinstance(alpha, (int, float)) and 0 <= alpha <= 1


@dataclass
class NoiseConfig:
    """Shrink-and-perturb θ ← (1−α)·θ + α·β·(I ⊙ N) before distilling (see undo.stages.noise).

    N is Xavier-uniform for 2-D weights and 0 for 1-D ones (norm gains: see `norms`); I is
    all ones unless `mask` builds it from |θ_unlearned − θ_base| (localized noise).
    """

    alpha: float = 0.6  # shrink / noise share; the paper sweeps 0.1..0.8
    beta: float = 0.1  # noise scale relative to a fresh Xavier init
    # Parameter types to noise: attention, mlp, embeddings (incl. the output head),
    # norms, other (anything else). Parameters not listed are left untouched.
    targets: list[Literal["attention", "mlp", "embeddings", "norms", "other"]] = field(
        default_factory=lambda: ["attention", "mlp", "embeddings", "norms", "other"]
    )
    # Only these transformer blocks (0-based); null = all. With a list, parameters
    # outside every block (embeddings, final norm) are left untouched.
    layers: list[int] | None = None
    # Localized noise (needs the base model): top_fraction = 1 on the `mask_fraction`
    # largest |Δθ| of each tensor; magnitude = |Δθ| / max |Δθ| per tensor.
    mask: Literal["none", "top_fraction", "magnitude"] = "none"
    mask_fraction: float = 0.1
    # Norm gains g. toward_init: (1 − α)·g + α·g_init, mixed toward the family's fresh
    # gain: the paper's experiment (on its Gemma-2, whose norms compute x·(1 + g), the
    # authors' "shrink every 1-D weight" does exactly this). shrink: (1 − α)·g, a literal
    # port of that line, which outside Gemma-2 scales block outputs down instead.
    # keep: untouched (noises less than the paper). docs/distillation.md.
    norms: Literal["toward_init", "shrink", "keep"] = "toward_init"

    def validate(self, p: str) -> None:
        check(alpha_ok(self.alpha), f"{p}.alpha", self.alpha, "a number in [0, 1]")
        check(0 <= self.beta <= 1, f"{p}.beta", self.beta, "a number in [0, 1]")
        check(bool(self.targets), f"{p}.targets", self.targets, "a non-empty list")
        check(self.layers is None or all(i >= 0 for i in self.layers), f"{p}.layers",
               self.layers, "null or a list of block indices >= 0")
        check(0 < self.mask_fraction <= 1, f"{p}.mask_fraction", self.mask_fraction,
               "a number in (0, 1]")


@dataclass
class DistillConfig(OptimConfig):
    """Distillation on outputs: forward KL(teacher ‖ student) on the unlabeled
    pretraining mix, every non-pad next-token position (see undo.stages.distill).

    `steps` is the maximum budget; the LR schedule spans it even when a run stops early.
    """

    # Enough for a random init (Unlearn-and-Distill) on the tiny study to recover the
    # teacher's retain accuracy (measured: 1740 steps on the earlier 4-layer model, 1020
    # on the 2-layer one); students with α <= 0.6 stop far earlier, α = 0.8 can use it all.
    steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-3
    schedule: Literal["cosine", "constant", "linear"] = "cosine"
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1  # the paper decays 7e-4 -> 7e-5
    weight_decay: float = 0.0
    eval_every: int = 20  # the early-stop check interval (paper: 20 arithmetic, 50 text)
    checkpoint_every: int = 200
    temperature: float = 1.0  # softens both distributions; the loss is scaled by T²
    # Early stop, checked every `eval_every` steps from step 1 on (never at step 0), on
    # the benchmark's validation sets (disjoint from the sets the report quotes and the
    # attacks score), as the authors' code: `retain_acc` when the mean of the per-
    # (operation, format) retain accuracies is within `stop_within` (absolute) of the
    # teacher's; `retain_ce` when retain CE <= (1 + stop_within) x the teacher's;
    # `match` when the retain *and* forget metrics are both within `stop_within`
    # (absolute) of the teacher's (oracle matching); `budget` runs all `steps`; `auto` is
    # the benchmark's rule (arithmetic, wmdp: retain_acc; text: retain_ce).
    stop: Literal["auto", "retain_acc", "retain_ce", "match", "budget"] = "auto"
    stop_within: float = 0.05
    # Teacher outputs: `online` runs the teacher every step; `full` caches its full
    # log-probs on disk once (exact; for small vocabularies); `topk` caches the top-k
    # log-probs + the remaining mass (approximate, for large vocabularies); `auto` is
    # `full` when the vocabulary has <= 4096 tokens, else `online`.
    teacher_cache: Literal["auto", "online", "full", "topk"] = "auto"
    cache_topk: int = 64
    chunk_positions: int = 4096  # positions per chunk of the KL (bounds float32 memory)
    # Where the KL gets its logits: `full` from each model's HF forward (B, T, V); `chunked`
    # from the last hidden states, the output head applied per chunk of positions, so no
    # (B, T, V) logits exist (for large vocabularies; same loss, see docs/undo-core.md).
    logits: Literal["full", "chunked"] = "full"
    # The data order of a study's seeds: `per_seed` (each seed its own order and its own
    # teacher cache, as the authors' seeds: the paper's experiment, so the default) or
    # `shared` (ours: every seed distills on the run seed's batches, so one teacher cache
    # serves them all and disk stops growing with seeds; seeds then differ in noise draw
    # / init and attack seeds only). docs/distillation.md has the trade-off.
    data_order: Literal["shared", "per_seed"] = "per_seed"
    # What the student sees: `mix`, the base model's pretraining mix, forget data included
    # (the paper's: the authors distil on their whole pretraining mix), or `filtered`,
    # the gold standard's forget-free pretraining data (the benchmark's `gold` role; ours,
    # measured side by side in docs/distillation.md).
    inputs: Literal["mix", "filtered"] = "mix"

    def validate(self, p: str) -> None:
        super().validate(p)
        check(self.data_order in ("shared", "per_seed"), f"{p}.data_order", self.data_order,
              "'shared' or 'per_seed'")
        check(self.temperature > 0, f"{p}.temperature", self.temperature, "a positive number")
        check(self.stop_within >= 0, f"{p}.stop_within", self.stop_within, "a number >= 0")
        check(self.stop == "budget" or self.eval_every > 0, f"{p}.eval_every",
               self.eval_every, f"a positive integer when {p}.stop={self.stop!r}")
        check(self.cache_topk > 0, f"{p}.cache_topk", self.cache_topk, "a positive integer")
        check(self.chunk_positions > 0, f"{p}.chunk_positions", self.chunk_positions,
               "a positive integer")
        check(self.logits in ("full", "chunked"), f"{p}.logits", self.logits,
               "'full' or 'chunked'")
