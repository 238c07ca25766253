"""Nothing corrupt is ever used (issue 25, undo.integrity, docs/integrity.md).

Each file a later step trusts is damaged in three ways (4 KB of flipped bytes in the
middle, truncation to half, every byte zeroed: the size check catches the second, only
the hash the other two), and the test shows it is detected before use and the documented
action is taken:

- a teacher-cache chunk and an attack run file (derived data) are rebuilt, reported, and
  the result equals the undamaged run's;
- a reused stage's weights and a resume checkpoint stop the run with one message naming
  the file and what to do, and nothing downstream is written; doing what it says gives
  the undamaged result.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tiny_study import NAME, SETTINGS, SMOKE, same_summary, strip, train_micro
from undo import integrity
from undo.cli import main
from undo.config import ModelConfig
from undo.models import build_model


def _flip(p: Path) -> None:
    b = bytearray(p.read_bytes())
    n = min(4096, len(b) // 4)
    mid = len(b) // 2 - n // 2
    b[mid:mid + n] = bytes(x ^ 0xFF for x in b[mid:mid + n])
    p.write_bytes(bytes(b))


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:p.stat().st_size // 2])


def _zero(p: Path) -> None:
    p.write_bytes(bytes(p.stat().st_size))


DAMAGES: dict[str, Callable[[Path], None]] = {"flipped": _flip, "truncated": _truncate,
                                              "zeroed": _zero}
# What verify says for each: a same-size change shows only in the hash.
SAYS = {"flipped": "differs from its recorded hash", "truncated": "truncated",
        "zeroed": "differs from its recorded hash"}


# ---------------------------------------------------------------- the module


@pytest.mark.parametrize("damage", DAMAGES)
def test_manifest_finds_each_damage(tmp_path: Path, damage: str) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.bin").write_bytes(bytes(range(256)) * 64)
    (tmp_path / "a.json").write_text('{"x": 1}')
    (tmp_path / ".lock").write_text("")  # hidden: not covered
    integrity.write_manifest(tmp_path)
    assert integrity.verify(tmp_path / integrity.MANIFEST).intact == ["a.json", "model/w.bin"]
    DAMAGES[damage](tmp_path / "model" / "w.bin")
    v = integrity.verify(tmp_path / integrity.MANIFEST)
    assert not v.ok and v.intact == ["a.json"]
    assert SAYS[damage] in v.damaged["model/w.bin"]


def test_missing_file_and_unreadable_manifest(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    m = integrity.write_manifest(tmp_path)
    (tmp_path / "b").unlink()
    v = integrity.verify(m)
    assert v.missing == ["b"] and v.problems() == ["b: missing"]
    m.write_text('{"files": ')  # the manifest itself torn
    assert "unreadable" in integrity.verify(m).damaged[integrity.MANIFEST]


@pytest.mark.parametrize("damage", DAMAGES)
def test_file_with_sidecar_is_read_only_when_intact(tmp_path: Path, damage: str) -> None:
    f = integrity.write_file(tmp_path / "chunk-0-00000.safetensors", b"x" * 10_000)
    # The sidecar is hidden: a reader's glob for the data (`chunk-*`) never meets it.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".chunk-0-00000.safetensors.manifest", "chunk-0-00000.safetensors"]
    assert integrity.read_file(f) == b"x" * 10_000
    DAMAGES[damage](f)
    with pytest.raises(integrity.IntegrityError, match=SAYS[damage]):
        integrity.read_file(f)
    integrity.sidecar(f).unlink()
    with pytest.raises(integrity.IntegrityError, match="no manifest"):
        integrity.read_file(f)


def test_sidecar_covers_only_its_file(tmp_path: Path) -> None:
    """A sidecar names its one file, not the folder's others (chunks share a folder: the
    n-th chunk's manifest would otherwise hash every earlier one)."""
    a = integrity.write_file(tmp_path / "a.json", b"1")
    b = integrity.write_file(tmp_path / "b.json", b"2")
    assert integrity.verify(integrity.sidecar(b)).intact == ["b.json"]
    _zero(a)
    assert integrity.verify(integrity.sidecar(b)).ok
    assert [(f.status, f.path.name) for f in integrity.scan(tmp_path)] == [
        ("rebuild", "a.json"), ("intact", "b.json")]


