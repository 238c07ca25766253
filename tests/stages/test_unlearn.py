"""The unlearn stage and `undo unlearn`, on a micro base model."""

from pathlib import Path

import pytest
import torch

from undo.artifacts import read_json
from undo.benchmarks.arithmetic.benchmark import Benchmark, Config
from undo.cli import main
from undo.config import ConfigError, ModelConfig, load_config
from undo.models import build_model, load_model, save_model
from undo.stages.unlearn import unlearn

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "arithmetic" / "smoke.yaml"



@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, tokenizer):
    d = tmp_path_factory.mktemp("base") / "model"
    save_model(build_model(ModelConfig(preset="micro"), tokenizer, seed=0), tokenizer, d)
    return d


def _cfg(tmp_path, *overrides):
    return load_config(SMOKE, [f"out_dir={tmp_path}", "unlearn.steps=3",
                               "unlearn.batch_size=8", *overrides])


def test_stage_writes_model_and_summary_and_is_cached(tmp_path, base_dir):
    cfg = _cfg(tmp_path, "unlearn.method=grad_diff")
    d = unlearn(cfg, base_dir)
    s = read_json(d / "summary.json")
    for when in ("before", "after"):
        for name in Benchmark.eval_names:
            assert 0 <= s[when][f"{name}/acc"] <= 1 and s[when][f"{name}/ce"] > 0
    assert s["steps"] == 3 and s["tokens"] > 0 and s["flops"] > 0 and s["wall_time_s"] > 0
    assert s["method"] == "grad_diff" and (d / "config.yaml").is_file()
    model = load_model(d / "model")
    assert any(not torch.equal(a, b) for a, b in
               zip(model.parameters(), load_model(base_dir).parameters(), strict=True))
    mtime = (d / "summary.json").stat().st_mtime_ns
    assert unlearn(cfg, base_dir) == d and (d / "summary.json").stat().st_mtime_ns == mtime
    assert unlearn(_cfg(tmp_path, "unlearn.method=grad_diff", "unlearn.lr=3e-4"), base_dir) != d
    assert unlearn(cfg, base_dir, force=True) == d
    assert (d / "summary.json").stat().st_mtime_ns != mtime


def test_bad_settings_fail_before_writing(tmp_path, base_dir):
    with pytest.raises(ConfigError, match="unlearn.method_args.beta"):
        unlearn(_cfg(tmp_path, "unlearn.method=npo", "unlearn.method_args={beta: 0}"), base_dir)
    with pytest.raises(ConfigError, match="method_args.layer"):
        unlearn(_cfg(tmp_path, "unlearn.method=rmu",
                     "unlearn.method_args={layer: 7, train_layers: [7]}"), base_dir)
    with pytest.raises(ConfigError, match="base model folder .*: no model there"):
        unlearn(_cfg(tmp_path), tmp_path)
    assert not (tmp_path / "arithmetic-smoke").exists()


def test_batches_are_deterministic_and_split_forget_from_retain(tokenizer):
    ub = Benchmark(Config()).batches("unlearn", tokenizer, 8, seed=0)
    a, b = ub(3, 1), ub(3, 1)
    for part in ("forget", "retain"):
        assert torch.equal(a[part]["input_ids"], b[part]["input_ids"])
    assert not torch.equal(ub(4, 1)["forget"]["input_ids"][:, :4], a["forget"]["input_ids"][:, :4]) \
        or not torch.equal(ub(4, 1)["retain"]["input_ids"][:, :4], a["retain"]["input_ids"][:, :4])
    vocab = tokenizer.get_vocab()
    seen = 0
    for step in range(20):
        batch = ub(step, 0)
        for part, symbols in (("forget", "*/"), ("retain", "+-")):
            ids = batch[part]["input_ids"]
            letters = torch.tensor([vocab[c] for c in "abcdefghijklmnopqrstuvwxyz"])
            if not torch.isin(ids, letters).any():  # an equation batch (no words)
                seen += 1
                has = torch.zeros(ids.size(0), dtype=torch.bool)
                for c in symbols:
                    has |= (ids == vocab[c]).any(dim=1)
                assert bool(has.all()), part
    assert seen > 10


def test_cli_unlearn_prints_before_after(tmp_path, base_dir, capsys):
    rc = main(["unlearn", str(SMOKE), f"out_dir={tmp_path}", "unlearn.steps=2",
               "unlearn.batch_size=8", str(base_dir)])
    out = capsys.readouterr().out
    assert rc == 0 and "before" in out and "forget/acc" in out and "retain_heldout/acc" in out
    rc = main(["unlearn", str(SMOKE), f"out_dir={tmp_path}", "unlearn.method=nope",
               str(base_dir)])
    assert rc == 2 and "valid: grad_ascent" in capsys.readouterr().err
