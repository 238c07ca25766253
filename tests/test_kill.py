"""Kill anywhere (issue 16): SIGKILL each command at chosen points, re-run it, check it.

Every command (`undo pretrain`, `unlearn`, `distill` with and without the teacher cache,
`attack`, `run`) runs as a real subprocess. A kill point is a file-system state, polled
every 20 ms (never a sleep); as soon as it shows, the process group gets SIGKILL. Then:

(a) the re-run RESUMED: an observable of the work done before the kill survives it (the
    metrics.jsonl lines up to the checkpoint keep their original timing fields, which a
    restart would rewrite; cache chunks and finished attack runs keep their inode);
(b) it ends with the summary.json of an uninterrupted run (timings and paths aside);
(c) after every kill, every file a reader opens is whole: each *.json parses, each
    *.safetensors loads, each metrics.jsonl line parses, a checkpoint marked done holds
    all its files, and temp files are only ever hidden (`.name.PID.tmp`) or aside
    (`state.tmp`), never under a name a reader looks for.

"During a checkpoint write" is `state.tmp` seen on disk (accelerate's save_state writes
into it before the swap, train._save_state). The window is tens of ms, so a poll can miss
it and see the next checkpoint instead: the harness re-runs and tries again (each re-run
must itself resume), and checks on disk, after the kill, that `state.tmp` was really
there. Two windows are far shorter than a poll and are reproduced on disk instead (the
state a kill there leaves, built by hand): a torn metrics.jsonl line and a half-removed
checkpoint.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from undo.cli import main

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "arithmetic" / "smoke.yaml"
NAME = "arithmetic-smoke"
POLL_S = 0.02
# Tiny but with many checkpoints (every 2-3 steps) and two teacher-cache chunks (20 steps
# each), so every kill point has something to resume from.
SETTINGS = [
    "threads=1", "progress=false", "data.eval_items_per_op=8",
    "pretrain.steps=20", "pretrain.batch_size=16", "pretrain.warmup_steps=2",
    "pretrain.eval_every=10", "pretrain.checkpoint_every=2", "pretrain.log_every=1",
    "unlearn.steps=8", "unlearn.batch_size=8", "unlearn.eval_every=2",
    "unlearn.checkpoint_every=2", "unlearn.log_every=1",
    "distill.steps=25", "distill.batch_size=8", "distill.stop=budget", "distill.eval_every=5",
    "distill.checkpoint_every=3", "distill.log_every=1", "distill.teacher_cache=full",
    "attack.steps=4", "attack.budgets=[0,4]", "attack.eval_every=2", "attack.batch_size=8",
    "attack.curve_items_per_op=2", "attack.seeds=[0,1]",
    "study.alphas=[0.5]", "study.seeds=[0]", "study.gold=none", "study.unlearn_distill=false",
    "study.oracles=false", "study.workers=1",
]
# Fields that differ between two runs of one command: timings, paths, and what the
# teacher cache spent building (a resumed run reuses the chunks built before the kill).
VOLATILE = {"wall_time_s", "train_time_s", "time", "environment", "tok_per_s", "stage_dir",
            "relearn_json", "torch_threads", "threads", "path", "base", "teacher",
            "cache_dir", "built_chunks", "build_flops", "build_time_s", "out_dir"}


def _strip(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if k not in VOLATILE}
    if isinstance(x, list):
        return [_strip(v) for v in x]
    return x


def _read(path: Path) -> Any:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted `undo run`: the summaries every killed command must end with, and
    the input models (its stage folders) of the single-stage commands."""
    out = tmp_path_factory.mktemp("ref")
    assert main(["run", str(SMOKE), *SETTINGS, f"out_dir={out}"]) == 0
    return out / NAME


def _stage(run: Path, prefix: str) -> Path:
    (d,) = (run / "stages").glob(f"{prefix}-*")
    return d


