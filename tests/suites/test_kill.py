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

Points shorter than a poll (a checkpoint write takes ~5 ms on the micro model) are hit
exactly instead: the command's own audit hook (KILL_HOOK) SIGKILLs it at the N-th call
that starts the window, e.g. the open of `state.tmp/counters.json` (accelerate's files
written, the checkpoint not yet marked done) or the rename `state.tmp` -> `state` (the
hook runs before the call: between the swap's two renames); the harness then checks on
disk that the window was hit. Windows inside a single call are reproduced on disk instead
(the state a kill there leaves, built by hand): a torn metrics.jsonl line, and a
checkpoint folder half removed by its rmtree (`state` at the end, `state.old` in a swap).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tiny_study import NAME, SETTINGS, SMOKE, same_summary, train_micro
from undo.cli import main

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
POLL_S = 0.02
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


# A kill point shorter than any poll (a checkpoint write takes ~5 ms on the micro model,
# a chunk's rename less) is the moment the command makes a given call: Python's audit
# hooks (PEP 578) see every open/rename/mkdir before it happens, and this module, imported at start-up
# through PYTHONPATH by every process the command starts, SIGKILLs the process group
# from inside at the N-th call matching KILL_AT = "event<TAB>regex<TAB>N". No line of
# undo changes; what is killed is the real command, by a real SIGKILL.
KILL_HOOK = """\
import os, re, signal, sys
_at = os.environ.get("KILL_AT")
if _at:
    _event, _pattern, _nth = _at.split("\\t")
    _seen = [0]

    def _hook(event, args):
        if event == _event and re.search(_pattern, " -> ".join(str(a) for a in args[:2])):
            _seen[0] += 1
            if _seen[0] == int(_nth):
                os.killpg(0, signal.SIGKILL)

    sys.addaudithook(_hook)
"""


def _regex(glob: str) -> str:
    """A stage folder glob (`pretrain-base-*`) as a regex for KILL_AT."""
    return glob.replace("*", "[^/]*")


class Command:
    """One command line, run (and killed, and re-run) in its own output folder."""

    def __init__(self, tmp: Path, args: list[str]) -> None:
        self.out = tmp / "out"
        self.run_dir = self.out / NAME
        # Settings first: the command's own overrides (args[1:]) win.
        self.argv = [sys.executable, "-m", "undo.cli", args[0], str(SMOKE), *SETTINGS,
                     *args[1:], f"out_dir={self.out}"]
        self.log = tmp / "stderr.txt"
        self.hook = tmp / "hook"
        self.hook.mkdir()
        (self.hook / "sitecustomize.py").write_text(KILL_HOOK)
        self.kills: list[str] = []

    def _start(self, kill_at: str | None = None) -> subprocess.Popen:
        path = [str(ROOT / "src"), str(self.hook), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        env.pop("KILL_AT", None)
        if kill_at is not None:
            env["KILL_AT"] = kill_at
        with self.log.open("a") as err:
            # Its own process group: a kill takes its worker processes too.
            return subprocess.Popen(self.argv, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                    start_new_session=True)

    def kill_when(self, name: str, point: Callable[[], Any], timeout: float = 300) -> Any:
        """Start the command, SIGKILL its process group as soon as `point()` is truthy,
        and return that value; fails if the command finishes first."""
        proc = self._start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hit = point()
            if hit:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                self._killed(name)
                return hit
            if proc.poll() is not None:
                pytest.fail(f"{name}: the command ended (rc {proc.returncode}) before the "
                            f"kill point; stderr: {self.log.read_text()[-2000:]}")
            time.sleep(POLL_S)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"{name}: kill point not reached in {timeout} s")

    def kill_at(self, name: str, event: str, pattern: str, nth: int = 1) -> None:
        """Run the command until its `nth` `event` call matching `pattern` (KILL_HOOK)."""
        proc = self._start(f"{event}\t{pattern}\t{nth}")
        rc = proc.wait(timeout=600)
        assert rc == -signal.SIGKILL, (f"{name}: not killed (rc {rc}); stderr: "
                                       f"{self.log.read_text()[-2000:]}")
        self._killed(name)

    def _killed(self, name: str) -> None:
        self.kills.append(name)
        assert_readable(self.out)

    def kill_in_checkpoint_write(self, stages: str, nth: int = 2) -> Path:
        """Kill while the `nth` checkpoint of this run is written: accelerate's files are
        in `state.tmp`, its counters and `done` marker not yet; an earlier one (of this
        run, or the one it resumed from) is in `state`. Returns the stage folder."""
        self.kill_at("checkpoint write", "open",
                     rf"/stages/{_regex(stages)}/state\.tmp/counters\.json -> w$", nth=nth)
        (d,) = self.run_dir.glob(f"stages/{stages}")
        assert (d / "state" / "done").exists() and (d / "state.tmp" / "model.safetensors"
                                                    ).exists()
        assert not (d / "state.tmp" / "done").exists()
        return d

    def kill_in_swap(self, stages: str) -> Path:
        """Kill between the two renames of a checkpoint swap of a re-run (at its first
        `state.tmp` -> `state`: an audit hook runs before the call, so `state` ->
        `state.old` is done): no `state` at all on disk."""
        self.kill_at("between the swap's renames", "os.rename",
                     rf"/stages/{_regex(stages)}/state\.tmp -> .*/state$")
        (d,) = self.run_dir.glob(f"stages/{stages}")
        assert not (d / "state").exists() and (d / "state.old" / "done").exists()
        return d

    def finish(self) -> None:
        print(f"kills: {self.kills}")  # the points hit, for the record (pytest -s)
        proc = self._start()
        assert proc.wait(timeout=600) == 0, self.log.read_text()[-3000:]


def _metrics(stage: Path) -> list[str]:
    p = stage / "metrics.jsonl"
    return p.read_text().splitlines() if p.exists() else []


def _checkpoint_step(stage: Path) -> int:
    """The step of the checkpoint in `stage/state` (0: none, or a swap under way)."""
    try:
        return _read(stage / "state" / "counters.json")["step"]
    except FileNotFoundError:
        return 0


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
            # (no scheduler file: the LR schedule is rebuilt from the step on resume)
            assert {"counters.json", "model.safetensors", "optimizer.bin"} <= {
                f.name for f in state.iterdir()}, state
            torch.load(state / "optimizer.bin", weights_only=True)


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
    # 3: killed between the swap's renames; the re-run resumes from state.old.
    cmd.kill_in_swap(stage)
    before, step = _metrics(d), _read(d / "state.old" / "counters.json")["step"]
    cmd.finish()
    assert_resumed(d, before, step)
    same_summary(d / "summary.json", _stage(reference, "pretrain-base") / "summary.json")
    assert not [p.name for p in d.iterdir() if p.name.startswith("state")]


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
    # The resumed run's first checkpoint: the one it resumed from is in `state`. (Its
    # second may never come: under load the first kill can land at a late checkpoint.)
    cmd.kill_in_checkpoint_write(stage, nth=1)
    assert_resumed(d, before, step)
    cmd.finish()
    # The summary's eval curve includes the evaluations from before the kill.
    same_summary(d / "summary.json", _stage(reference, "unlearn") / "summary.json")


def _distill_args(reference: Path) -> list[str]:
    return ["distill", str(_stage(reference, "unlearn") / "model"), "--alpha", "0.5",
            "--seed", "0", "--base", str(_stage(reference, "pretrain-base") / "model")]


def test_distill_with_teacher_cache(reference: Path, tmp_path: Path) -> None:
    cmd = Command(tmp_path, _distill_args(reference))
    cache = cmd.run_dir / "cache"
    # 1: during the cache build: chunk 0 written to its temp file, not yet renamed.
    cmd.kill_at("cache chunk 0 built, not renamed", "os.rename",
                r"/\.chunk-0-00000\.safetensors\.\d+\.tmp -> ")
    assert list(cache.glob("*/.chunk-0-*.tmp")) and not list(cache.glob("*/chunk-*"))
    # 2: chunk 0 built and training under way; checkpoints every 3 steps.
    cmd.kill_when("chunk 0 done, past a checkpoint",
                  lambda: _checkpoint_step(_one(cmd, "distill-*")) >= 3)
    (chunk0,) = cache.glob("*/chunk-0-00000.safetensors")
    ino = chunk0.stat().st_ino
    d = _one(cmd, "distill-*")
    before, step = _metrics(d), _checkpoint_step(d)
    # 3: during the build of chunk 1 (at step 20), after the checkpoint at step 18.
    cmd.kill_at("cache chunk 1 built, not renamed", "os.rename",
                r"/\.chunk-0-00001\.safetensors\.\d+\.tmp -> ")
    assert_resumed(d, before, step)
    before, step = _metrics(d), _checkpoint_step(d)
    assert step == 18
    cmd.finish()
    assert_resumed(d, before, step)
    s = _read(d / "summary.json")
    # Chunk 0, built before kill 2, was reused by both re-runs, never rewritten; the
    # last re-run built only chunk 1.
    assert chunk0.stat().st_ino == ino
    assert s["teacher_outputs"]["mode"] == "full" and s["teacher_outputs"]["built_chunks"] == 1
    same_summary(d / "summary.json", _stage(reference, "distill-noised") / "summary.json")


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
    cmd.kill_in_swap("distill-*")
    before, step = _metrics(d), _read(d / "state.old" / "counters.json")["step"]
    cmd.finish()
    assert_resumed(d, before, step)
    assert not (cmd.run_dir / "cache").exists()
    same_summary(d / "summary.json", next(want.glob(f"{NAME}/stages/distill-*/summary.json")))


def test_attack(reference: Path, tmp_path: Path) -> None:
    model = _stage(reference, "unlearn")
    cmd = Command(tmp_path, ["attack", str(model)])
    runs = cmd.run_dir / "attacks"
    # The grid: 2 lrs x 2 seeds, each run kept in runs/ when it finishes.
    cmd.kill_when("one run finished", lambda: list(runs.glob("*/runs/*.json")))
    first = {p: (p.stat().st_ino, p.read_bytes()) for p in runs.glob("*/runs/*.json")}
    # The re-run's second run written to its temp file, not yet renamed: redone.
    cmd.kill_at("a run's result written, not renamed", "os.rename",
                r"/runs/\.lr[^/]*\.json\.\d+\.tmp -> ", nth=2)
    assert len(list(runs.glob("*/runs/*.json"))) == 2
    cmd.finish()
    (d,) = [p for p in runs.iterdir() if p.is_dir()]
    # The runs finished before the kill were kept as they were, not run again.
    assert {p: (p.stat().st_ino, p.read_bytes()) for p in first} == first
    (want,) = reference.glob(f"attacks/{d.name}")
    same_summary(d / "summary.json", want / "summary.json")
    same_summary(d / "relearn.json", want / "relearn.json")


def test_run(reference: Path, tmp_path: Path) -> None:
    cmd = Command(tmp_path, ["run"])
    base = "pretrain-base-*"
    cmd.kill_in_checkpoint_write(base)
    d = _one(cmd, base)
    before, step = _metrics(d), _checkpoint_step(d)
    cmd.kill_at("cache chunk 0 built, not renamed", "os.rename",
                r"/\.chunk-0-00000\.safetensors\.\d+\.tmp -> ")
    assert (d / "summary.json").exists()
    assert_resumed(d, before, step)
    cmd.kill_when("an attack run finished", lambda: list(cmd.run_dir.glob("attacks/*/runs/*")))
    cmd.finish()
    same_summary(cmd.run_dir / "summary.json", reference / "summary.json")


# ------------------------------------------------ windows shorter than a poll


def test_torn_metrics_line_is_dropped_on_resume(tmp_path: Path) -> None:
    """A kill inside an append leaves half a line: resuming must not choke on it."""
    from undo.checkpoint import MetricsLog

    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    MetricsLog(p, resume_step=2)
    assert p.read_text() == '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n'


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
        mp.setattr("undo.checkpoint.shutil.rmtree", rmtree_killed_midway)
        with pytest.raises(KeyboardInterrupt):
            train_micro(tokenizer, bench, tmp_path)
    assert "model.safetensors" in removed
    assert train_micro(tokenizer, bench, tmp_path).steps == 6


def test_half_removed_old_checkpoint_is_cleared(tokenizer: Any, bench: Any,
                                                tmp_path: Path) -> None:
    """A kill while `save_state` removes `state.old` leaves part of it beside a complete
    `state`; the next checkpoint swap must still work."""
    with pytest.raises(KeyboardInterrupt):
        train_micro(tokenizer, bench, tmp_path, stop_at=3)  # checkpoint at step 2
    old = tmp_path / "state.old"
    old.mkdir()
    (old / "done").write_text("ok\n")
    (old / "optimizer.bin").write_bytes((tmp_path / "state" / "optimizer.bin").read_bytes())
    r = train_micro(tokenizer, bench, tmp_path)  # resumes, checkpoints at step 4
    assert r.steps == 6 and not old.exists()
