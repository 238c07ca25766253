"""Process-wide settings: threads, quiet libraries, THE device rule, THE launch state
(`process_state`), THE process pool and THE compute precision (`compute_precision`)."""

from __future__ import annotations

import glob
import multiprocessing as mp
import os
import platform
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # accelerate is imported only where a launch needs it (CLI start-up)
    from accelerate import PartialState

    from .config import RunConfig


def setup(cfg: RunConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        process_state(cfg.device)  # the config's device decides, before any stage asks
    quiet()


def process_state(device: str = "auto") -> PartialState:
    """This process's place in its launch (accelerate's process-wide state), created for
    `device` as `train.make_accelerator` creates it; the first call in a process fixes it.

    Why not a bare `PartialState()`: on a machine without GPUs, under torchrun or
    `accelerate launch`, it joins torch's process group but records one process of
    index 0, so every rank took itself for the main one; the ranks then raced for a
    stage's lock and the winner finished the stage alone, writing no weights when it was
    torch rank 1 (the 'no model/' launches of issue 25).
    """
    from accelerate import PartialState

    state = PartialState(cpu=device_name(device) == "cpu")
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() \
            and dist.get_world_size() != state.num_processes:
        raise RuntimeError(f"accelerate sees {state.num_processes} process(es) but torch's "
                           f"process group has {dist.get_world_size()}: create the "
                           "accelerate state through undo.runtime.process_state")
    return state


def quiet() -> None:
    """Silence library chatter that is not ours (transformers' weight-loading bars,
    shared-tensor notes), but keep the hub's download bars: a multi-GB download without
    one looks hung. HF_HUB_DISABLE_PROGRESS_BARS=1 still turns those off."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from huggingface_hub import constants
    from huggingface_hub.utils import enable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # also switches the hub's bars off, so:
    if not constants.HF_HUB_DISABLE_PROGRESS_BARS:
        enable_progress_bars()
    warnings.filterwarnings("ignore", message=".*Removed shared tensor.*")
    import logging

    logging.getLogger("accelerate").setLevel(logging.ERROR)


@contextmanager
def compute_precision(precision: str, device: str = "auto") -> Iterator[None]:
    """Run the block at `precision` (the config's `precision`): `fp32` as the weights are;
    `bf16-mixed` with every autocast-eligible op (matmuls) in bfloat16 under
    `torch.autocast`, weights, gradients and optimizer state staying float32: what the
    authors' `accelerate launch --mixed_precision bf16` ran.

    The block is a whole stage (training forwards and backwards, teacher outputs, every
    evaluation), so a model is scored at the precision it was trained at. On CPU the
    attention runs in its math form: torch's fused CPU attention kernel is ~10x slower in
    bfloat16 backward than the plain matmuls (experiments/precision_speed.py).
    """
    if precision not in ("fp32", "bf16-mixed"):  # the config's Literal checked it already
        raise ValueError(f"unknown precision {precision!r}; valid: fp32, bf16-mixed")
    if precision == "fp32":
        yield
        return
    dev = device_name(device)
    # No cast cache: autocast keeps each weight's bfloat16 copy until its outermost
    # context exits, and this one spans a whole stage, so with the cache every forward
    # after the first optimizer step read the weights as they were at step 0 (a tiny
    # pretraining then never learned; tests/core/test_runtime.py).
    with torch.autocast(device_type=dev, dtype=torch.bfloat16, cache_enabled=False):
        if dev == "cpu":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel(SDPBackend.MATH):
                yield
        else:
            yield


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of bfloat16 arithmetic


def _cpuinfo() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:  # not Linux
        return None


def _cpu_flags(cpuinfo: str) -> set[str]:
    return {w for line in cpuinfo.splitlines() if line.startswith("flags")
            for w in line.split(":", 1)[-1].split()}


def bf16_is_slow(device: str = "auto", cpuinfo: str | None = None) -> bool:
    """Whether bfloat16 matmuls would run slower than float32 here: on a CPU whose
    /proc/cpuinfo (`cpuinfo`, read when None) lists neither bfloat16 instruction set, where
    torch emulates them. False on a GPU, and where the CPU cannot be told (no
    /proc/cpuinfo: not Linux)."""
    if device_name(device) != "cpu":
        return False
    if cpuinfo is None:
        cpuinfo = _cpuinfo()
        if cpuinfo is None:
            return False
    flags = _cpu_flags(cpuinfo)
    return bool(flags) and not flags & set(BF16_CPU_FLAGS)


def load_average() -> list[float] | None:
    """The machine's load average over 1, 5 and 15 minutes (None where the platform has
    none): beside a timing, it says how many other jobs shared the cores."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def host(cpuinfo: str | None = None) -> dict[str, Any]:
    """The machine a timing was measured on, for every environment record: CPU model,
    its core count (`cpu_count`: the machine's; `cpu_affinity`: those this process may
    run on; `cpu_quota`: a cgroup's limit in cores, if any), whether it does bfloat16
    arithmetic in hardware, and the GPUs' names where the NVIDIA driver is present (never
    required). A figure from one machine is then never read as another's: the same
    study took about twice as long per core on one 2-core machine as on another."""
    info = _cpuinfo() if cpuinfo is None else cpuinfo
    flags = _cpu_flags(info) if info else set()
    fields = _first_fields(info or "")
    model = fields.get("model name") or fields.get("Model")
    # Vendor, family and model number: tells CPU generations apart where a virtual
    # machine reports only "Intel(R) Xeon(R) Processor" as the name.
    ident = (f"{fields['vendor_id']} family {fields['cpu family']} model {fields['model']}"
             if {"vendor_id", "cpu family", "model"} <= fields.keys() else None)
    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "cpu": model or platform.processor() or platform.machine() or None,
        "cpu_id": ident,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "cpu_quota": _cpu_quota(),
        # None where the CPU cannot be told (no /proc/cpuinfo flags).
        "bf16_cpu_flags": sorted(flags & set(BF16_CPU_FLAGS)) if flags else None,
        "bf16_is_slow": (not flags & set(BF16_CPU_FLAGS)) if flags else None,
        "gpus": gpu_names(),
    }


