"""The run configuration's schema: one dataclass per stage, and `load_config`.

Every user-facing setting lives here. Loading is strict (`undo.configlib`): an unknown
key, a value of the wrong type or one out of range stops at load time with a single
`ConfigError` naming the key, the bad value and what is valid. The resolved config
(every default filled in) is what gets written beside each result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .configlib import (
    ConfigError,
    check,
    config_path,
    dump_yaml,
    from_dict,
    parse_override,
    read_yaml,
    set_dotted,
    to_dict,
)

# Re-exported: the public API (`undo.load_config`, `undo.ConfigError`) and callers that
# load or dump a RunConfig reach the machinery through this module.
__all__ = ["ConfigError", "RunConfig", "dump_yaml", "load_config", "run_config", "to_dict"]

# The config's `precision` (undo.runtime.compute_precision).
Precision = Literal["fp32", "bf16-mixed"]


def _data_config_class(raw: Any, key: str) -> type:
    """The config dataclass of the benchmark `raw["benchmark"]` names (default arithmetic)."""
    from .benchmarks import config_class

    name = raw.get("benchmark", "arithmetic") if isinstance(raw, dict) else "arithmetic"
    return config_class(name, f"{key}.benchmark")


def _default_data() -> Any:
    return _data_config_class({}, "data")()


@dataclass
class ModelConfig:
    """Which network. `preset` builds one from config; `name_or_path` loads any HF causal LM
    of a family in `undo.architectures.FAMILIES` (a hub id or a local folder, or with
    `gguf_file` a GGUF file, dequantized so that it trains and saves as safetensors)."""

    preset: str = "tiny"  # tiny | micro | gemma2-0.1b | gemma2-0.3b (see models.PRESETS)
    name_or_path: str | None = None  # HF hub id or local folder; overrides `preset` when set
    # A GGUF file: a name inside `name_or_path`, or a path to the file (then
    # `name_or_path` may stay null).
    gguf_file: str | None = None
    revision: str | None = None  # hub branch, tag or commit of `name_or_path`
    trust_remote_code: bool = False  # run a hub model's own code (only when set)
    # auto: float32 on CPU, bfloat16 on a CUDA device that supports it (else float32).
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    gradient_checkpointing: bool = False  # recompute activations in backward (less memory)
    # Optional shape overrides on top of the preset (None keeps the preset's value).
    hidden_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    intermediate_size: int | None = None
    max_position_embeddings: int | None = None

    def validate(self, p: str) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "max_position_embeddings"):
            v = getattr(self, name)
            check(v is None or v > 0, f"{p}.{name}", v, "a positive integer or null")
        for name in ("revision", "trust_remote_code"):
            check(self.name_or_path is not None or getattr(self, name) in (None, False),
                   f"{p}.{name}", getattr(self, name), "only with model.name_or_path set")
        if not self.is_pretrained():  # the preset exists and the shape is consistent
            from .models import model_shape

            model_shape(self)

    def is_pretrained(self) -> bool:
        """A model is loaded (hub id, folder or GGUF file), not built from a preset."""
        return self.name_or_path is not None or self.gguf_file is not None


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
    # The gold standard runs the base model's recipe (steps, batch) on retain-only data,
    # as in the paper, where forget data was replaced by other text. Equal retain *tokens*
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
        from .objectives.unlearning import build_objective

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


# Stage kinds a user can name in `study.stages`, `study.resources` or `--force`.
STAGE_KINDS = ("pretrain", "unlearn", "distill", "oracle", "attack")


@dataclass
class Resources:
    """What one stage (or one attack run) asks a Ray cluster for."""

    cpus: float = 1.0
    gpus: float = 0.0  # fractions share a GPU between tasks (small models)


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


@dataclass
class StudyConfig:
    """Which models `undo run` makes and attacks (issue: the study)."""

    # Three α and the random init (α = 1 in spirit) fit the 2-core CPU budget.
    alphas: list[float] = field(default_factory=lambda: [0.2, 0.5, 0.8])
    # Seeds of every distilled arm (noise draw or init, attack seeds shifted by it, and
    # the distillation data order if `distill.data_order: per_seed`); the shared stages (pretraining, unlearning) run once. The
    # report gives mean ± spread and states only what holds in every seed. A `seed=N`
    # on the command line without `study.seeds` runs that one seed (`load_config`).
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # Run seeds to pool (each draws its own base model, gold standard and teacher, which
    # one run's intervals hold fixed): with two or more, `undo run` runs the study at each
    # (`seed` in the folder `name`, every other N in `name-seedN`, each an ordinary run
    # folder) and pools them (undo.study.pooled) into `<out_dir>/<name>-pooled.json`.
    # []: the one run seed `seed`.
    run_seeds: list[int] = field(default_factory=list)
    unlearn_distill: bool = True  # also distill into a random init (Unlearn-and-Distill)
    # The gold standard (a model that never saw the forget data): `pretrain` trains one
    # (retain data only; with model.name_or_path, from a random init of its architecture);
    # a path uses an existing one (a Hugging Face model folder or a finished stage
    # folder); `none` studies without one: robustness relative to a gold standard is
    # then not available (the report says so; relearning curves are still compared
    # with the unlearn-only model). `auto`: `pretrain` for a preset and for a pretrained
    # model of at most a few million parameters; for a larger pretrained model the study
    # stops before any work and asks for one of the three (pretraining it from scratch
    # costs far more than everything else; undo.study.gold.resolve_gold).
    gold: str = "auto"
    # Oracle matching (the paper's claim 2, a separate experiment): the gold standard
    # distilled into the base model and into a random init, each attacked. Off in the
    # default study since issue 24: on the tiny model the two came out within noise of
    # each other at 18% of the study's work (docs/scale.md); `study.oracles=true` adds
    # them to a finished run folder, reusing every other stage.
    oracles: bool = False
    # Oracle students distill until their outputs match the gold teacher's (distill.stop
    # = match: retain and forget accuracy within distill.stop_within), at most this many
    # steps (null: distill.steps). The retain-only rule would stop "gold into base" at
    # step 0: the base model starts with the gold's retain accuracy.
    oracle_steps: int | None = None
    stages: list[str] = field(default_factory=list)  # run only these stage kinds ([] = all)
    # Robustness is undefined (null) at a budget where the gold standard and the
    # unlearn-only model differ by no more than this (e.g. before any attack step, where
    # both sit near 0 and the ratio is measurement noise: 5 of 400 items gave "1.2").
    min_robustness_gap: float = 0.05
    # Independent stages (e.g. the two pretrainings, the distillations, the attacks) run
    # in this many processes of one thread each; 1 runs them one after another.
    workers: int = 2
    # Where stages run: `local` (this machine, `workers` processes) or `ray` (each stage
    # and each attack run a Ray task asking for `resources`; every node must see the run
    # folder, a shared filesystem). See undo.study.executors.
    executor: Literal["local", "ray"] = "local"
    # The Ray cluster to join: "auto" (the one this machine is part of), "ray://host:10001"
    # or "host:6379"; null starts a local Ray instance with `workers` CPUs.
    ray_address: str | None = None
    # Per stage kind (or `default` for the others), e.g. {distill: {cpus: 8, gpus: 1}};
    # unnamed kinds ask for 1 CPU and no GPU. Used by executor=ray only.
    resources: dict[str, Resources] = field(default_factory=dict)
    # Trials of the adaptive attack search (`search:` section) per attacked model, on
    # top of the LR grid; 0: the grid only. Every model gets the same budget, and each
    # model's best recipe is replayed against every other (undo.attacks.search).
    attack_search: int = 0
    # The attacks every model gets, by name in the attack registry (undo.attacks.registry,
    # docs/attacks.md), the first being the headline: `paper` (the paper's attack data
    # for the benchmark, attack.retain_fraction null) and `forget_only` (forget data
    # only: the stronger test of latent knowledge, reported beside it); beside them
    # `benign_retain` (finetuning on retain data only), `in_context` (forget examples in
    # the prompt), `quantize` (weight-only round-to-nearest), `quantize_finetune`. Where
    # the paper's attack is forget-only already (text), it runs once. Names are checked
    # against the registry when the study is built, before any work.
    attacks: list[str] = field(default_factory=lambda: ["paper", "forget_only"])

    def validate(self, p: str) -> None:
        check(bool(self.attacks) and len(set(self.attacks)) == len(self.attacks),
               f"{p}.attacks", self.attacks, "a non-empty list of distinct attack names "
               "(paper, forget_only, benign_retain, in_context, quantize, ...)")
        check(self.attack_search >= 0, f"{p}.attack_search", self.attack_search,
               "an integer >= 0 (trials per model; 0: no search)")
        check(all(alpha_ok(a) for a in self.alphas), f"{p}.alphas", self.alphas,
              "numbers in [0, 1]")
        # A repeated α or seed would name two models of the study alike.
        check(len(set(self.alphas)) == len(self.alphas), f"{p}.alphas", self.alphas,
               "distinct values")
        check(bool(self.seeds) and len(set(self.seeds)) == len(self.seeds), f"{p}.seeds",
               self.seeds, "a non-empty list of distinct integers")
        check(not self.run_seeds or (len(self.run_seeds) >= 2 and len(set(self.run_seeds))
              == len(self.run_seeds)), f"{p}.run_seeds", self.run_seeds,
              "[] (one run seed: `seed`) or two or more distinct integers")
        check(self.workers >= 1, f"{p}.workers", self.workers, "an integer >= 1")
        kinds = (*STAGE_KINDS, "default")
        for kind, r in self.resources.items():
            check(kind in kinds, f"{p}.resources", kind, "stage kinds: " + ", ".join(kinds))
            check(r.cpus > 0, f"{p}.resources.{kind}.cpus", r.cpus, "a number > 0")
            check(r.gpus >= 0, f"{p}.resources.{kind}.gpus", r.gpus, "a number >= 0")
        check(self.ray_address is None or self.executor == "ray", f"{p}.ray_address",
               self.ray_address, f"null unless {p}.executor is 'ray'")
        check(self.min_robustness_gap >= 0, f"{p}.min_robustness_gap",
               self.min_robustness_gap, "a number >= 0")
        check(self.oracle_steps is None or self.oracle_steps > 0, f"{p}.oracle_steps",
               self.oracle_steps, "a positive integer or null")
        check(self.gold in ("auto", "pretrain", "none") or Path(self.gold).expanduser().is_dir(),
              f"{p}.gold", self.gold,
              "'auto', 'pretrain', 'none', or an existing model or stage folder")


# Settings that say where or how fast a run goes, not what it computes (no stage key
# holds them): a run folder's config.yaml may differ from the config in these alone.
# `name`/`out_dir` locate the folder; `study.stages` selects which stages run. Read by
# the stages (what a re-run may change) and the report (what a panel title names).
RESULT_NEUTRAL_KEYS = frozenset({"name", "out_dir", "device", "threads", "progress",
                                 "report_to",
                                 "study.workers", "study.stages", "attack.workers",
                                 # where and how stages run, not what they compute
                                 "sharding", "study.executor", "study.ray_address",
                                 "study.resources"})


TRACKERS = ("tensorboard", "wandb", "mlflow")


@dataclass
class RunConfig:
    """A whole study. Stage sections are added as stages are built."""

    name: str = "arithmetic-tiny"
    seed: int = 0
    out_dir: str = "runs"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0  # torch intra-op threads on CPU; 0 keeps torch's default
    # How a multi-process launch (torchrun / accelerate launch) splits a training stage:
    # ddp, fsdp (FSDP2, fully sharded) or auto (fsdp under an accelerate FSDP config, else
    # ddp); see undo.sharding. Not part of any stage's cache key: it changes how a stage
    # is computed, not what (float reduction order aside).
    sharding: Literal["auto", "ddp", "fsdp"] = "auto"
    # How every stage computes (undo.runtime.compute_precision): fp32, or bf16-mixed
    # (float32 weights and optimizer, bfloat16 matmuls under torch.autocast: the authors'
    # `accelerate launch --mixed_precision bf16`). In every stage's and cache's key when
    # it is not fp32, so results of the two never mix (docs/scale.md).
    precision: Precision = "fp32"
    progress: bool = True
    # Experiment trackers that get every training stage's metrics.jsonl records too,
    # through accelerate's trackers (`tensorboard`, `wandb`, `mlflow`; each needs its
    # package). Files go to each stage's `trackers/` folder. Not part of any result.
    report_to: list[str] = field(default_factory=list)
    model: ModelConfig = field(default_factory=ModelConfig)
    # The benchmark's own section, selected by `data.benchmark` (undo.benchmarks).
    data: Any = field(default_factory=_default_data, metadata={"select": _data_config_class})
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    unlearn: UnlearnConfig = field(default_factory=UnlearnConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    study: StudyConfig = field(default_factory=StudyConfig)

    def validate(self, p: str = "") -> None:
        # `..` would put the run beside out_dir, not in it.
        check(bool(self.name) and "/" not in self.name and self.name not in (".", ".."),
               "name", self.name, "a non-empty folder name without '/', not '.' or '..'")
        check(self.threads >= 0, "threads", self.threads, "an integer >= 0")
        check(all(t in TRACKERS for t in self.report_to) and
              len(set(self.report_to)) == len(self.report_to), "report_to", self.report_to,
              f"a list of distinct trackers from {', '.join(TRACKERS)} ([] for none)")
        self.data.check_run(self)  # settings of other sections the benchmark constrains

    def at_alpha(self, alpha: float) -> RunConfig:
        """This config with its one α field, `noise.alpha`, set: how the study makes each
        UNDO student's config from `study.alphas` (both held to `alpha_ok`)."""
        from dataclasses import replace

        check(alpha_ok(alpha), "noise.alpha", alpha, "a number in [0, 1]")
        return replace(self, noise=replace(self.noise, alpha=alpha))


def run_config(raw: dict) -> RunConfig:
    """A validated RunConfig from a plain mapping (e.g. a run folder's config.yaml)."""
    return from_dict(raw, RunConfig)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                cls: type = RunConfig, values: dict[str, Any] | None = None) -> Any:
    """Load a YAML file or a shipped config by name (`config_path`; the defaults when
    `path` is None) and apply dotted overrides. `values`: dotted keys -> typed values,
    set before the overrides (so an override wins), e.g. defaults computed by code."""
    raw = read_yaml(config_path(path)) if path is not None else {}
    for key, value in (values or {}).items():
        set_dotted(raw, key, value)
    keys = []
    for ov in overrides or []:
        key, value = parse_override(ov)
        set_dotted(raw, key, value)
        keys.append(key)
    # `undo run seed=N` runs the study at that one seed, unless the seeds are named.
    if cls is RunConfig and "seed" in keys and "seeds" not in (raw.get("study") or {}):
        raw.setdefault("study", {})["seeds"] = [raw["seed"]]
    return from_dict(raw, cls)