def test_search_db_without_manifest_is_unverified(tmp_path: Path) -> None:
    (tmp_path / "search.db").write_bytes(b"SQLite format 3\0")
    assert [(f.status, f.path.name) for f in integrity.scan(tmp_path)] == [
        ("unverified", "search.db")]
    integrity.write_manifest(tmp_path, [tmp_path / "search.db"],
                             path=integrity.sidecar(tmp_path / "search.db"))
    _flip(tmp_path / "search.db")
    (f,) = integrity.scan(tmp_path)
    assert f.status == "damaged" and "the search stops" in f.detail
    with pytest.raises(integrity.IntegrityError, match="search.db is damaged.*REMEDY"):
        integrity.check_file(tmp_path / "search.db", "REMEDY")


def test_work_is_counted_and_can_be_switched_off(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    integrity.take_spent()
    f = integrity.write_file(tmp_path / "on.json", b"x" * 100_000)
    integrity.read_file(f)
    assert integrity.take_spent() > 0 and integrity.take_spent() == 0
    # UNDO_INTEGRITY=off (experiments/integrity_overhead.py only): nothing written or checked
    monkeypatch.setenv(integrity.SWITCH, "off")
    g = integrity.write_file(tmp_path / "off.json", b"y")
    assert not integrity.sidecar(g).exists() and integrity.read_file(g) == b"y"
    _zero(f)
    assert integrity.read_file(f) == bytes(100_000)  # not checked
    assert integrity.take_spent() == 0
    # `undo verify` checks whatever the switch says.
    assert not integrity.verify(integrity.sidecar(f)).ok


def test_force_kind_names_the_stage_kind() -> None:
    assert integrity.force_kind(Path("run/stages/pretrain-gold-0a1b")) == "pretrain"
    assert integrity.force_kind(Path("run/stages/unlearn-maxent-0a1b")) == "unlearn"
    # an attack folder is named by the model it attacked
    assert integrity.force_kind(Path("run/attacks/unlearn-maxent-0a1b-2c3d")) == "attack"


# ------------------------------------------------------------ whole commands


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An undamaged `undo run` of the tiny study: what every repaired run must equal."""
    out = tmp_path_factory.mktemp("ref")
    assert main(["run", str(SMOKE), *SETTINGS, f"out_dir={out}"]) == 0
    return out / NAME


def _copy(reference: Path, tmp_path: Path) -> Path:
    shutil.copytree(reference.parent, tmp_path / "runs")
    return tmp_path / "runs" / NAME


def _one(run: Path, pattern: str) -> Path:
    (d,) = run.glob(pattern)
    return d


def _files(root: Path) -> dict[str, bytes]:
    """Every file under `root` and its bytes, except hidden ones (locks) and a run
    folder's config.yaml (rewritten at every start: it records the latest out_dir)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".") and p != root / "config.yaml"}


def _weights_equal(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.slow
def test_undo_verify_of_an_intact_run(reference: Path, capsys: Any) -> None:
    assert main(["verify", str(reference)]) == 0
    out = capsys.readouterr().out
    # 3 stages, 2 attack folders with 4 run files each, 2 cache chunks, the run's summary
    # and its config.yaml
    assert out.count("intact ") == 3 + 2 + 8 + 2 + 1 + 1
    assert "intact     config.yaml  1 file" in out
    assert "0 damaged, 0 would be rebuilt, 0 unverified" in out


@pytest.mark.slow
@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_cache_chunk_is_rebuilt(reference: Path, tmp_path: Path, damage: str,
                                        capsys: Any) -> None:
    run = _copy(reference, tmp_path)
    chunk = _one(run, "cache/*/chunk-0-00001.safetensors")
    DAMAGES[damage](chunk)
    assert main(["verify", str(run)]) == 1
    assert f"rebuild    {chunk.relative_to(run)}" in capsys.readouterr().out
    teacher, base = _one(reference, "stages/unlearn-*"), _one(reference, "stages/pretrain-*")
    assert main(["distill", str(teacher), "--alpha", "0.5", "--seed", "0", "--base", str(base),
                 "--force", str(SMOKE), *SETTINGS, f"out_dir={run.parent}"]) == 0
    err = capsys.readouterr().err
    assert "teacher cache chunk damaged" in err and chunk.name in err and SAYS[damage] in err
    d = _one(run, "stages/distill-*")
    s = json.loads((d / "summary.json").read_text())
    # Reported in the summary too; only the damaged chunk was rebuilt, chunk 0 reused.
    assert list(s["teacher_outputs"]["rebuilt_chunks"]) == [chunk.name]
    assert s["teacher_outputs"]["built_chunks"] == 1
    assert integrity.read_file(chunk)  # intact again
    want = _one(reference, "stages/distill-*")
    same_summary(d / "summary.json", want / "summary.json")
    assert _weights_equal(d / "model" / "model.safetensors", want / "model" / "model.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_stage_weights_stop_the_study(reference: Path, tmp_path: Path, damage: str,
                                              capsys: Any) -> None:
    run = _copy(reference, tmp_path)
    # Only the pretraining stage kept: everything after it must be computed from it.
    for p in [*run.glob("stages/unlearn-*"), *run.glob("stages/distill-*"),
              run / "attacks", run / "cache", run / "plots"]:
        shutil.rmtree(p)
    for p in (run / "summary.json", run / "report.html"):
        p.unlink()
    weights = _one(run, "stages/pretrain-*/model/model.safetensors")
    DAMAGES[damage](weights)
    before = _files(run)
    assert main(["run", str(SMOKE), *SETTINGS, f"out_dir={run.parent}"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("undo:")]
    assert len(err) == 1 and err[0].startswith("undo: error: stage folder")
    assert "model/model.safetensors" in err[0] and SAYS[damage] in err[0]
    assert "--force pretrain" in err[0]
    assert _files(run) == before  # nothing downstream written, nothing changed
    # What the message says to do gives the undamaged study.
    assert main(["run", str(SMOKE), *SETTINGS, f"out_dir={run.parent}", "--force",
                 "pretrain"]) == 0
    assert strip(json.loads((run / "summary.json").read_text())) == strip(
        json.loads((reference / "summary.json").read_text()))


def _micro(tokenizer: Any, bench: Any, out: Path, stop_at: int | None = None) -> Any:
    """The model `train_micro` trained (6 steps, a checkpoint every 2)."""
    model = build_model(ModelConfig(preset="micro"), tokenizer, seed=0)
    train_micro(tokenizer, bench, out, stop_at, model=model)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_checkpoint_stops_the_resume(tokenizer: Any, bench: Any, tmp_path: Path,
                                             damage: str) -> None:
    want = _micro(tokenizer, bench, tmp_path / "whole")
    out = tmp_path / "stage"
    with pytest.raises(KeyboardInterrupt):
        _micro(tokenizer, bench, out, stop_at=5)  # checkpoint of step 4 on disk
    assert json.loads((out / "state" / "counters.json").read_text())["step"] == 4
    DAMAGES[damage](out / "state" / "model.safetensors")
    before = _files(out)
    with pytest.raises(integrity.IntegrityError) as e:
        _micro(tokenizer, bench, out)
    assert "model.safetensors" in str(e.value) and SAYS[damage] in str(e.value)
    assert f"Delete {out / 'state'}" in str(e.value)
    assert _files(out) == before  # nothing loaded, trained or logged
    # What the message says to do: the stage starts over and ends as if never damaged.
    shutil.rmtree(out / "state")
    got = _micro(tokenizer, bench, out)
    assert all(torch.equal(a, b) for a, b in zip(got.state_dict().values(),
                                                 want.state_dict().values(), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_attack_run_file_is_rerun(reference: Path, tmp_path: Path, damage: str,
                                          capsys: Any) -> None:
    want = _one(reference, "attacks/unlearn-*")
    # An interrupted grid: its four finished runs, no result yet.
    runs = tmp_path / "runs" / NAME / "attacks" / want.name / "runs"
    shutil.copytree(want / "runs", runs)
    bad = runs / "lr0.001-seed0.json"
    DAMAGES[damage](bad)
    kept = {p: p.stat().st_ino for p in runs.glob("*.json") if p != bad}
    model = _one(reference, "stages/unlearn-*")
    assert main(["attack", str(model), str(SMOKE), *SETTINGS,
                 f"out_dir={tmp_path / 'runs'}"]) == 0
    err = capsys.readouterr().err
    assert "attack run file damaged" in err and bad.name in err and "running it again" in err
    assert err.count("undo: ") == 1  # only that one run was redone
    assert {p: p.stat().st_ino for p in kept} == kept
    assert integrity.read_file(bad)
    d = runs.parent
    same_summary(d / "relearn.json", want / "relearn.json")
    same_summary(d / "summary.json", want / "summary.json")


@pytest.mark.slow
def test_stage_without_manifest_is_used_unverified(reference: Path, tmp_path: Path,
                                                   capsys: Any) -> None:
    """A stage an older undo wrote (no manifest) is reused, with a note, and `undo verify`
    counts it as unverified (exit 1)."""
    run = _copy(reference, tmp_path)
    stage = _one(run, "stages/pretrain-*")
    (stage / integrity.MANIFEST).unlink()
    assert main(["verify", str(run)]) == 1
    assert f"unverified {stage.relative_to(run)}" in capsys.readouterr().out
    assert main(["run", str(SMOKE), *SETTINGS, f"out_dir={run.parent}"]) == 0
    assert "has no manifest.json" in capsys.readouterr().err
