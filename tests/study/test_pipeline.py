"""End-to-end: `undo run` on the smoke config (every stage, a micro model, seconds)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from undo.cli import main
from undo.config import load_config
from undo.report import load_summary
from undo.study.graph import run_study

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "arithmetic" / "smoke.yaml"
TIMING = {"wall_time_s", "train_time_s", "time", "environment", "tok_per_s", "stage_dir",
          "relearn_json", "torch_threads"}


def _strip(x):
    """Drop fields that legitimately differ between runs (timings, paths)."""
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if k not in TIMING}
    if isinstance(x, list):
        return [_strip(v) for v in x]
    return x


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["run", str(SMOKE), f"out_dir={out}"]) == 0
    return out / "arithmetic-smoke"


@pytest.mark.slow
def test_run_writes_artifacts_with_valid_schema(study):
    summary = load_summary(study / "summary.json")  # validates the schema
    kinds = {m["kind"] for m in summary["models"]}
    assert {"base", "gold", "unlearn_only", "unlearn_distill", "undo", "oracle_base",
            "oracle_random"} <= kinds
    assert sorted(m["alpha"] for m in summary["models"] if m["kind"] == "undo") == [0.3, 0.8]
    for m in summary["models"]:
        if m["kind"] != "base":
            assert set(m["attack"]["worst_case"]) == {"0", "5", "10"}
        assert (Path(m["stage_dir"]) / "model" / "model.safetensors").is_file()
    # Both attacks, each worst case with the retain metric after it and the utility flag.
    unlearn = next(m for m in summary["models"] if m["kind"] == "unlearn_only")
    for m in summary["models"]:
        if m["kind"] == "base":
            continue
        assert set(m["attacks"]) == {"paper", "forget_only"}
        assert m["attacks"]["paper"]["retain_fraction"] == pytest.approx(3 / 7)
        w = m["attacks"]["forget_only"]["worst_case"]["10"]
        assert w["retain"] is not None and isinstance(w["utility_ok"], bool)
        if m["kind"] in ("undo", "unlearn_distill"):  # compute including unlearning
            c = m["compute"]
            assert c["total_steps"] == c["steps"] + unlearn["compute"]["steps"]
            assert c["total_flops"] == pytest.approx(c["flops"] + unlearn["compute"]["flops"])
    assert set(summary["intervals"]["attacks"]) == {"paper", "forget_only"}
    for png in ("relearning", "frontier", "pareto"):
        assert (study / "plots" / f"{png}.png").stat().st_size > 10_000
    assert "data:image/png;base64" in (study / "report.html").read_text()
    assert (study / "config.yaml").is_file()


@pytest.mark.slow
def test_every_stage_and_the_summary_record_provenance(study):
    """undo's version and commit and the library versions beside every result."""
    summary = json.loads((study / "summary.json").read_text())
    metas = [json.loads(p.read_text()) for p in study.glob("*/*/meta.json")]
    assert len(metas) == len(list(study.glob("*/*/summary.json"))) > 10  # stages, attacks
    for env in [summary["environment"], *metas]:
        assert env["undo"]["version"] == "0.1.0"
        assert len(env["undo"]["git"]["commit"]) == 40  # the tests run from a checkout
        assert env["versions"]["torch"] and env["versions"]["transformers"]
        assert env["model_source"] is None  # a preset: built from config, no hub model


@pytest.mark.slow
def test_rerun_reuses_every_stage(study, capsys):
    before = {p: p.stat().st_mtime_ns for p in study.glob("stages/*/summary.json")}
    first = json.loads((study / "summary.json").read_text())
    assert main(["run", str(SMOKE), f"out_dir={study.parent}"]) == 0
    after = {p: p.stat().st_mtime_ns for p in study.glob("stages/*/summary.json")}
    assert before == after  # nothing retrained
    assert _strip(json.loads((study / "summary.json").read_text())) == _strip(first)


@pytest.mark.slow
def test_study_says_when_bfloat16_is_slow_on_this_cpu(study, monkeypatch, capsys):
    """On a CPU without bfloat16 instructions the default attacks (bf16-mixed) run slower
    than fp32: the study says so once, with the setting that avoids it."""
    import undo.runtime

    monkeypatch.setattr(undo.runtime, "bf16_is_slow", lambda device="auto": True)
    assert main(["run", str(SMOKE), f"out_dir={study.parent}"]) == 0
    out = capsys.readouterr().out
    assert out.count("no bfloat16 instructions") == 1
    assert "attack.precision=bf16-mixed" in out and "fp32 is the faster choice" in out


