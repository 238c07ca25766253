"""How a multi-process launch splits a training stage: DDP or fully sharded (FSDP2).

`sharding` (a run setting): `auto` (DDP, or FSDP2 when launched with an accelerate FSDP
config), `ddp` (every rank holds the whole model; gradients are all-reduced) or `fsdp`
(PyTorch FSDP2 `fully_shard`: every rank holds 1/N of the weights, gradients and optimizer
states; each block's weights are all-gathered for its forward and backward).

We call `fully_shard` ourselves instead of letting accelerate do it, so the same code runs
on GPUs (nccl) and in the CPU tests (gloo): accelerate silently turns an FSDP request into
DDP on CPU, which would leave the sharded path untested. Accelerate still launches the
processes, places the devices and checkpoints RNG states; the sharded model and optimizer
are checkpointed by `ShardedState` (each rank its shards, in safetensors).

`check_launch` turns launches that would silently misbehave into errors: N independent
copies of a stage (a launcher that starts processes without a process group) and an FSDP
request that would run unsharded.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .configlib import ConfigError

if TYPE_CHECKING:  # the CLI checks every launch; it need not import torch for that
    import torch
    from accelerate import Accelerator

Sharding = Literal["auto", "ddp", "fsdp"]
# Launchers that start N processes, and the variable each sets to N. Without torch's
# WORLD_SIZE next to it, the processes never join one group: N copies of one stage.
_LAUNCHER_SIZES = {"OMPI_COMM_WORLD_SIZE": "mpirun (Open MPI)", "PMI_SIZE": "mpirun (MPICH)",
                   # srun's tasks of this step (an sbatch script's own SLURM_NTASKS
                   # counts its allocation, where one plain `undo` process is fine)
                   "SLURM_STEP_NUM_TASKS": "srun"}
_LAUNCH_HELP = ("launch with `torchrun --nproc_per_node N -m undo.cli ...` or `accelerate "
                "launch --config_file configs/accelerate/{ddp,fsdp2}.yaml -m undo.cli ...`")


def _accelerate_fsdp_env() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")


def _parent_num_processes() -> int:
    """`--num_processes N` of the `accelerate launch` that started this process (1 if none).

    `accelerate launch --cpu --num_processes 2` starts ONE process and tells it nothing
    about the 2 (measured: only ACCELERATE_USE_CPU is set), so the launcher's command line
    is the only place the request is visible.
    """
    try:
        args = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode().split("\0")
    except OSError:  # not Linux, or the parent is gone: nothing to check
        return 1
    if not any(a.endswith("accelerate") for a in args[:3]) or "launch" not in args:
        return 1
    for i, a in enumerate(args):
        for flag in ("--num_processes", "--num-processes"):
            if a == flag and i + 1 < len(args) and args[i + 1].isdigit():
                return int(args[i + 1])
            if a.startswith(flag + "=") and a.split("=", 1)[1].isdigit():
                return int(a.split("=", 1)[1])
    return 1


def check_launch(sharding: str = "auto") -> int:
    """The number of processes this launch runs as one group; raises `ConfigError` for a
    launch that would silently run independent copies or an FSDP request without a group.
    Call before any process group is made (reads only the environment)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        for var, launcher in _LAUNCHER_SIZES.items():
            n = int(os.environ.get(var, "1") or 1)
            if n > 1:
                raise ConfigError(f"launch: {launcher} started {n} processes ({var}={n}) "
                                  "but no torch process group (WORLD_SIZE unset): they would "
                                  f"run {n} independent copies of this stage; {_LAUNCH_HELP}")
        n = _parent_num_processes()
        if n > 1:
            raise ConfigError(f"launch: `accelerate launch --num_processes {n}` started one "
                              "process (with --cpu accelerate ignores --num_processes, and "
                              "would also run FSDP as DDP); use `torchrun --nproc_per_node "
                              f"{n} -m undo.cli ...` on CPU")
        if sharding == "fsdp" or _accelerate_fsdp_env():
            raise ConfigError("sharding: got 'fsdp' in a single-process launch, which would "
                              f"train unsharded; {_LAUNCH_HELP}, or set sharding=auto")
    if sharding == "ddp" and _accelerate_fsdp_env():
        raise ConfigError("sharding: got 'ddp' but this is an accelerate FSDP launch "
                          "(ACCELERATE_USE_FSDP=true); valid: auto or fsdp, or launch with "
                          "configs/accelerate/ddp.yaml")
    return world


