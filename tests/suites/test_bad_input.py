"""Bad input through the command line: one clear message, exit status 2, no traceback,
and an existing run folder left exactly as it was.

Every case fails before any training. Each runs in this process through
`undo.cli.main` (fast, part of the quick subset); one of each kind also runs as a real
`python -m undo.cli` process (slow: ~6 s of imports per process).

A read-only output folder and a full disk are real: small tmpfs mounts (needs root, as
on CI's containers; skipped where mount is refused).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

import undo
from undo.cli import main
from undo.config import load_config
from undo.study.run_folder import write_run_config

SRC = Path(undo.__file__).resolve().parents[1]
SMOKE = SRC.parent / "configs" / "arithmetic" / "smoke.yaml"
RUN = "arithmetic-smoke"  # the smoke config's run name


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]  # {smoke}, {runs} and {tmp} are filled in
    message: str  # a fragment of the one error line
    lines: int = 1  # argparse prints its usage line first
    mount: str | None = None  # "ro" or "full": {runs} is on such a tmpfs

    def args(self, runs: Path, tmp: Path) -> list[str]:
        return [a.format(smoke=SMOKE, runs=runs, tmp=tmp) for a in self.argv]


def _run(*extra: str, cmd: str = "run") -> tuple[str, ...]:
    return (cmd, "{smoke}", "out_dir={runs}", *extra)


CASES = [
    Case("malformed-yaml", ("run", "{tmp}/bad.yaml", "out_dir={runs}"), "not valid YAML"),
    Case("yaml-not-a-mapping", ("run", "{tmp}/list.yaml"), "top level must be a mapping"),
    Case("missing-config-file", ("run", "{tmp}/nope.yaml"), "config file not found"),
    Case("unknown-key-in-file", ("run", "{tmp}/unknown.yaml"),
         "unknown config key 'colour'; valid keys here: attack, data"),
    Case("unknown-key", _run("pretrain.stepz=3"),
         "unknown config key 'pretrain.stepz'; valid keys here: batch_size"),
    Case("not-a-section", _run("seed.x=3"), "override 'seed.x': 'seed' is not a section"),
    Case("wrong-type-int", _run("pretrain.steps=many"),
         "config key 'pretrain.steps': got 'many'; valid: an integer"),
    Case("wrong-type-bool", _run("progress=maybe"),
         "config key 'progress': got 'maybe'; valid: true or false"),
    Case("wrong-type-list", _run("attack.lrs=0.1"),
         "config key 'attack.lrs': got 0.1; valid: a list"),
    Case("alpha-above-1", _run("noise.alpha=1.5"),
         "config key 'noise.alpha': got 1.5; valid: a number in [0, 1]"),
    Case("beta-below-0", _run("noise.beta=-0.1"),
         "config key 'noise.beta': got -0.1; valid: a number in [0, 1]"),
    Case("study-alpha-above-1", _run("study.alphas=[0.5, 2]"),
         "config key 'study.alphas': got [0.5, 2.0]; valid: numbers in [0, 1]"),
    Case("zero-steps", _run("pretrain.steps=0"),
         "config key 'pretrain.steps': got 0; valid: a positive integer"),
    Case("negative-steps", _run("distill.steps=-5"),
         "config key 'distill.steps': got -5; valid: a positive integer"),
    Case("zero-attack-steps", _run("attack.steps=0"),
         "config key 'attack.steps': got 0; valid: a positive integer"),
    Case("zero-batch", _run("unlearn.batch_size=0"),
         "config key 'unlearn.batch_size': got 0; valid: a positive integer"),
    Case("negative-batch", _run("attack.batch_size=-1"),
         "config key 'attack.batch_size': got -1; valid: a positive integer"),
    Case("zero-lr", _run("pretrain.lr=0"),
         "config key 'pretrain.lr': got 0.0; valid: a positive number"),
    Case("negative-lr", _run("distill.lr=-1e-3"),
         "config key 'distill.lr': got -0.001; valid: a positive number"),
    Case("bad-data-order", _run("distill.data_order=random"),
         "distill.data_order"),
    Case("bad-distill-inputs", _run("distill.inputs=retain"),
         "'distill.inputs': got 'retain'; valid: one of 'mix', 'filtered'"),
    Case("zero-attack-lr", _run("attack.lrs=[1e-3, 0]"),
         "config key 'attack.lrs': got [0.001, 0.0]; valid: a non-empty list of positive"),
    Case("unknown-method", _run("unlearn.method=maxnet"),
         "config key 'unlearn.method': got 'maxnet'; valid: grad_ascent, grad_diff, maxent"),
    Case("unknown-method-option", _run("unlearn.method_args.beta=2"),
         "unknown config key 'unlearn.method_args.beta'; valid keys here: positions, "
         "retain, weighting (method 'maxent')"),
    Case("bad-method-option", _run("unlearn.method=npo", "unlearn.method_args.beta=0"),
         "config key 'unlearn.method_args.beta': got 0.0; valid: a positive number "
         "(method 'npo')"),
    Case("unknown-preset", _run("model.preset=huge"),
         "config key 'model.preset': got 'huge'; valid: tiny, small, medium, large, micro, gemma2-0.1b, gemma2-0.3b"),
    Case("unknown-stage-kind", _run("study.stages=[atack]"),
         "study.stages: got ['atack']; valid stage kinds: pretrain, unlearn, distill, "
         "oracle, attack"),
    Case("unknown-force-kind", _run("--force", "atack"),
         "--force: got ['atack']; valid stage kinds"),
    Case("duplicate-seeds", _run("study.seeds=[1, 1]"),
         "config key 'study.seeds': got [1, 1]; valid: a non-empty list of distinct"),
    Case("name-escapes-out-dir", _run("name=.."), "config key 'name': got '..'"),
    Case("stray-word-config", ("config", "{smoke}", "seed"),
         "undo config: unexpected argument 'seed', neither a .yaml config file nor a "
         "key=value override (e.g. seed=VALUE)"),
    Case("stray-word-run", _run("seed"), "undo run: unexpected argument 'seed'"),
    Case("unknown-option", _run("--nope"), "unrecognized arguments: --nope", lines=2),
    Case("unknown-command", ("nope",), "invalid choice: 'nope'", lines=2),
    Case("other-config-in-run-folder", _run("seed=5", "pretrain.steps=7"),
         "holds the results of a different config (pretrain.steps: 30 -> 7); its summary "
         "and report would mix two studies"),
    Case("read-only-output", _run(), "Read-only file system", mount="ro"),
    Case("disk-full", _run(), "No space left on device", mount="full"),
]


# One case of each kind for the real-process run (each process spends ~6 s importing
# undo, whose __init__ imports every stage; all 35 took 4.5 min on 2 busy cores).
PROCESS_CASES = {"malformed-yaml", "unknown-key", "wrong-type-int", "alpha-above-1",
                 "zero-lr", "unknown-method-option", "stray-word-config", "unknown-option",
                 "other-config-in-run-folder", "read-only-output", "disk-full"}


def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every path under root: a file's (mtime_ns, sha256), a folder's presence. (A
    folder's mtime moves when a temp file comes and goes: a failed write cleaned up.)"""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(
        p.read_bytes()).hexdigest()) if p.is_file() else (0, "folder")
        for p in root.rglob("*")}