@pytest.mark.slow
def test_parallel_cached_rerun_starts_no_worker(study, monkeypatch, capsys):
    """With study.workers=2 every finished stage is taken as done in the main process:
    no job reaches a worker (their start-up was most of a cached re-run's time)."""
    from undo.study import executors

    def refuse(self, cfg, job, kind):
        raise AssertionError(f"{job.label} was sent to a worker")

    monkeypatch.setattr(executors.LocalProcesses, "submit", refuse)
    first = _strip(json.loads((study / "summary.json").read_text()))
    assert main(["run", str(SMOKE), f"out_dir={study.parent}", "study.workers=2"]) == 0
    again = _strip(json.loads((study / "summary.json").read_text()))
    assert again.pop("config")["study"]["workers"] == 2  # the one setting that differs
    first.pop("config")
    assert again == first


@pytest.mark.slow
def test_folder_runs_another_alpha_reusing_its_stages(study, tmp_path, capsys):
    """Another α in the same folder is accepted: the shared stages are reused, the new
    student is trained, the summary covers the latest run and runs.jsonl both runs."""
    folder = tmp_path / "arithmetic-smoke"
    shutil.copytree(study, folder)
    shared = {p: p.stat().st_mtime_ns for p in folder.glob("stages/*/summary.json")}
    assert main(["run", str(SMOKE), f"out_dir={tmp_path}", "study.alphas=[0.5]"]) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in shared.items())  # nothing retrained
    summary = json.loads((folder / "summary.json").read_text())
    assert [m["alpha"] for m in summary["models"] if m["kind"] == "undo"] == [0.5]
    assert len(list(folder.glob("stages/distill-noised-a*"))) == 3  # 0.3, 0.8 kept; 0.5 new
    runs = (folder / "runs.jsonl").read_text().splitlines()
    assert json.loads(runs[-1])["changed"] == ["study.alphas: [0.3, 0.8] -> [0.5]"]
    capsys.readouterr()


@pytest.mark.slow
def test_interrupted_study_resumes_to_same_summary(study, tmp_path, monkeypatch):
    import sys

    distill_module = sys.modules["undo.stages.distill"]  # `undo.stages.distill` is the function
    real = distill_module.distill
    calls = {"n": 0}

    def dies_on_second_call(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as if killed mid-study
        return real(*args, **kwargs)

    cfg = load_config(SMOKE, [f"out_dir={tmp_path}"])
    monkeypatch.setattr(distill_module, "distill", dies_on_second_call)
    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, log=lambda s: None)
    assert not (tmp_path / "arithmetic-smoke" / "summary.json").exists()
    monkeypatch.setattr(distill_module, "distill", real)
    resumed = run_study(cfg, log=lambda s: None)
    reference = json.loads((study / "summary.json").read_text())
    assert _strip(resumed)["models"] == _strip(reference)["models"]


