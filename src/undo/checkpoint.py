"""Checkpoints of the training loop: atomic save, swap and recovery; the metrics log.

A checkpoint is `out_dir/state`: accelerate's files (model, optimizer, RNG states), our
step counters as JSON (not the pickle accelerate would load with `weights_only=False`),
the manifest of those files (`undo.integrity`) and a `done` marker written last. It is
written beside (`state.tmp`) and swapped in with two renames, so a kill at any point
leaves a complete checkpoint: `recover_swap` finds it.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from . import integrity
from . import sharding as sh
from .artifacts import write_text
from .configlib import flatten

COUNTERS_FILE = "counters.json"  # in a checkpoint folder, beside accelerate's files


@dataclass
class Counters:
    """What a run consumed; saved in checkpoints so a resumed run counts on."""

    step: int = 0
    tokens: int = 0
    positions: int = 0
    flops: float = 0.0
    wall_time: float = 0.0

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, d: dict[str, Any]) -> None:
        for k, v in d.items():
            setattr(self, k, v)


class MetricsLog:
    """metrics.jsonl: one JSON object a line. On resume, lines past the checkpoint go.

    `kept` holds the records kept (the evaluations before the checkpoint belong to the
    resumed run's result too). A line a kill tore in the middle of an append does not
    parse: it is past the checkpoint, and dropped. The rewrite is atomic, so a kill
    during it never loses the kept lines.
    """

    def __init__(self, path: Path | None, resume_step: int, trackers: Any = None) -> None:
        self.path = path
        self.trackers = trackers  # an Accelerator whose trackers get every record too
        self.kept: list[dict[str, Any]] = []
        if path is None:
            return
        lines = []
        for ln in path.read_text().splitlines() if path.exists() else []:
            try:
                rec = json.loads(ln)
            except json.JSONDecodeError:
                continue
            if rec.get("step", 0) <= resume_step:
                lines.append(ln)
                self.kept.append(rec)
        write_text(path, "".join(ln + "\n" for ln in lines))

    def write(self, record: dict[str, Any]) -> None:
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        if self.trackers is not None:
            # Trackers take flat numbers: {"eval": {"retain/acc": x}} -> "eval/retain/acc".
            values = flat_numbers({k: v for k, v in record.items() if k != "step"})
            self.trackers.log(values, step=record["step"])


def flat_numbers(d: dict[str, Any], text: bool = False) -> dict[str, Any]:
    """Nested dict -> {"a/b": number}; other values dropped, or as text when `text`
    (a tracker's run configuration: lists, None)."""
    out: dict[str, Any] = {}
    for key, v in flatten(d, sep="/").items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
        elif text:
            out[key] = str(v)
    return out


def recover_swap(state_dir: Path) -> None:
    """A kill between the two renames of `save_state` leaves only `state.old`: use it.

    A kill while `state.old` was being removed leaves part of it beside a complete
    `state`: remove the rest (the next swap could not rename `state` onto it)."""
    old = state_dir.with_name("state.old")
    if not (state_dir / "done").exists() and (old / "done").exists():
        if state_dir.exists():
            shutil.rmtree(state_dir)
        old.rename(state_dir)
    elif old.exists():
        remove_state(old)


def resumable(state_dir: Path) -> bool:
    """Whether `state_dir` holds a checkpoint to resume from: complete (`done`), of this
    undo (counters as JSON, a manifest) and intact. A damaged one raises IntegrityError
    (a clean stop, before anything is loaded); one without counters or manifest (an
    older undo's) is not loaded: the run starts over, which gives the same result
    (batches depend only on the step)."""
    if not ((state_dir / "done").exists() and (state_dir / COUNTERS_FILE).exists()):
        return False
    if not integrity.enabled():  # UNDO_INTEGRITY=off, benchmarks only
        return True
    if not (state_dir / integrity.MANIFEST).exists():
        return False
    v = integrity.verify(state_dir / integrity.MANIFEST)
    if not v.ok:
        raise integrity.IntegrityError(
            f"checkpoint {state_dir} is damaged: {'; '.join(v.problems())}. Nothing was "
            f"loaded or trained. Delete {state_dir} (the stage then starts from step 0), "
            "or re-run the stage with --force")
    return True


def remove_state(d: Path) -> None:
    """Remove a checkpoint folder, its `done` marker first: a kill inside the removal
    then leaves a folder that is never loaded, not one marked done without its files."""
    (d / "done").unlink(missing_ok=True)
    shutil.rmtree(d)


class _TiedWeightsNote(logging.Filter):
    """Drop accelerate's "Removed shared tensor {'lm_head.weight'}" warning.

    Tied input/output embeddings share storage, so safetensors keeps one copy and loading
    re-ties them; resuming is bit-identical (tests/core/test_train.py), so the warning printed
    at every checkpoint is noise.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in record.getMessage()


logging.getLogger("accelerate.utils.other").addFilter(_TiedWeightsNote())


def save_state(acc: Accelerator, state_dir: Path, counters: Counters,
                shards: sh.ShardedState | None = None) -> None:
    """Checkpoint atomically: write beside, then swap, so a kill never leaves half a state.

    Every rank writes its part (RNG states); only the main process moves folders, with
    barriers so no rank writes into a folder another is removing.
    """
    tmp = state_dir.with_name("state.tmp")
    if acc.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    acc.wait_for_everyone()
    acc.save_state(str(tmp))
    if shards is not None:
        shards.save(tmp)
    acc.wait_for_everyone()
    if acc.is_main_process:
        (tmp / COUNTERS_FILE).write_text(json.dumps(counters.state_dict()))
        integrity.write_manifest(tmp)  # every rank's files are in by now (barrier above)
        (tmp / "done").write_text("ok\n")
        old = state_dir.with_name("state.old")
        if state_dir.exists():
            state_dir.rename(old)
        tmp.rename(state_dir)
        if old.exists():
            remove_state(old)
    acc.wait_for_everyone()
