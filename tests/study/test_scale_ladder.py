"""The scale ladder (configs/scale/, experiments/scale_ladder.py): every rung plans with
`undo run --dry-run`, the presets span the ladder, and the ladder's JSON and figure are
built from two finished smoke-sized rungs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from undo.cli import main
from undo.config import load_config
from undo.configlib import ConfigError
from undo.models import PRESETS
from undo.report.views import fmt_ci

ROOT = Path(__file__).resolve().parents[2]
SCALE = ROOT / "configs" / "scale"
RUNGS = sorted(SCALE.glob("*.yaml"))
TEXT_SMOKE = ROOT / "configs" / "text" / "smoke.yaml"
CORPORA_ROOT = Path.home() / ".cache" / "undo" / "corpora"


def _ladder():
    spec = importlib.util.spec_from_file_location("scale_ladder",
                                                  ROOT / "experiments" / "scale_ladder.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _offline_data(path: Path) -> list[str]:
    """The language rungs read corpora scripts/corpora.sh builds; where they are not built
    the plan is made on shipped Python text instead (the plan reads no data: the model,
    windows and steps are the config's)."""
    cfg = load_config(path)
    if cfg.data.benchmark != "text":
        return []
    return ["data.forget=[{shipped: python-source}]", "data.retain=[{shipped: python-docs}]"]


@pytest.mark.parametrize("path", RUNGS, ids=[p.stem for p in RUNGS])
def test_every_scale_config_plans_with_dry_run(path, tmp_path, capsys):
    assert main(["run", "--dry-run", str(path), f"out_dir={tmp_path}",
                 *_offline_data(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"plan of study {load_config(path).name}")
    assert "nothing run, no weights loaded" in out and "to run:" in out
    assert not list(tmp_path.iterdir())  # nothing written


def test_the_ladder_spans_16x_parameters_and_keeps_the_studys_shape():
    ladder = _ladder()
    plans = {p.stem: ladder.planned(p) for p in RUNGS if p.stem.startswith("arithmetic-")}
    sizes = [plans[f"arithmetic-{s}"]["params"] for s in ("tiny", "small", "medium")]
    assert sizes == sorted(sizes) and sizes[-1] >= 16 * sizes[0] and sizes[-1] >= 8e6
    for stem, p in plans.items():
        cfg = load_config(SCALE / f"{stem}.yaml")
        assert cfg.study.oracles and cfg.study.unlearn_distill
        assert len(cfg.study.alphas) >= 3
        assert set(cfg.study.attacks) == {"paper", "forget_only"}
        assert p["planned_flops"]["oracle"] > 0
    # CPU rungs: the pretraining rule keeps tiny's token budget; LR scales as 1/width.
    tiny = load_config(SCALE / "arithmetic-tiny.yaml")
    for s in ("small", "medium", "large"):
        cfg = load_config(SCALE / f"arithmetic-{s}.yaml")
        assert cfg.pretrain.steps * cfg.pretrain.batch_size == \
            tiny.pretrain.steps * tiny.pretrain.batch_size
        ratio = PRESETS["tiny"]["hidden_size"] / PRESETS[s]["hidden_size"]
        assert cfg.pretrain.lr == pytest.approx(tiny.pretrain.lr * ratio, rel=1e-2)
        assert cfg.distill.lr == pytest.approx(tiny.distill.lr * ratio, rel=1e-2)
    # Language: tiny and a rung >= 8x larger, each with the paper's mix and filtered inputs.
    lang = {p.stem: load_config(p) for p in RUNGS if p.stem.startswith("language-")}
    assert {c.distill.inputs for c in lang.values()} == {"mix", "filtered"}
    small, big = (ladder.planned(SCALE / f"language-{s}.yaml", _offline_data(
        SCALE / f"language-{s}.yaml"))["params"] for s in ("tiny", "medium"))
    assert big >= 8 * small


def test_cpu_estimate_is_planned_flops_times_measured_rates():
    ladder = _ladder()
    p = ladder.planned(ROOT / "configs" / "arithmetic" / "tiny.yaml")
    r = ladder.rates("arithmetic")
    # The default study's own plan at the measured rates gives back its measured work.
    prof = json.loads((ladder.RESULTS / "study_profile_no_oracles.json").read_text())
    busy = sum(prof["by_kind"][k]["duration_s"] for k in ("pretrain", "unlearn", "distill",
                                                          "attack"))
    assert ladder.estimate(p, r) == pytest.approx(busy / p["workers"], rel=1e-6)
    medium = ladder.planned(SCALE / "arithmetic-medium.yaml")
    assert ladder.estimate(medium, r) > 10 * ladder.estimate(p, r)


def test_gpu_script_refuses_without_cuda_and_estimates_from_the_plan(capsys):
    import torch

    spec = importlib.util.spec_from_file_location("gpu_scale",
                                                  ROOT / "experiments" / "gpu_scale.py")
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    if not torch.cuda.is_available():
        assert gpu.main([]) == 2
        assert "needs a CUDA GPU" in capsys.readouterr().err
    assert gpu.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "plan of study arithmetic-scale-gemma2-0.1b" in out
    assert "ESTIMATE" in out and "H100" in out and "MFU" in out


# ------------------------------------------------------------ the ladder from two rungs

# Two text smoke studies (CE keeps robustness defined on micro models, run seed 1 as in
# tests/study/test_pooled.py), the second twice as wide; oracles on in the smoke config.
RUN = ["threads=1", "progress=false", "study.workers=1", "study.seeds=[0,1]", "seed=1",
       "attack.precision=fp32"]
WIDER = ["model.hidden_size=64", "model.intermediate_size=128"]


@pytest.fixture(scope="module")
def rungs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ladder")
    for name, extra in (("rung-a", []), ("rung-b", WIDER)):
        assert main(["run", str(TEXT_SMOKE), f"out_dir={out}", f"name={name}", *RUN,
                     *extra]) == 0
    return out


@pytest.mark.slow
def test_ladder_builds_its_json_and_figure_from_two_finished_rungs(rungs, tmp_path,
                                                                   capsys):
    ladder = _ladder()
    (rungs / "rung-b.ladder-run.json").write_text(json.dumps({
        "command": "undo run configs/text/smoke.yaml name=rung-b", "wall_s": 12.5,
        "returncode": 0, "machine": {"cpu_model": "a CPU", "bf16": True}}))
    out = tmp_path / "ladder.json"
    assert ladder.main(["build", f"small={rungs / 'rung-a'}", f"wide={rungs / 'rung-b'}",
                        "--out", str(out), "--ladder", "language"]) == 0
    doc = json.loads(out.read_text())
    for f in doc["figure"]:
        assert Path(f).stat().st_size > 1000
    assert {Path(f).suffix for f in doc["figure"]} == {".png", ".svg"}
    a, b = doc["rungs"]
    assert (a["rung"], b["rung"]) == ("small", "wide") and a["params"] < b["params"]
    printed = capsys.readouterr().out
    for r in (a, b):
        summary = json.loads((rungs / r["name"] / "summary.json").read_text())
        iv = summary["intervals"]
        budget = str(summary["budgets"][-1])
        for attack, rob in r["robustness"].items():
            assert rob["arms"] == iv["attacks"][attack][budget]["robustness"]
        assert r["compute"] == iv["compute"]
        arm = "UNDO α=0.3"
        assert fmt_ci(r["compute"][arm]["total_fraction_of_gold_flops"], pct=True) in printed
        [contrast] = r["oracle_contrast"]
        wc = iv["attacks"]["paper"][budget]["worst_case"]
        assert contrast["paper"]["oracle-base"] == wc["oracle-base"]
        assert contrast["paper"]["oracle-random"] == wc["oracle-random"]
        [pre] = r["pretraining"]
        assert pre["metric"] == "retain/ce" and len(pre["base"]["curve"]) >= 2
        assert pre["base"]["plateaued"] in (True, False)
        [run] = r["runs"]
        env = summary["environment"]
        assert run["commit"] == env["undo"]["git"]["commit"]
        assert run["study_wall_time_s"] == summary["wall_time_s"]
        assert run["load_1min_at_task_ends"]["max"] >= run["load_1min_at_task_ends"]["min"]
    assert a["runs"][0]["command"] is None and "not recorded" in a["runs"][0]["recorded_by"]
    assert b["runs"][0]["machine"] == {"cpu_model": "a CPU", "bf16": True}
    assert any(r["robustness"]["paper"]["arms"][arm]["point"] is not None
               for r in (a, b) for arm in r["robustness"]["paper"]["arms"])

    # A pooled file stands for a rung too (its robustness and compute, its runs' oracles).
    pooled = tmp_path / "pooled.json"
    summary = json.loads((rungs / "rung-b" / "summary.json").read_text())
    pooled.write_text(json.dumps({
        "runs": [str(rungs / "rung-b")], "run_seeds": [1],
        "attacks": {k: {b2: {"robustness": v[b2]["robustness"]} for b2 in v}
                    for k, v in summary["intervals"]["attacks"].items()},
        "compute": summary["intervals"]["compute"]}))
    assert ladder.main(["build", f"small={rungs / 'rung-a'}", f"wide={pooled}",
                        "--out", str(tmp_path / "p.json")]) == 0
    p = json.loads((tmp_path / "p.json").read_text())["rungs"][1]
    assert p["pooled"] and p["robustness"]["paper"]["arms"] == b["robustness"]["paper"]["arms"]


def test_ladder_refuses_one_rung_and_mixed_settings(tmp_path, capsys):
    ladder = _ladder()
    assert ladder.main(["build", "--out-dir", str(tmp_path)]) == 2
    assert "at least two finished rungs" in capsys.readouterr().err
    assert ladder.main(["build", f"a={tmp_path}", f"b={tmp_path}"]) == 2
    assert "no summary.json" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="not found"):
        ladder.read_rung("x", tmp_path / "missing")