@pytest.mark.slow
def test_report_regenerates_from_json_alone(study, tmp_path, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(study / "summary.json", copy / "summary.json")
    assert main(["report", str(copy)]) == 0
    assert (copy / "report.html").is_file() and (copy / "plots" / "frontier.png").is_file()
    assert "unlearn-only" in capsys.readouterr().out


def test_bad_stage_kind_is_a_clear_error(tmp_path, capsys):
    assert main(["run", str(SMOKE), f"out_dir={tmp_path}", "study.stages=[pretrain, nope]"]) == 2
    err = capsys.readouterr().err
    assert "study.stages" in err and "valid stage kinds" in err
    assert not any(tmp_path.iterdir())  # nothing written


def _graph(cfg, order: list[str]):
    from fixed_stage import Fixed

    from undo.stages.base import run_dir
    from undo.study.specs import Job

    def make(name):
        def build(deps):
            order.append(f"{name} after {sorted(deps)}")
            return Job(name, run_dir)  # an importable stage-like call: (cfg) -> Path
        return build

    return [Fixed(name="a", kind="pretrain", cfg=cfg, make=make("a")),
            Fixed(name="b", kind="unlearn", cfg=cfg, deps=("a",), make=make("b")),
            Fixed(name="c", kind="pretrain", cfg=cfg, make=make("c")),
            Fixed(name="d", kind="distill", cfg=cfg, deps=("b", "c"), make=make("d"))]


@pytest.mark.parametrize("workers", [1, 2])
def test_graph_starts_tasks_only_after_their_inputs(workers, tmp_path):
    from undo.study.graph import run_graph

    cfg = load_config(None, [f"out_dir={tmp_path}", f"study.workers={workers}"])
    order: list[str] = []
    schedule: list[dict] = []
    done = run_graph(cfg, _graph(cfg, order), log=lambda s: None, schedule=schedule)
    assert set(done) == {"a", "b", "c", "d"}
    assert all(p == tmp_path / cfg.name for p in done.values())
    assert order.index("b after ['a']") > order.index("a after []")
    assert order[-1] == "d after ['b', 'c']"
    # The schedule (what experiments/study_profile.py reads): every task once, each
    # starting after its inputs ended.
    spans = {e["task"]: e for e in schedule}
    assert set(spans) == set(done) and len(schedule) == 4
    assert spans["b"]["start_s"] >= spans["a"]["end_s"] - 0.01
    assert spans["d"]["start_s"] >= max(spans["b"]["end_s"], spans["c"]["end_s"]) - 0.01
    assert all(0 <= e["start_s"] <= e["end_s"] for e in schedule)


def test_seeds_differ_in_noise_data_and_attack(tmp_path):
    """Each seed's distilled models are attacked with the attack seeds shifted by it; the
    shared models (gold, unlearn-only) with every student's attack seeds, so no reference
    is attacked with fewer seeds than a student it scales."""
    cfg = load_config(None, [f"out_dir={tmp_path}", "attack.seeds=[0, 10]"])
    stages = _stages(cfg)
    every = dict.fromkeys((t.name for t in stages), tmp_path)
    seeds = {}
    for t in stages:
        m = t.makes
        if m is None or m.kind == "base":
            continue
        attack = next(a for a in stages if a.name == f"attack {m.name}")
        seeds[m.name] = attack.job(every).cfg.attack.seeds
        if m.kind in ("undo", "unlearn_distill"):  # the distillation runs at the model's seed
            job = t.job(every)
            assert job.kwargs["seed"] == m.seed
            assert job.cfg.noise.alpha == (m.alpha if m.kind == "undo" else cfg.noise.alpha)
    assert seeds["undo-a0.8-s0"] == [0, 10] and seeds["undo-a0.8-s2"] == [2, 12]
    assert seeds["unlearn-distill-s1"] == [1, 11]
    students = {s for m, ss in seeds.items() if m.startswith(("undo", "unlearn-distill"))
                for s in ss}
    assert set(seeds["gold"]) == set(seeds["unlearn-only"]) == students
    assert not any(tmp_path.iterdir())  # building the graph writes nothing


def test_study_runs_the_papers_attack_and_the_forget_only_one(tmp_path):
    """Arithmetic: the headline attack mixes retain data in the base model's pretraining
    proportions (3/7 with op weights 1.5, 1.5, 2, 2), the second is forget-only; text's
    paper attack is forget-only already, so it runs once."""
    from undo.study.attack_configs import study_attacks

    cfg = load_config(None, [f"out_dir={tmp_path}"])
    named = study_attacks(cfg)
    assert list(named) == ["paper", "forget_only"]
    assert named["paper"].attack.retain_fraction == pytest.approx(3 / 7)
    assert named["forget_only"].attack.retain_fraction == 0.0
    names = {t.name for t in _stages(cfg)}
    assert {"attack gold", "attack gold (forget_only)", "attack undo-a0.8-s1",
            "attack undo-a0.8-s1 (forget_only)"} <= names


def test_heartbeat_reads_progress_from_stage_files(tmp_path):
    import time

    from undo.study.specs import runs_progress, steps_progress

    t0 = time.time() - 10
    folder = tmp_path / "pretrain-base-abc"
    show = steps_progress(total=100)
    assert show(folder, t0) == "starting"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text('{"step": 10}\n{"step": 25}\n')
    assert show(folder, t0).startswith("step 25/100")
    runs = tmp_path / "distill-x-1-h" / "runs"
    runs.mkdir(parents=True)
    (runs / "lr1.json").write_text("{}")
    assert runs_progress(4)(runs.parent, t0) == "1/4 runs"


def test_progress_reads_each_running_stage_in_its_own_folder(tmp_path, tokenizer):
    """Unlearn-and-Distill s0 and the oracle gold -> random init are both
    `distill-random-s0-<hash>`, and a model's two attacks are both `<model>-<hash>`:
    each task's progress is read from the folder its job writes, not a name pattern."""
    from undo.study.graph import folder_of

    cfg = load_config(None, [f"out_dir={tmp_path}", "study.seeds=[0]", "study.oracles=true"])
    by = {t.name: t for t in _stages(cfg)}
    teacher, gold, base = (_fake_model(tmp_path / n, tokenizer, seed=i)
                           for i, n in enumerate(("teacher", "gold", "base")))
    folders = {"unlearn maxent": teacher, "pretrain gold": gold, "pretrain base": base}

    def where(name: str, dep: str) -> Path:
        return folder_of(by[name], {**folders, dep: folders[dep]})

    ud, oracle = where("Unlearn-and-Distill s0", "unlearn maxent"), where(
        "oracle gold->random", "pretrain gold")
    assert ud.name.startswith("distill-random-s0-") and oracle.name.startswith(
        "distill-random-s0-") and ud != oracle
    paper, fo = (where(n, "unlearn maxent") for n in ("attack unlearn-only",
                                                         "attack unlearn-only (forget_only)"))
    assert paper.parent.name == "attacks" and paper != fo
    # Each shows its own folder's progress, not the other's.
    for d, step in ((ud, 40), (oracle, 300)):
        d.mkdir(parents=True)
        (d / "metrics.jsonl").write_text(f'{{"step": {step}}}\n')
    t0 = time.time() - 5
    assert by["Unlearn-and-Distill s0"].progress()(ud, t0).startswith("step 40/")
    assert by["oracle gold->random"].progress()(oracle, t0).startswith("step 300/")


def _stages(cfg):
    from undo.study.gold import with_gold
    from undo.study.graph import study_graph

    return study_graph(with_gold(cfg)).stages


def _fake_model(d: Path, tokenizer, seed: int) -> Path:
    """A saved micro model (its folder is all a stage key reads: the fingerprint)."""
    from undo.config import ModelConfig
    from undo.models import build_model, save_model

    save_model(build_model(ModelConfig(preset="micro"), tokenizer, seed=seed), tokenizer,
               d / "model")
    return d


@pytest.mark.slow
def test_killed_parallel_study_resumes_to_same_summary(tmp_path):
    """SIGKILL the whole `undo run` process group (main + worker processes) mid-study,
    run again: the result equals an uninterrupted run's."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = [str(SMOKE), "study.workers=2"]
    assert main(["run", *args, f"out_dir={tmp_path / 'ref'}"]) == 0
    reference = json.loads((tmp_path / "ref" / "arithmetic-smoke" / "summary.json").read_text())

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "undo.cli", "run", *args, f"out_dir={out}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    stages = out / "arithmetic-smoke" / "stages"
    deadline = time.time() + 120
    # Kill once some stages have finished and others have not: mid-study.
    while time.time() < deadline and len(list(stages.glob("*/summary.json"))) < 3:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "arithmetic-smoke" / "summary.json").exists()
    assert main(["run", *args, f"out_dir={out}"]) == 0
    resumed = json.loads((out / "arithmetic-smoke" / "summary.json").read_text())
    assert _strip(resumed)["models"] == _strip(reference)["models"]


def test_distillations_wait_only_for_their_teacher(tmp_path):
    """Compute fractions are the summary's: no distillation waits for the gold pretraining,
    so the students start as soon as the teacher exists."""
    distills = [t for t in _stages(load_config(None, [f"out_dir={tmp_path}"]))
                if t.kind == "distill"]
    assert len(distills) == 12  # 3 alphas x 3 seeds + Unlearn-and-Distill x 3 seeds
    assert {t.deps for t in distills} == {("unlearn maxent",)}


def test_search_attacks_each_model_with_its_grids_seed_shifted_config(tmp_path, tokenizer):
    """The adaptive search starts from a model's grid and writes search.json into that
    grid's folder (where the summary reads it): its config is the grid's, attack seeds
    shifted by the model's seed; the replays find every model's search there too."""
    from undo.attacks.grid import attack_dir

    cfg = load_config(None, [f"out_dir={tmp_path}", "study.attack_search=2",
                             "attack.seeds=[0, 10]"])
    stages = _stages(cfg)
    by = {t.name: t for t in stages}
    model = _fake_model(tmp_path / "m", tokenizer, seed=0)
    every = dict.fromkeys(by, model)
    for m in (t.makes for t in stages if t.makes is not None):
        if m.kind == "base":
            continue
        grid = by[f"attack {m.name}"].job(every)
        search = by[f"search {m.name}"].job(every)
        assert search.cfg is not None
        assert search.cfg.attack.seeds == grid.cfg.attack.seeds
        assert attack_dir(search.cfg, model / "model") == attack_dir(grid.cfg, model / "model")
    assert by["search undo-a0.8-s2"].job(every).cfg.attack.seeds == [2, 12]
    replays = by["search replays"].job(every)
    shifted = [c.attack.seeds for c in replays.kwargs["model_cfgs"]]
    assert len(shifted) == len(replays.args[0]) and [2, 12] in shifted
    assert [0, 10, 1, 11, 2, 12] in shifted  # the references: every seed's draws
