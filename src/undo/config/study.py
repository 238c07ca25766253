"""The study's section: which models `undo run` makes and attacks, and where its
stages run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..configlib import check
from .training import alpha_ok

# Stage kinds a user can name in `study.stages`, `study.resources` or `--force`.
STAGE_KINDS = ("pretrain", "unlearn", "distill", "oracle", "attack")


@dataclass
class Resources:
    """What one stage (or one attack run) asks a Ray cluster for."""

    cpus: float = 1.0
    gpus: float = 0.0  # fractions share a GPU between tasks (small models)


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
