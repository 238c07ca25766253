"""`undo run --dry-run` (every stage, its status, cost and disk, from configs alone) and the
gold-standard guard (`study.gold: auto`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from transformers import Gemma2Config

from undo.cli import main
from undo.config import load_config
from undo.study.gold import GOLD_AUTO_MAX_PARAMS, with_gold
from undo.study.graph import study_graph
from undo.study.plan import format_plan, plan

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "arithmetic" / "smoke.yaml")
WMDP = str(ROOT / "configs" / "wmdp" / "gemma2-2b-rmu.yaml")


@pytest.fixture(scope="module")
def gemma2_2b_shape(tmp_path_factory) -> Path:
    """A stand-in of Gemma-2-2B: its config.json alone (transformers' Gemma2Config
    defaults are the 2B shape), no weights: a plan that loaded weights would fail."""
    d = tmp_path_factory.mktemp("gemma2-2b")
    Gemma2Config().save_pretrained(d)
    return d


def test_dry_run_lists_every_stage_and_runs_nothing(tmp_path, capsys):
    assert main(["run", "--dry-run", SMOKE, f"out_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    for stage in ("pretrain base", "pretrain gold", "unlearn maxent", "UNDO a=0.8 s0",
                  "Unlearn-and-Distill s0", "oracle gold->base", "attack undo-a0.3-s0"):
        assert stage in out
    n = len(study_graph(with_gold(load_config(SMOKE, [f"out_dir={tmp_path}"]))).stages)
    assert n >= 15 and f"to run: {n} of {n} stages" in out and "after unlearn maxent" in out
    assert not any(tmp_path.iterdir())  # nothing written


def test_dry_run_of_run_seeds_plans_each_run_seeds_folder(tmp_path, capsys):
    assert main(["run", "--dry-run", SMOKE, f"out_dir={tmp_path}", "study.run_seeds=[0,3]"]) == 0
    out = capsys.readouterr().out
    assert "run seed 0:" in out and "run seed 3:" in out
    assert str(tmp_path / "arithmetic-smoke-seed3") in out
    assert f"then pooled into {tmp_path / 'arithmetic-smoke-pooled.json'}" in out
    assert not any(tmp_path.iterdir())  # nothing written


def test_default_study_leaves_oracle_matching_to_study_oracles(tmp_path):
    """The embedded default plans no oracle student (issue 24's time floor);
    `study.oracles=true` adds exactly the two oracle students and their attacks, every
    other task the same (so it grows a finished default run folder)."""
    def names(*overrides: str) -> set[str]:
        cfg = load_config(None, [f"out_dir={tmp_path}", *overrides])
        return {t.name for t in study_graph(with_gold(cfg)).stages}

    default, more = names(), names("study.oracles=true")
    assert default < more and not any("oracle" in n for n in default)
    assert more - default == {"oracle gold->random", "oracle gold->base",
                              "attack oracle-random", "attack oracle-random (forget_only)",
                              "attack oracle-base", "attack oracle-base (forget_only)"}


def test_dry_run_of_a_2b_model_plans_from_its_config_alone(gemma2_2b_shape, tmp_path):
    cfg = load_config(WMDP, [f"model.name_or_path={gemma2_2b_shape}", f"out_dir={tmp_path}"])
    t0 = time.perf_counter()
    rows, shape, _ = plan(cfg)
    text = format_plan(cfg, rows, shape, "config")
    assert time.perf_counter() - t0 < 5  # after imports; the whole command is timed in
    # experiments/dry_run.py
    assert 2.5e9 < shape.params < 2.7e9 and shape.bytes_per_param == 4  # model.dtype float32
    undo = next(r for r in rows if r.name.startswith("UNDO"))
    assert undo.steps == cfg.distill.steps
    # distill: student 6N + teacher forward 2N per position, positions = data.seq_len
    per_step = cfg.distill.batch_size * cfg.distill.grad_accum * cfg.data.seq_len
    assert undo.flops == pytest.approx(8 * shape.matmul_params * per_step * cfg.distill.steps)
    assert undo.disk == shape.params * 4
    assert "gold standard: none" in text


@pytest.mark.slow
def test_plan_of_a_finished_study_is_all_cached_and_its_estimates_match(tmp_path, capsys):
    assert main(["run", SMOKE, f"out_dir={tmp_path}", "study.oracles=false",
                 "study.unlearn_distill=false"]) == 0
    capsys.readouterr()
    cfg = load_config(SMOKE, [f"out_dir={tmp_path}", "study.oracles=false",
                              "study.unlearn_distill=false"])
    rows, shape, _ = plan(cfg)
    # 5 models; 4 of them attacked under each of the study's attacks
    assert [r.status for r in rows] == ["cached"] * (5 + 4 * len(cfg.study.attacks))
    # More α: the shared stages are cached, the new student and its attack are not.
    more = load_config(SMOKE, [f"out_dir={tmp_path}", "study.oracles=false",
                               "study.unlearn_distill=false", "study.alphas=[0.3, 0.5]"])
    status = {r.name: r.status for r in plan(more)[0]}
    assert status["UNDO a=0.3 s0"] == "cached" and status["UNDO a=0.5 s0"] == "to run"
    assert status["attack undo-a0.5-s0"] == "after UNDO a=0.5 s0"
    # The FLOP estimate of pretraining is within 10% of what the stage measured (the
    # estimate assumes the benchmark's typical sequence length).
    [base] = tmp_path.glob("arithmetic-smoke/stages/pretrain-base-*/summary.json")
    measured = json.loads(base.read_text())["flops"]
    assert rows[0].flops == pytest.approx(measured, rel=0.1)


def test_large_pretrained_model_without_study_gold_stops_before_any_work(gemma2_2b_shape,
                                                                         tmp_path, capsys):
    args = [SMOKE, f"model.name_or_path={gemma2_2b_shape}", f"out_dir={tmp_path}"]
    assert main(["run", *args]) == 2
    err = capsys.readouterr().err
    assert "config key 'study.gold': not set" in err and "2,614M parameters" in err
    assert "study.gold=none" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())
    assert main(["run", "--dry-run", *args]) == 2  # the plan asks the same question
    assert "study.gold" in capsys.readouterr().err
    assert main(["run", "--dry-run", *args, "study.gold=none"]) == 0
    assert "gold standard: none" in capsys.readouterr().out


def test_small_pretrained_model_gets_a_pretrained_gold_standard_by_default(tmp_path):
    from hub_cache import micro_hub_model

    cache, commit = micro_hub_model(tmp_path)
    folder = cache / "models--undo-test--micro" / "snapshots" / commit
    cfg = load_config(SMOKE, [f"model.name_or_path={folder}", f"out_dir={tmp_path}"])
    rows, shape, _ = plan(cfg)
    assert shape.params < GOLD_AUTO_MAX_PARAMS
    assert "pretrain gold" in [r.name for r in rows]


# Parameter counts the models' hub cards state (millions), for the shipped shapes.
CARD_PARAMS_M = {"google/gemma-2-2b": 2614, "meta-llama/Llama-3.2-1B": 1236,
                 "Qwen/Qwen2.5-0.5B": 494, "HuggingFaceTB/SmolLM2-135M": 135,
                 "HuggingFaceTB/SmolLM2-360M": 362}


def test_every_shipped_recipes_hub_model_has_a_shipped_shape():
    import yaml
    from transformers import AutoConfig, AutoModelForCausalLM

    from undo.configlib import shipped_configs
    from undo.provenance import is_hub_id
    from undo.study.gold import hub_shapes

    named = set()
    for path in shipped_configs().values():
        m = (yaml.safe_load(path.read_text()) or {}).get("model") or {}
        src = m.get("name_or_path")
        if src and is_hub_id(src) and not m.get("gguf_file"):
            named.add(src)
    shapes = hub_shapes()
    assert named and named <= set(shapes), f"no shipped shape for {named - set(shapes)}"
    assert set(shapes) == set(CARD_PARAMS_M)
    for hub_id, fields in shapes.items():
        fields = dict(fields)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(
                AutoConfig.for_model(fields.pop("model_type"), **fields))
        n = sum(p.numel() for p in model.parameters()) / 1e6
        assert n == pytest.approx(CARD_PARAMS_M[hub_id], rel=0.01), hub_id


def test_dry_run_of_a_shipped_hub_recipe_plans_offline_with_its_shape(tmp_path, capsys):
    assert main(["run", "--dry-run", "configs/text/smollm2-135m.yaml", f"out_dir={tmp_path}",
                 "study.gold=none"]) == 0
    out = capsys.readouterr().out
    assert "shipped shape of HuggingFaceTB/SmolLM2-135M" in out and "135M parameters" in out
    assert "~0 FLOPs" not in out and " FLOPs (training passes" in out


def test_a_plan_whose_shape_is_unknown_says_unknown_in_its_total(tmp_path, capsys):
    assert main(["run", "--dry-run", "configs/text/smollm2-135m.yaml", f"out_dir={tmp_path}",
                 "model.name_or_path=someone/not-a-shipped-model", "study.gold=none"]) == 0
    out = capsys.readouterr().out
    assert "FLOPs and disk unknown" in out and "~0 FLOPs" not in out
    assert not any(tmp_path.iterdir())
