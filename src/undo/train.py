"""THE training loop, shared by every stage.

Pretraining, unlearning, distillation, oracle matching and relearning attacks differ only
in their objective and their data, so they all run through `train()`:

    objective.loss(model, batch) -> (loss, metrics)     # the only per-method code

An objective may also define
    prepare(model)                  freeze parameters it must not train (e.g. RMU);
    extra_forward_params: int       matmul parameters of a frozen model it runs forward on
                                    every position (an online teacher), for FLOP counts;
    frozen_flops: float             or, cumulative FLOPs of the frozen forwards it ran
                                    (a reference model that sees only part of a batch);
    gradients(model, micro_batches, backward) -> metrics
                                    its own gradient computation (e.g. SAM's two passes).

Data is a function `batches(step, micro) -> batch` that is deterministic in its
arguments, so resuming at step k replays exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from . import ranks
from . import sharding as sh
from .artifacts import stage_lock
from .checkpoint import (
    COUNTERS_FILE,
    Counters,
    MetricsLog,
    flat_numbers,
    recover_swap,
    remove_state,
    resumable,
    save_state,
)
from .compute import matmul_params, train_flops
from .config import OptimConfig
from .configlib import ConfigError
from .runtime import device_name, process_state

Batch = dict[str, Any]
Metrics = dict[str, float]


class DivergedError(ConfigError):
    """The loss or gradient norm became NaN or inf (e.g. a far too large LR)."""


class Objective(Protocol):
    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, Metrics]: ...


@dataclass
class TrainResult:
    steps: int
    tokens: int
    flops: float
    wall_time: float
    stopped_early: bool
    last_metrics: Metrics = field(default_factory=dict)
    evals: list[dict[str, Any]] = field(default_factory=list)

    def cost(self) -> dict[str, Any]:
        """What a stage summary records of the run's cost."""
        return {"steps": self.steps, "tokens": self.tokens, "flops": self.flops,
                "train_time_s": self.wall_time}