def _first_fields(cpuinfo: str) -> dict[str, str]:
    """The first processor's `key : value` lines of /proc/cpuinfo."""
    out: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if out:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            out.setdefault(key.strip(), value.strip())
    return out


def _cpu_quota() -> float | None:
    """A cgroup v2 CPU limit in cores (cpu.max `quota period`), None when unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else round(int(quota) / int(period), 2)


def gpu_names() -> list[str]:
    """The GPUs' names: torch's for its visible devices once CUDA is initialised, else the
    NVIDIA driver's (/proc/driver/nvidia), never initialising CUDA for it (a process pool
    forked afterwards could not use the GPU). [] without one."""
    if torch.cuda.is_initialized():
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    names = []
    for info in sorted(glob.glob("/proc/driver/nvidia/gpus/*/information")):
        try:
            text = Path(info).read_text()
        except OSError:
            continue
        names += [line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.startswith("Model:")]
    return names


def device_name(device: str) -> str:
    """THE device rule for a `device` setting (auto | cpu | cuda): "cuda" when asked for,
    or on auto when a GPU is there; else "cpu"."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def worker_init(threads: int = 1) -> None:
    """Every worker process of undo: `threads` torch threads, quiet libraries."""
    torch.set_num_threads(threads)
    quiet()


def exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    """End this process when `parent` stops being its parent. A pool worker whose parent
    was killed (SIGKILL, OOM) otherwise waits on its task queue forever: such orphans
    lingered idle for over an hour on the shared machine. A daemon thread polls getppid
    (reparenting is the only signal a SIGKILLed parent leaves); os._exit because the
    main thread may be blocked inside torch; a stage cut short this way is one the kill
    harness already covers (its flock goes with the process, its folder stays unfinished)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="undo-exit-with-parent", daemon=True).start()


def pool_worker_init(threads: int, parent: int) -> None:
    worker_init(threads)
    exit_with_parent(parent)


def process_pool(workers: int, threads: int = 1, fresh: bool = False) -> ProcessPoolExecutor:
    """THE process pool (study stages, attack runs, search trials): `workers` processes of
    `threads` torch threads each, that end when this process dies. `fresh` spawns new
    interpreters (a study's stages: no state inherited, safe beside threads of the
    parent); otherwise fork, where the platform has it, so workers inherit the imported
    torch (spawn re-imports it, ~3 s)."""
    method = "fork" if not fresh and "fork" in mp.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(workers, mp_context=mp.get_context(method),
                               initializer=pool_worker_init, initargs=(threads, os.getpid()))


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` torch threads (0: as they are), then restore the count."""
    before = torch.get_num_threads()
    try:
        if n:
            torch.set_num_threads(n)
        yield
    finally:
        torch.set_num_threads(before)