def resolve(sharding: str, acc: Accelerator) -> Literal["none", "ddp", "fsdp"]:
    """What this launch does: `none` for one process, else DDP or FSDP2."""
    check_launch(sharding)
    if acc.num_processes == 1:
        return "none"
    return "fsdp" if sharding == "fsdp" or _accelerate_fsdp_env() else "ddp"


def _blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's repeated blocks (transformers' `_no_split_modules` names their classes):
    one FSDP unit each, so only one block's full weights exist at a time."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


def fully_shard_model(model: torch.nn.Module, acc: Accelerator) -> torch.nn.Module:
    """FSDP2 in place over all processes: each block is a unit, the rest (embeddings, the
    tied output head, the final norm) the root unit."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(acc.device.type, (acc.num_processes,))
    model.to(acc.device)
    for block in _blocks(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def sharded_copy(model: torch.nn.Module, acc: Accelerator) -> torch.nn.Module:
    """A fully sharded copy of `model` to train; `model` itself stays a plain module (its
    weights are refreshed by `gather_into`), so the stages evaluate and save it after
    training exactly as after DDP. Costs one transient CPU copy of the model per rank."""
    return fully_shard_model(copy.deepcopy(model), acc)


def gather_into(sharded: torch.nn.Module, model: torch.nn.Module, acc: Accelerator) -> None:
    """Copy the sharded copy's trained weights into the plain `model` on every rank."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(sharded, options=StateDictOptions(full_state_dict=True))
    model.load_state_dict(full)
    model.to(acc.device)


def hold_frozen(model: torch.nn.Module, acc: Accelerator, sharding: str = "auto"
                ) -> torch.nn.Module:
    """A frozen model (a distillation teacher, a reference) for every rank: sharded with
    FSDP2 under `fsdp` (1/N of it per rank, gathered block by block in its forward); under
    `ddp` on a GPU that supports it, in bfloat16 (half the memory of float32 per rank; the
    KL is computed in float32 from its logits either way); alone, as loaded. Every rank
    must run its forwards in step with the others under `fsdp` (the stages do: the same
    number of batches per step)."""
    import torch

    model.requires_grad_(False)
    model.eval()
    mode = resolve(sharding, acc)
    if mode == "fsdp":
        return fully_shard_model(model, acc)
    if mode == "ddp" and acc.device.type == "cuda" and torch.cuda.is_bf16_supported():
        model.to(torch.bfloat16)
    return model.to(acc.device)


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a sharded tensor (a DTensor); a plain tensor as it is."""
    return t.to_local() if hasattr(t, "to_local") else t


class ShardedState:
    """The sharded model and optimizer in a checkpoint folder: one safetensors file of
    this rank's shards per rank, and the optimizer's settings as JSON. Not
    torch.distributed.checkpoint: its metadata file is a pickle, which loading would
    run (a planted state folder must never run code). Resuming needs the same number
    of processes, as for DDP's per-rank RNG states."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer = model, optimizer

    def _files(self, folder: Path) -> tuple[Path, Path]:
        import torch.distributed as dist

        rank = dist.get_rank()
        return folder / f"shards-{rank}.safetensors", folder / f"shards-{rank}.json"

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        tensors = {f"model/{n}": _local(p).detach() for n, p in self.model.named_parameters()}
        sd = self.optimizer.state_dict()
        sharded: dict[str, dict[str, bool]] = {}  # optimizer entry -> a DTensor or not
        for i, entries in sd["state"].items():
            for k, v in entries.items():
                tensors[f"optim/{i}/{k}"] = _local(v).detach()
                sharded.setdefault(str(i), {})[k] = hasattr(v, "to_local")
        weights, meta = self._files(folder)
        save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(weights))
        meta.write_text(json.dumps({"param_groups": sd["param_groups"], "state": sharded}))

    def load(self, folder: Path) -> None:
        import torch
        from safetensors.torch import load_file
        from torch.distributed.tensor import DTensor

        weights, meta_file = self._files(folder)
        tensors = load_file(str(weights))
        meta = json.loads(meta_file.read_text())
        with torch.no_grad():
            for n, p in self.model.named_parameters():
                _local(p).copy_(tensors[f"model/{n}"])
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        state = {}
        for i, entries in meta["state"].items():
            p = params[int(i)]
            state[int(i)] = {
                k: DTensor.from_local(tensors[f"optim/{i}/{k}"].to(p.device), p.device_mesh,
                                      p.placements, shape=p.shape, stride=p.stride())
                if is_sharded else tensors[f"optim/{i}/{k}"]
                for k, is_sharded in entries.items()}
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