def lr_lambda(cfg: OptimConfig) -> Callable[[int], float]:
    """Linear warmup, then constant, cosine or linear decay to `min_lr_ratio` at `steps`."""

    def f(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        span = max(1, cfg.steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        if cfg.schedule == "cosine":
            shape = 0.5 * (1 + math.cos(math.pi * progress))
        else:
            shape = 1 - progress
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape

    return f


OPTIMIZERS = ("adamw", "adam", "sgd")
SGD_MOMENTUM = 0.9


def make_optimizer(name: str, groups: list[dict[str, Any]],
                   cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay), Adam (weight decay as an L2 term in the gradient,
    so the two differ only when weight_decay > 0) or SGD with momentum 0.9.

    A keyword of `train` rather than an OptimConfig field: a new field would change the
    hash of every cached stage folder, whose recipes all use AdamW.
    """
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    if name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=SGD_MOMENTUM)
    raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")


def make_accelerator(device: str = "auto", report_to: list[str] | None = None,
                     stage_dir: str | Path | None = None) -> Accelerator:
    """The stage's accelerator; with `report_to`, its trackers write under
    `stage_dir/trackers` (train() starts them and mirrors metrics.jsonl into them)."""
    process_state(device)  # the one way a process's launch state is made (see there)
    cpu = device_name(device) == "cpu"
    if not report_to or stage_dir is None:
        return Accelerator(cpu=cpu)
    check_trackers(report_to)
    from accelerate.utils import ProjectConfiguration

    project = ProjectConfiguration(project_dir=str(stage_dir),
                                   logging_dir=str(Path(stage_dir) / "trackers"))
    return Accelerator(cpu=cpu, log_with=list(report_to), project_config=project)


def check_trackers(report_to: list[str]) -> None:
    """Each tracker's package is installed (else one ConfigError saying which to install)."""
    from accelerate import utils

    missing = [t for t in report_to if not getattr(utils, f"is_{t}_available")()]
    if missing:
        raise ConfigError(f"config key 'report_to': {missing} not installed; valid: "
                          f"`pip install {' '.join(missing)}`, or leave them out of report_to")


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _default_gradients(objective: Objective, model: torch.nn.Module, micro_batches: list[Batch],
                       backward: Callable[[torch.Tensor], None]) -> Metrics:
    """Average the loss over micro-batches: sum of loss/n backwards == one big batch."""
    n = len(micro_batches)
    totals: Metrics = {}
    for mb in micro_batches:
        loss, metrics = objective.loss(model, mb)
        backward(loss / n)
        for k, v in {"loss": float(loss.detach()), **metrics}.items():
            totals[k] = totals.get(k, 0.0) + v / n
    return totals


def train(
    model: torch.nn.Module,
    objective: Objective,
    batches: Callable[[int, int], Batch],
    cfg: OptimConfig,
    out_dir: str | Path | None = None,
    *,
    evaluate: Callable[[torch.nn.Module], Metrics] | None = None,
    should_stop: Callable[[Metrics], bool] | None = None,
    eval_at_start: bool = False,
    accelerator: Accelerator | None = None,
    desc: str = "train",
    progress: bool = True,
    on_step: Callable[[int, torch.nn.Module], None] | None = None,
    sharding: sh.Sharding = "auto",
    optimizer_name: str = "adamw",
) -> TrainResult:
    """Train `model` in place for `cfg.steps` optimizer steps (or until `should_stop`).

    With `out_dir`, writes `metrics.jsonl` there and, every `cfg.checkpoint_every` steps,
    a resumable checkpoint in `out_dir/state`; a later call with the same arguments
    resumes from it. The checkpoint is removed when the run finishes. `out_dir` is held
    with `stage_lock` (already held by the stage function: a no-op), so a checkpoint a
    live process is writing is never resumed: that raises `StageBusyError`.

    A non-finite loss or gradient norm raises `DivergedError` before the optimizer
    applies that step; the last checkpoint stays and nothing of the step is logged.

    Under a multi-process launch the model trains data-parallel (`sharding` ddp) or fully
    sharded (fsdp, see `undo.sharding`); either way `model` holds the trained weights on
    every rank afterwards, and logged metrics are means over the ranks.
    `optimizer_name` is one of OPTIMIZERS (the attack search varies it; every stage
    trains with AdamW).
    """
    out = Path(out_dir) if out_dir is not None else None
    with stage_lock(out, wait=False) if out is not None else nullcontext():
        return _train(model, objective, batches, cfg, out, evaluate=evaluate,
                      should_stop=should_stop, eval_at_start=eval_at_start,
                      accelerator=accelerator, desc=desc, progress=progress, on_step=on_step,
                      sharding=sharding, optimizer_name=optimizer_name)


def _train(
    model: torch.nn.Module,
    objective: Objective,
    batches: Callable[[int, int], Batch],
    cfg: OptimConfig,
    out: Path | None,
    *,
    evaluate: Callable[[torch.nn.Module], Metrics] | None,
    should_stop: Callable[[Metrics], bool] | None,
    eval_at_start: bool,
    accelerator: Accelerator | None,
    desc: str,
    progress: bool,
    on_step: Callable[[int, torch.nn.Module], None] | None,
    sharding: sh.Sharding,
    optimizer_name: str,
) -> TrainResult:
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    acc = accelerator or make_accelerator()
    mode = sh.resolve(sharding, acc)
    gradients = getattr(objective, "gradients", None)
    if mode == "fsdp" and gradients is not None:
        raise ConfigError(f"sharding: got 'fsdp' for an objective with its own gradient pass "
                          f"({type(objective).__name__}); valid: ddp")
    if hasattr(objective, "prepare"):
        objective.prepare(model)
    n_matmul = matmul_params(model)
    plain = model
    if mode == "fsdp":
        model = sh.sharded_copy(plain, acc)
    params = [p for p in model.parameters() if p.requires_grad]
    # No weight decay on 1-D weights (norm scales, biases), as is standard.
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    optimizer = make_optimizer(optimizer_name, groups, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    # The schedule is neither `prepare`d (accelerate would step it once per process at
    # every step: an N-process run warmed up and decayed N times too fast; measured) nor
    # checkpointed: its position is the step, restored below from the counters.
    shards = None
    if mode == "fsdp":
        # FSDP2 reduces gradients itself; the shards are checkpointed by `sh.ShardedState`.
        shards = sh.ShardedState(model, optimizer)
    else:
        model, optimizer = acc.prepare(model, optimizer)
    # Counters go into the checkpoint as JSON, not through accelerate's
    # register_for_checkpointing: that pickles them and loads them back with
    # torch.load(weights_only=False), which runs any code a planted state folder holds.
    counters = Counters()

    state_dir = out / "state" if out is not None else None
    if state_dir is not None:
        if acc.is_main_process:
            recover_swap(state_dir)
        acc.wait_for_everyone()
    last_checkpoint: int | None = None  # the step of the checkpoint in state_dir
    if state_dir is not None and resumable(state_dir):  # checked against its manifest
        acc.load_state(str(state_dir))  # tensors: safetensors, torch.load(weights_only=True)
        if shards is not None:
            shards.load(state_dir)
        counters.load_state_dict(json.loads((state_dir / COUNTERS_FILE).read_text()))
        last_checkpoint = counters.step
        # The schedule at the step (the optimizer's groups hold its `initial_lr` already).
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg),
                                                      last_epoch=counters.step - 1)
    # Trackers (report_to) start only for a stage that logs metrics.jsonl: they mirror it.
    tracking = out is not None and bool(acc.log_with)
    if tracking:
        acc.init_trackers(out.name, config=flat_numbers(asdict(cfg), text=True))
    log = MetricsLog(out / "metrics.jsonl" if out is not None and acc.is_main_process else None,
                    counters.step, acc if tracking else None)

    extra = int(getattr(objective, "extra_forward_params", 0))
    # A resumed run's result holds the evaluations from before the checkpoint too.
    result = TrainResult(0, 0, 0.0, 0.0, False,
                         evals=[r for r in log.kept if "eval" in r])

    def run_eval() -> Metrics:
        m = evaluate(acc.unwrap_model(model)) if evaluate is not None else {}
        rec = {"step": counters.step, "tokens": counters.tokens, "flops": counters.flops,
               "eval": m}
        result.evals.append(rec)
        log.write(rec)
        return m

    # The step-0 evaluation is a curve point only: a stop rule is never satisfied before
    # a step was trained (the authors check from step 1), else a student that starts
    # within the rule (gold into base) would count as distilled without distilling.
    if eval_at_start and counters.step == 0 and evaluate is not None:
        run_eval()

    bar = tqdm(total=cfg.steps, initial=counters.step, desc=desc, disable=not progress,
               dynamic_ncols=True, leave=False)
    model.train()
    window_start, window_tokens = time.perf_counter(), 0
    while counters.step < cfg.steps and not result.stopped_early:
        t0 = time.perf_counter()
        step = counters.step
        micro = [_to_device(batches(step, i), acc.device) for i in range(cfg.grad_accum)]
        frozen_before = float(getattr(objective, "frozen_flops", 0.0))
        if gradients is not None:
            # Objectives with their own gradient computation (SAM) work on the plain
            # module; under DDP that skips its all-reduce, so average gradients here.
            with acc.no_sync(model):
                metrics = gradients(acc.unwrap_model(model), micro, acc.backward)
            ranks.average_gradients(acc, params)
        else:
            metrics = _default_gradients(objective, model, micro, acc.backward)
        metrics = ranks.mean_over_ranks(acc, metrics)
        if cfg.grad_clip is not None:
            metrics["grad_norm"] = ranks.clip_gradients(acc, params, cfg.grad_clip, mode)
        if _diverged(acc, metrics):
            raise DivergedError(_diverged_message(desc, step + 1, metrics, cfg, state_dir,
                                                  last_checkpoint))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        frozen = float(getattr(objective, "frozen_flops", 0.0)) - frozen_before
        tok, pos, frozen = ranks.count_all_ranks(acc, micro, frozen)
        counters.tokens += tok
        counters.positions += pos
        # Frozen models: an online teacher sees every position; a reference counts itself.
        counters.flops += train_flops(n_matmul, pos) + 2.0 * extra * pos + frozen
        window_tokens += tok
        counters.step += 1
        counters.wall_time += time.perf_counter() - t0
        if on_step is not None:
            on_step(counters.step, acc.unwrap_model(model))

        if cfg.log_every and (counters.step % cfg.log_every == 0 or counters.step == cfg.steps):
            elapsed = time.perf_counter() - window_start
            tps = window_tokens / max(elapsed, 1e-9)
            window_start, window_tokens = time.perf_counter(), 0
            rec = {"step": counters.step, "lr": scheduler.get_last_lr()[0], **metrics,
                   "tokens": counters.tokens, "flops": counters.flops, "tok_per_s": tps}
            log.write(rec)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", tok_s=f"{tps:,.0f}")
        result.last_metrics = metrics
        bar.update(1)

        if evaluate is not None and cfg.eval_every and counters.step % cfg.eval_every == 0:
            m = run_eval()
            if should_stop is not None and should_stop(m):
                result.stopped_early = True
        if (state_dir is not None and cfg.checkpoint_every
                and counters.step % cfg.checkpoint_every == 0 and counters.step < cfg.steps
                and not result.stopped_early):
            save_state(acc, state_dir, counters, shards)
            last_checkpoint = counters.step
    bar.close()

    # A final evaluation unless the last step just had one.
    if evaluate is not None and (not result.evals or result.evals[-1]["step"] != counters.step):
        run_eval()
    if mode == "fsdp":
        sh.gather_into(model, plain, acc)
    acc.wait_for_everyone()
    if state_dir is not None and state_dir.exists() and acc.is_main_process:
        remove_state(state_dir)  # finished: the model itself is the result
    result.steps, result.tokens = counters.step, counters.tokens
    result.flops, result.wall_time = counters.flops, counters.wall_time
    if tracking:
        # Close the trackers. (A failed run needs no close: TensorBoard flushes on every
        # write; accelerate's wandb / mlflow runs end with the process.)
        acc.end_training()
    return result


def _diverged(acc: Accelerator, metrics: Metrics) -> bool:
    """Whether this step's loss or gradient norm is NaN or inf, on any process.

    Only the loss and the gradient norm are checked: the gradients are all-reduced, so a
    non-finite gradient on one rank shows in every rank's norm; the flag is reduced too
    so every rank stops at the same step. Without grad_clip no norm is computed, and an
    inf gradient shows one step later, as a non-finite loss.
    """
    bad = not all(math.isfinite(metrics[k]) for k in ("loss", "grad_norm") if k in metrics)
    if acc.num_processes > 1:
        flag = acc.reduce(torch.tensor([float(bad)], device=acc.device), reduction="sum")
        bad = bool(flag.item() > 0)
    return bad


def _diverged_message(desc: str, step: int, metrics: Metrics, cfg: OptimConfig,
                      state_dir: Path | None, last_checkpoint: int | None) -> str:
    seen = ", ".join(f"{k} {metrics[k]}" for k in ("loss", "grad_norm") if k in metrics)
    if state_dir is None:
        kept = "nothing was saved (no output folder)"
    elif last_checkpoint is None:
        kept = "no checkpoint was written yet (checkpoint_every=0 or not reached)"
    else:
        kept = f"the last good checkpoint (step {last_checkpoint}) is kept in {state_dir}"
    fix = f"lower this stage's lr (now {cfg.lr:g})"
    if cfg.grad_clip is None:
        fix += " or set its grad_clip"
    return (f"{desc}: training diverged at step {step} ({seen}); the step was not applied "
            f"and {kept}. To fix, {fix}: the same config would diverge again")
