"""Teacher selection: grid expansion, the selection rule, and a two-point sweep."""

from pathlib import Path

import pytest

from undo.artifacts import read_json
from undo.cli import main
from undo.config import ConfigError, ModelConfig, SweepConfig, load_config
from undo.models import build_model, save_model
from undo.stages.sweep import grid_points, point_config, select, sweep

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "arithmetic" / "smoke.yaml"



def test_grid_points_nested_and_errors():
    pts = grid_points({"lr": [1, 2], "method_args": {"beta": [0.1, 0.2, 0.3]}})
    assert len(pts) == 6
    assert pts[0] == {("lr",): 1, ("method_args", "beta"): 0.1}
    assert grid_points({}) == [{}]
    with pytest.raises(ConfigError, match="sweep.grid.lr"):
        grid_points({"lr": 1e-3})
    # Command-line YAML reads 1e-4 as a string: the grid reads it as a number.
    assert grid_points({"lr": ["1e-4"]}) == [{("lr",): 1e-4}]


def test_point_config_validates_keys():
    cfg = load_config()
    p = point_config(cfg, {("lr",): 5e-4, ("method_args", "retain"): "kl"})
    assert p.unlearn.lr == 5e-4 and p.unlearn.method_args == {"retain": "kl"}
    assert cfg.unlearn.method_args == {}  # the original is untouched
    with pytest.raises(ConfigError, match="unlearn.lrr"):
        point_config(cfg, {("lrr",): 1.0})


def _row(retain, forget, steps=10):
    return {"after": {"retain/acc": retain, "forget/acc": forget}, "steps": steps}


def test_select_lowest_forget_subject_to_retain_floor():
    rule = SweepConfig()
    base = {"retain/acc": 1.0, "forget/acc": 0.9}
    rows = [_row(0.99, 0.30), _row(0.94, 0.00), _row(0.96, 0.10), _row(0.97, 0.10)]
    assert select(rows, base, rule) == 3  # 1 breaks the floor; 2 and 3 tie, 3 keeps more
    assert select([_row(0.5, 0.0)], base, rule) is None
    loose = SweepConfig(min_retain_ratio=0.9)
    assert select(rows, base, loose) == 1


def test_sweep_writes_table_and_selection(tmp_path, tokenizer, capsys):
    base = tmp_path / "base"
    save_model(build_model(ModelConfig(preset="micro"), tokenizer, seed=0), tokenizer, base)
    cfg = load_config(SMOKE, [f"out_dir={tmp_path}", "unlearn.steps=2", "unlearn.batch_size=8",
                              "unlearn.method=grad_diff", "sweep.grid={lr: [1e-4, 1e-3]}",
                              "sweep.min_retain_ratio=0.0"])
    d = sweep(cfg, base)
    t = read_json(d / "sweep.json")
    assert [r["point"] for r in t["rows"]] == [{"lr": 1e-4}, {"lr": 1e-3}]
    assert t["selected"] in (0, 1) and all(r["feasible"] for r in t["rows"])
    assert (d / "selected.yaml").is_file() and "lowest" in t["rule"]
    forget = [r["after"]["forget/acc"] for r in t["rows"]]
    assert forget[t["selected"]] == min(forget)
    rc = main(["sweep", str(SMOKE), f"out_dir={tmp_path}", "unlearn.steps=2",
               "unlearn.batch_size=8", "unlearn.method=grad_diff",
               "sweep.grid={lr: [1e-4, 1e-3]}", "sweep.min_retain_ratio=0.0", str(base)])
    assert rc == 0 and "selected:" in capsys.readouterr().out