def _make_run_folder(runs: Path) -> None:
    """A run folder as `undo run` leaves it (config, a finished stage, a summary)."""
    write_run_config(load_config(SMOKE, [f"out_dir={runs}"]))
    stage = runs / RUN / "stages" / "pretrain-base-0123456789"
    (stage / "model").mkdir(parents=True)
    (stage / "summary.json").write_text('{"stage": "pretrain-base"}\n')
    (stage / "model" / "config.json").write_text("{}\n")
    (runs / RUN / "summary.json").write_text("{}\n")


def _write_inputs(tmp: Path) -> None:
    (tmp / "bad.yaml").write_text("pretrain:\n  steps: [3\n")
    (tmp / "list.yaml").write_text("- seed\n- 3\n")
    (tmp / "unknown.yaml").write_text("seed: 1\ncolour: blue\n")


@contextlib.contextmanager
def _tmpfs(where: Path, kind: str | None) -> Iterator[None]:
    """`where` on a 1 MiB tmpfs holding the run folder: read-only or full."""
    if kind is None:
        yield
        return
    where.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); read-only and full-disk "
                    "cases not run")
    try:
        _make_run_folder(where)
        if kind == "ro":
            subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        else:
            with contextlib.suppress(OSError), (where / "filler").open("wb") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
        yield
    finally:
        subprocess.run(["umount", str(where)], check=True)


def _prepare(case: Case, tmp: Path) -> Path:
    _write_inputs(tmp)
    runs = tmp / "runs"
    if case.mount is None:
        _make_run_folder(runs)
    return runs


def _check(case: Case, rc: int, err: str, before: dict, after: dict) -> None:
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc == 2, (case.id, rc, err)
    assert "Traceback" not in err, (case.id, err)
    assert len(lines) == case.lines, (case.id, err)
    assert lines[-1].startswith("undo: error: "), (case.id, err)
    assert case.message in lines[-1], (case.id, err)
    assert after == before, (case.id, "the run folder changed")


def _in_process(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors
        rc = int(e.code or 0)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_in_process(case: Case, tmp_path: Path, capsys) -> None:
    runs = _prepare(case, tmp_path)
    with _tmpfs(runs, case.mount):
        before = _snapshot(runs)
        rc, err = _in_process(case.args(runs, tmp_path), capsys)
        _check(case, rc, err, before, _snapshot(runs))


@pytest.mark.slow
def test_bad_input_as_real_processes(tmp_path: Path) -> None:
    """PROCESS_CASES through `python -m undo.cli`, four processes at a time."""
    assert {c.id for c in CASES} >= PROCESS_CASES
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONWARNINGS": "ignore"}
    with contextlib.ExitStack() as mounts:
        cases, befores = [], {}
        for c in (c for c in CASES if c.id in PROCESS_CASES):
            tmp = tmp_path / c.id
            tmp.mkdir()
            runs = _prepare(c, tmp)
            try:
                mounts.enter_context(_tmpfs(runs, c.mount))
            except pytest.skip.Exception:
                continue  # no tmpfs here: the in-process test reports the skip
            cases.append(c)
            befores[c.id] = _snapshot(runs)

        def run(c: Case) -> subprocess.CompletedProcess:
            tmp = tmp_path / c.id
            return subprocess.run([sys.executable, "-m", "undo.cli",
                                   *c.args(tmp / "runs", tmp)],
                                  capture_output=True, text=True, env=env, cwd=tmp)

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(run, cases))
        for c, r in zip(cases, results, strict=True):
            _check(c, r.returncode, r.stderr, befores[c.id],
                   _snapshot(tmp_path / c.id / "runs"))