class Command:
    """One command line, run (and killed, and re-run) in its own output folder."""

    def __init__(self, tmp: Path, args: list[str]) -> None:
        self.out = tmp / "out"
        self.run_dir = self.out / NAME
        # Settings first: the command's own overrides (args[1:]) win.
        self.argv = [sys.executable, "-m", "undo.cli", args[0], str(SMOKE), *SETTINGS,
                     *args[1:], f"out_dir={self.out}"]
        self.log = tmp / "stderr.txt"
        self.kills: list[str] = []
        self.proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
        with self.log.open("a") as err:
            return subprocess.Popen(self.argv, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                    start_new_session=True)  # its own group: kill workers too

    def kill_when(self, name: str, point: Callable[[], Any], timeout: float = 300) -> Any:
        """Start the command, SIGKILL its process group as soon as `point()` is truthy,
        and return that value; fails if the command finishes first."""
        proc = self.proc = self._start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hit = point()
            if hit:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                self.kills.append(name)
                assert_readable(self.out)
                return hit
            if proc.poll() is not None:
                pytest.fail(f"{name}: the command ended (rc {proc.returncode}) before the "
                            f"kill point; stderr: {self.log.read_text()[-2000:]}")
            time.sleep(POLL_S)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"{name}: kill point not reached in {timeout} s")

    def kill_in_checkpoint_write(self, stages: str, tries: int = 4) -> int:
        """Kill while a checkpoint is written over an earlier one: `state/done` exists and
        `state.tmp` is created. A write takes ~10 ms, less than a poll, so the creation is
        watched with inotify (the kernel wakes the harness on the mkdir), with the command
        reniced to 19, and checked on disk after the kill; a miss (the swap won the race)
        re-runs and tries again, each re-run resuming. Returns the tries it took."""
        for i in range(1, tries + 1):
            def point() -> bool:
                found = [p.parent.parent
                         for p in self.run_dir.glob(f"stages/{stages}/state/done")]
                if not found:
                    return False
                # Armed: the command at the lowest CPU priority, so on a loaded machine
                # the woken harness runs before the command finishes its write.
                assert self.proc is not None
                os.setpriority(os.PRIO_PGRP, self.proc.pid, 19)
                return _wait_created(found[0], "state.tmp", self.alive)
            self.kill_when(f"checkpoint write {i}", point)
            if list(self.run_dir.glob(f"stages/{stages}/state.tmp")):
                return i
            self.kills.append("(missed: the swap finished first)")
        pytest.fail(f"no kill landed inside a checkpoint write in {tries} tries ({stages}): "
                    f"{self.kills}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def finish(self) -> None:
        print(f"kills: {self.kills}")  # the points hit, for the record (pytest -s)
        proc = self._start()
        assert proc.wait(timeout=600) == 0, self.log.read_text()[-3000:]


_IN_CREATE = 0x100


def _wait_created(folder: Path, name: str, alive: Callable[[], bool]) -> bool:
    """Block until `name` is created in `folder` (inotify, Linux) or exists already;
    False once `alive()` is not (checked every 0.2 s)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_CLOEXEC)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    try:
        wd = libc.inotify_add_watch(fd, str(folder).encode(), _IN_CREATE)
        if wd < 0 or (folder / name).exists():  # gone (finished) / already there
            return (folder / name).exists()
        while alive():
            if not select.select([fd], [], [], 0.2)[0]:
                continue
            buf = os.read(fd, 4096)
            i = 0
            while i < len(buf):  # struct inotify_event {int wd; u32 mask, cookie, len; name}
                n = struct.unpack_from("iIII", buf, i)[3]
                if buf[i + 16:i + 16 + n].rstrip(b"\0").decode() == name:
                    return True
                i += 16 + n
        return False
    finally:
        os.close(fd)


def _metrics(stage: Path) -> list[str]:
    p = stage / "metrics.jsonl"
    return p.read_text().splitlines() if p.exists() else []


def _checkpoint_step(stage: Path) -> int:
    c = stage / "state" / "counters.json"
    return _read(c)["step"] if (stage / "state" / "done").exists() else 0


def _kept_lines(before: list[str], step: int) -> list[str]:
    return [ln for ln in before if json.loads(ln).get("step", 0) <= step]


def assert_resumed(stage: Path, before: list[str], step: int) -> None:
    """The lines up to the checkpoint are the pre-kill lines, byte for byte (their
    tok_per_s is a timing: a restart would have written new values), and lines past it
    were written anew."""
    assert step > 0, f"no checkpoint in {stage} to resume from"
    kept = _kept_lines(before, step)
    after = _metrics(stage)
    assert any('"tok_per_s"' in ln for ln in kept)
    assert after[:len(kept)] == kept
    assert json.loads(after[len(kept)])["step"] > step  # the first new line: past it


def assert_readable(out: Path) -> None:
    """(c): every file a reader opens is whole, right after a kill."""
    for p in out.rglob("*"):
        if not p.is_file():
            continue
        name = p.name
        if name.endswith(".tmp"):
            # Temp files only hidden beside their target (artifacts.write_text, cache chunks).
            assert name.startswith("."), f"temp file under a reader's name: {p}"
            continue
        if "state.tmp" in p.parts:  # a checkpoint being written, aside from state/
            continue
        if name.endswith(".json"):
            json.loads(p.read_text())
        elif name.endswith(".safetensors"):
            load_file(str(p))
        elif name == "metrics.jsonl":
            for ln in p.read_text().splitlines():
                json.loads(ln)
    for state in out.rglob("state"):
        if (state / "done").exists():  # a checkpoint train() would load: complete
            assert {"counters.json", "model.safetensors", "optimizer.bin",
                    "scheduler.bin"} <= {f.name for f in state.iterdir()}, state
            torch.load(state / "optimizer.bin", weights_only=True)


def _same_summary(got: Path, want: Path) -> None:
    assert _strip(_read(got)) == _strip(_read(want))


# ------------------------------------------------------------------ the commands


def test_pretrain(reference: Path, tmp_path: Path) -> None:
    cmd = Command(tmp_path, ["pretrain", "--which", "base"])
    stage = "pretrain-base-*"
    # 1: mid-training, a checkpoint on disk and metrics logged past it.
    cmd.kill_when("past a checkpoint", lambda: _checkpoint_step(_one(cmd, stage)) >= 4
                  and len(_metrics(_one(cmd, stage))) > 6)
    d = _one(cmd, stage)
    before, step = _metrics(d), _checkpoint_step(d)
    # 2: the re-run killed while writing a checkpoint: it resumed first.
    cmd.kill_in_checkpoint_write(stage)
    assert_resumed(d, before, step)
    cmd.finish()
    _same_summary(d / "summary.json", _stage(reference, "pretrain-base") / "summary.json")
    assert not (d / "state").exists() and not (d / "state.tmp").exists()


def _one(cmd: Command, pattern: str) -> Path:
    found = list(cmd.run_dir.glob(f"stages/{pattern}"))
    return found[0] if found else cmd.run_dir / "absent"


def test_unlearn(reference: Path, tmp_path: Path) -> None:
    base = _stage(reference, "pretrain-base") / "model"
    cmd = Command(tmp_path, ["unlearn", str(base)])
    stage = "unlearn-*"
    cmd.kill_when("past a checkpoint", lambda: _checkpoint_step(_one(cmd, stage)) >= 2
                  and len(_metrics(_one(cmd, stage))) > 4)
    d = _one(cmd, stage)
    before, step = _metrics(d), _checkpoint_step(d)
    cmd.kill_in_checkpoint_write(stage)
    assert_resumed(d, before, step)
    cmd.finish()
    # The summary's eval curve includes the evaluations from before the kill.
    _same_summary(d / "summary.json", _stage(reference, "unlearn") / "summary.json")


def _distill_args(reference: Path) -> list[str]:
    return ["distill", str(_stage(reference, "unlearn") / "model"), "--alpha", "0.5",
            "--seed", "0", "--base", str(_stage(reference, "pretrain-base") / "model")]


def test_distill_with_teacher_cache(reference: Path, tmp_path: Path) -> None:
    cmd = Command(tmp_path, _distill_args(reference))
    cache = cmd.run_dir / "cache"
    # 1: during the cache build: the first chunk's temp file (or, if the poll is late,
    # the chunk itself) appears.
    hit = cmd.kill_when("teacher-cache build", lambda: list(cache.glob("*/.chunk-*.tmp"))
                        or list(cache.glob("*/chunk-*.safetensors")))
    cmd.kills[-1] += f" ({hit[0].name} seen)"
    # 2: chunk 0 built and training under way; checkpoints every 3 steps.
    cmd.kill_when("chunk 0 done, past a checkpoint",
                  lambda: _checkpoint_step(_one(cmd, "distill-*")) >= 3)
    chunk0 = next(cache.glob("*/chunk-0-00000.safetensors"))
    ino = chunk0.stat().st_ino
    # 3: while writing a checkpoint, which chunk 1's build (at step 20) precedes.
    d = _one(cmd, "distill-*")
    before, step = _metrics(d), _checkpoint_step(d)
    cmd.kill_in_checkpoint_write("distill-*")
    assert_resumed(d, before, step)
    cmd.finish()
    s = _read(d / "summary.json")
    # Chunk 0 was built once, before the kills, and reused: never rebuilt or rewritten.
    assert chunk0.stat().st_ino == ino
    assert s["teacher_outputs"]["mode"] == "full" and s["teacher_outputs"]["built_chunks"] <= 1
    _same_summary(d / "summary.json", _stage(reference, "distill-noised") / "summary.json")


def test_distill_online(reference: Path, tmp_path: Path) -> None:
    online = ["distill.teacher_cache=online"]
    # The uninterrupted run, in-process (the reference study used the cache).
    want = tmp_path / "ref"
    assert main([*_distill_args(reference), str(SMOKE), *SETTINGS, *online,
                 f"out_dir={want}"]) == 0
    cmd = Command(tmp_path, _distill_args(reference) + online)
    cmd.kill_when("past a checkpoint", lambda: _checkpoint_step(_one(cmd, "distill-*")) >= 3
                  and len(_metrics(_one(cmd, "distill-*"))) > 6)
    d = _one(cmd, "distill-*")
    before, step = _metrics(d), _checkpoint_step(d)
    cmd.kill_in_checkpoint_write("distill-*")
    assert_resumed(d, before, step)
    cmd.finish()
    assert not (cmd.run_dir / "cache").exists()
    _same_summary(d / "summary.json", next(want.glob(f"{NAME}/stages/distill-*/summary.json")))


def test_attack(reference: Path, tmp_path: Path) -> None:
    model = _stage(reference, "unlearn")
    cmd = Command(tmp_path, ["attack", str(model)])
    runs = cmd.run_dir / "attacks"
    # The grid: 2 lrs x 2 seeds, each run kept in runs/ when it finishes.
    cmd.kill_when("one run finished", lambda: list(runs.glob("*/runs/*.json")))
    first = {p: (p.stat().st_ino, p.read_bytes()) for p in runs.glob("*/runs/*.json")}
    cmd.kill_when("three runs finished", lambda: len(list(runs.glob("*/runs/*.json"))) >= 3)
    cmd.finish()
    (d,) = [p for p in runs.iterdir() if p.is_dir()]
    # The runs finished before the kill were kept as they were, not run again.
    assert {p: (p.stat().st_ino, p.read_bytes()) for p in first} == first
    (want,) = reference.glob(f"attacks/{d.name}")
    _same_summary(d / "summary.json", want / "summary.json")
    _same_summary(d / "relearn.json", want / "relearn.json")


def test_run(reference: Path, tmp_path: Path) -> None:
    cmd = Command(tmp_path, ["run"])
    base = "pretrain-base-*"
    cmd.kill_in_checkpoint_write(base)
    d = _one(cmd, base)
    before, step = _metrics(d), _checkpoint_step(d)
    hit = cmd.kill_when("teacher-cache build",
                        lambda: list(cmd.run_dir.glob("cache/*/.chunk-*.tmp"))
                        or list(cmd.run_dir.glob("cache/*/chunk-*.safetensors")))
    cmd.kills[-1] += f" ({hit[0].name} seen)"
    assert (d / "summary.json").exists()
    assert_resumed(d, before, step)
    cmd.kill_when("an attack run finished", lambda: list(cmd.run_dir.glob("attacks/*/runs/*")))
    cmd.finish()
    _same_summary(cmd.run_dir / "summary.json", reference / "summary.json")
    assert sorted(cmd.kills)[:1] and len(cmd.kills) >= 3


# ------------------------------------------------ windows shorter than a poll


def test_torn_metrics_line_is_dropped_on_resume(tmp_path: Path) -> None:
    """A kill inside an append leaves half a line: resuming must not choke on it."""
    from undo.train import _JsonlLog

    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    _JsonlLog(p, resume_step=2)
    assert p.read_text() == '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n'


def _train_micro(tokenizer: Any, bench: Any, out: Path, stop_at: int | None = None,
                 steps: int = 6) -> Any:
    """6 steps with checkpoints every 2; `stop_at`: interrupted right after that step."""
    from undo.benchmarks.arithmetic import ItemBatches
    from undo.config import ModelConfig, OptimConfig
    from undo.models import build_model
    from undo.objectives import OBJECTIVES
    from undo.train import train

    def on_step(step: int, _: Any) -> None:
        if step == stop_at:
            raise KeyboardInterrupt

    cfg = OptimConfig(steps=steps, batch_size=4, lr=1e-3, checkpoint_every=2, log_every=1)
    return train(build_model(ModelConfig(preset="micro"), tokenizer, seed=0),
                 OBJECTIVES.get("ce")(), ItemBatches(bench.stream(bench.ops), tokenizer, 4,
                                                     seed=0),
                 cfg, out, progress=False, on_step=on_step)


def test_half_removed_checkpoint_is_not_loaded(tokenizer: Any, bench: Any,
                                               tmp_path: Path) -> None:
    """train() removes state/ when it finishes; a kill inside that rmtree must not leave
    a folder that looks like a checkpoint (done marker present, weights gone)."""
    removed: list[str] = []
    rmtree = shutil.rmtree

    def rmtree_killed_midway(path: Any, *a: Any, **k: Any) -> None:
        if Path(path).name != "state":  # state.old / state.tmp of a checkpoint swap
            return rmtree(path, *a, **k)
        # What SIGKILL inside the final rmtree leaves when it reached the weights before
        # the marker (its order is the directory's, arbitrary): the rest stays.
        for f in Path(path).iterdir():
            if f.name not in ("done", "counters.json"):
                f.unlink()
                removed.append(f.name)
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("undo.train.shutil.rmtree", rmtree_killed_midway)
        with pytest.raises(KeyboardInterrupt):
            _train_micro(tokenizer, bench, tmp_path)
    assert "model.safetensors" in removed
    assert _train_micro(tokenizer, bench, tmp_path).steps == 6


def test_half_removed_old_checkpoint_is_cleared(tokenizer: Any, bench: Any,
                                                tmp_path: Path) -> None:
    """A kill while `_save_state` removes `state.old` leaves part of it beside a complete
    `state`; the next checkpoint swap must still work."""
    with pytest.raises(KeyboardInterrupt):
        _train_micro(tokenizer, bench, tmp_path, stop_at=3)  # checkpoint at step 2
    old = tmp_path / "state.old"
    old.mkdir()
    (old / "done").write_text("ok\n")
    (old / "optimizer.bin").write_bytes((tmp_path / "state" / "optimizer.bin").read_bytes())
    r = _train_micro(tokenizer, bench, tmp_path)  # resumes, checkpoints at step 4
    assert r.steps == 6 and not old.exists()
