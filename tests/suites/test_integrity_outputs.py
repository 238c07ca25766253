"""Integrity of the outputs outside stage folders (issue 25, docs/integrity.md): the
adaptive search's SQLite, search.json and replays, the sweep's table, `undo noise`'s
folder and `undo export`'s release folder. Each is damaged and the test shows it is
detected before use and the documented action taken: derived files rebuilt equal to the
undamaged ones, results stopped with one message and nothing changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_integrity import DAMAGES, SAYS, _files, _one

from tiny_study import NAME, SETTINGS, SMOKE, strip
from undo import integrity
from undo.artifacts import model_folder
from undo.cli import main
from undo.config import ModelConfig
from undo.models import build_model, save_model
from undo.release import ExportError, push_folder


def _micro(path: Path, tokenizer: Any, seed: int = 0) -> Path:
    save_model(build_model(ModelConfig(preset="micro"), tokenizer, seed=seed), tokenizer, path)
    return path


def _errors(capsys: Any) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("undo:")]


def _verify(folder: Path, capsys: Any) -> tuple[int, str]:
    """`undo verify folder`: its exit code and what it printed."""
    capsys.readouterr()
    rc = main(["verify", str(folder)])
    return rc, capsys.readouterr().out


# ------------------------------------------------------------------- undo noise


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_noise_folder_stops_its_use(tokenizer: Any, tmp_path: Path, damage: str,
                                            capsys: Any) -> None:
    src = _micro(tmp_path / "src", tokenizer)
    out = tmp_path / "noised"
    def noise(model: Path, to: Path) -> list[str]:
        return ["noise", "noise.alpha=0.5", str(model), "--seed", "1", "--out", str(to)]

    assert main(noise(src, out)) == 0
    rc, said = _verify(out, capsys)
    assert rc == 0 and said.startswith("intact ")
    want = (out / "model.safetensors").read_bytes()
    DAMAGES[damage](out / "model.safetensors")
    rc, said = _verify(out, capsys)
    assert rc == 1 and "damaged" in said and SAYS[damage] in said
    # Used as a model (noised again): stops before loading, writes nothing.
    assert main(noise(out, tmp_path / "again")) == 2
    (err,) = _errors(capsys)
    assert "model.safetensors" in err and SAYS[damage] in err
    assert f"Write it again with `undo noise MODEL --out {out.resolve()}`" in err
    assert not (tmp_path / "again").exists()
    # What the message says to do gives the undamaged folder.
    assert main(noise(src, out)) == 0
    assert (out / "model.safetensors").read_bytes() == want
    assert _verify(out, capsys)[0] == 0


# ------------------------------------------------------------------- the sweep


@pytest.mark.slow
def test_damaged_sweep_table_is_rebuilt(tokenizer: Any, tmp_path: Path, capsys: Any) -> None:
    base = _micro(tmp_path / "base", tokenizer)
    cmd = ["sweep", str(SMOKE), f"out_dir={tmp_path / 'runs'}", "unlearn.steps=2",
           "unlearn.batch_size=8", "sweep.grid={lr: [1e-4, 1e-3]}",
           "sweep.min_retain_ratio=0.0", "threads=1", str(base)]
    assert main(cmd) == 0
    run = tmp_path / "runs" / NAME
    d = _one(run, "sweeps/*")
    want = {p: (d / p).read_bytes() for p in ("sweep.json", "selected.yaml")}
    DAMAGES["truncated"](d / "sweep.json")
    DAMAGES["zeroed"](d / "selected.yaml")
    rc, said = _verify(run, capsys)
    assert rc == 1
    for name in want:
        line = next(ln for ln in said.splitlines() if ln.endswith(" -> rebuilt when next needed")
                    and f"{name}:" in ln)
        assert line.startswith("rebuild ")
    assert main(cmd) == 0  # the unlearn stages are reused (checked); the table rewritten
    assert {p: (d / p).read_bytes() for p in want} == want
    assert _verify(run, capsys)[0] == 0


# ------------------------------------------------------------------- the search

SEARCH = ["threads=1", "progress=false", "data.eval_items_per_op=8", "attack.steps=4",
          "attack.budgets=[0,4]", "attack.eval_every=2", "attack.batch_size=8",
          "attack.curve_items_per_op=2", "attack.seeds=[0]", "attack.lrs=[0.001]",
          "attack.workers=1", "search.batch_sizes=[8]", "search.lora_ranks=[0]",
          "search.startup_trials=1"]


@pytest.mark.slow
def test_search_outputs_are_checked(tokenizer: Any, tmp_path: Path, capsys: Any) -> None:
    models = [str(_micro(tmp_path / f"m{s}", tokenizer, seed=s)) for s in (0, 1)]
    cmd = ["attack", f"out_dir={tmp_path / 'runs'}", *SEARCH, *models, "--search", "2"]
    assert main(cmd) == 0
    run = _one(tmp_path / "runs", "*")
    folder = _one(run, "attacks/m0-*")
    db, record = folder / "search.db", folder / "search.json"
    (replay,) = folder.glob("replays/*.json")
    want = strip(json.loads(record.read_text()))
    rc, said = _verify(run, capsys)
    assert rc == 0 and f"intact     {db.relative_to(run)}" in said

    # Derived: a replay file and search.json are rebuilt, equal to the undamaged ones.
    DAMAGES["zeroed"](replay)
    DAMAGES["flipped"](record)
    rc, said = _verify(run, capsys)
    assert rc == 1 and f"rebuild    {replay.relative_to(run)}" in said
    assert f"rebuild    {record.relative_to(run)}" in said
    assert main(cmd) == 0
    err = _errors(capsys)
    assert len(err) == 1 and "search replay file damaged" in err[0] and replay.name in err[0]
    assert strip(json.loads(integrity.read_file(record))) == want
    assert integrity.read_file(replay)

    # A result: a damaged search.db stops the search before it is opened.
    DAMAGES["flipped"](db)
    rc, said = _verify(run, capsys)
    assert rc == 1 and f"damaged    {db.relative_to(run)}" in said
    before = _files(run)
    assert main(cmd) == 2
    (err,) = _errors(capsys)
    assert str(db) in err and SAYS["flipped"] in err and "Delete it" in err
    assert _files(run) == before  # nothing run, nothing rewritten
    # What it says: start the search over; it ends where the undamaged one did.
    assert main([*cmd, "--force"]) == 0
    assert strip(json.loads(integrity.read_file(record))) == want
    assert _verify(run, capsys)[0] == 0


# ------------------------------------------------------------------- undo export


@pytest.mark.slow
def test_export_folder_has_a_manifest(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "runs"
    assert main(["run", str(SMOKE), *SETTINGS, f"out_dir={out}"]) == 0
    run = out / NAME
    # Every stage records the seconds its integrity work took (experiments/integrity_overhead.py).
    metas = [json.loads(p.read_text()) for p in run.glob("*/*/meta.json")]
    assert len(metas) == 5 and all(m["integrity_seconds"] > 0 for m in metas)
    release = tmp_path / "release"
    export = ["export", str(run), "--model", "undo-a0.5-s0", "--out"]
    assert main([*export, str(release)]) == 0
    rc, said = _verify(release, capsys)
    assert rc == 0 and said.splitlines()[0].startswith("intact ")
    DAMAGES["flipped"](release / "model.safetensors")
    rc, said = _verify(release, capsys)
    assert rc == 1 and "model.safetensors" in said and "export again" in said
    with pytest.raises(integrity.IntegrityError, match="export again"):
        model_folder(release)
    with pytest.raises(ExportError, match="nothing was pushed"):
        push_folder(release, "someone/undo-test")  # refused before any hub call
    # The run's summary.json (the card's numbers): checked; `undo run` rebuilds it.
    summary = run / "summary.json"
    want = summary.read_bytes()
    DAMAGES["zeroed"](summary)
    rc, said = _verify(run, capsys)
    assert rc == 1 and "rebuild    summary.json" in said
    assert main([*export, str(tmp_path / "again")]) == 2
    (err,) = _errors(capsys)
    assert str(summary) in err and SAYS["zeroed"] in err and "undo run" in err
    # Nor drawn, even when the damage still reads as a valid summary (a number changed):
    # `undo report` refuses it and leaves the report as it was.
    tampered = json.loads(want)
    tampered["models"][0]["metrics"] = {k: 0.0 for k in tampered["models"][0]["metrics"]}
    summary.write_text(json.dumps(tampered))
    page = (run / "report.html").read_bytes()
    assert main(["report", str(run)]) == 2
    (err,) = _errors(capsys)
    assert str(summary) in err and "undo run" in err
    assert (run / "report.html").read_bytes() == page
    assert main(["run", str(SMOKE), *SETTINGS, f"out_dir={out}"]) == 0
    assert strip(json.loads(summary.read_text())) == strip(json.loads(want))
    assert _verify(run, capsys)[0] == 0
    # The evidence the card quotes is checked before it is copied.
    (entry,) = [m for m in json.loads((run / "summary.json").read_text())["models"]
                if m["name"] == "undo-a0.5-s0"]
    relearn = Path(entry["attack"]["relearn_json"])
    DAMAGES["truncated"](relearn)
    assert main([*export, str(tmp_path / "again")]) == 2
    (err,) = _errors(capsys)
    assert "relearn.json" in err and "--force attack" in err
    assert not (tmp_path / "again").exists() and not list(tmp_path.glob(".again*"))
