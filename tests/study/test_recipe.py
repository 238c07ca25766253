"""undo.study.recipe: the defaults scaled to a model's size, and the shipped per-model
recipes that write them out (they must be the rule's values, or the rule is not what the
recipes say it is)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma2Config, LlamaConfig, Qwen2Config

from undo.config import load_config
from undo.configlib import shipped_config, to_dict
from undo.release.robustify import robustify_config
from undo.study.recipe import (
    ATTACK_LR,
    BF16_MIN_LR,
    DISTILL_LR,
    attack_grid,
    log_interp,
    scaled_defaults,
)

# The five shipped recipes' architectures (their hub config.json, as transformers configs).
SHAPES = {
    "smollm2-135m": LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                num_hidden_layers=30, num_attention_heads=9,
                                num_key_value_heads=3, tie_word_embeddings=True),
    "smollm2-360m": LlamaConfig(vocab_size=49152, hidden_size=960, intermediate_size=2560,
                                num_hidden_layers=32, num_attention_heads=15,
                                num_key_value_heads=5, tie_word_embeddings=True),
    "qwen2.5-0.5b": Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                                num_hidden_layers=24, num_attention_heads=14,
                                num_key_value_heads=2, tie_word_embeddings=True),
    "llama-3.2-1b": LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                                num_hidden_layers=16, num_attention_heads=32,
                                num_key_value_heads=8, tie_word_embeddings=True),
    "gemma-2-2b": Gemma2Config(),
}
# Their sizes as published (model cards), to check the stand-ins are the right shape.
PUBLISHED_PARAMS = {"smollm2-135m": 135e6, "smollm2-360m": 362e6, "qwen2.5-0.5b": 494e6,
                    "llama-3.2-1b": 1.24e9, "gemma-2-2b": 2.61e9}


def test_learning_rates_hit_the_papers_anchors_and_clamp_outside():
    for anchors in (DISTILL_LR, ATTACK_LR):
        (n0, v0), (n1, v1) = anchors
        assert log_interp(n0, anchors) == pytest.approx(v0)
        assert log_interp(n1, anchors) == pytest.approx(v1)
        assert log_interp(n0 / 100, anchors) == pytest.approx(v0)  # clamped, not extrapolated
        assert log_interp(n1 * 100, anchors) == pytest.approx(v1)
        mid = math.sqrt(n0 * n1)  # halfway in log size is halfway in log LR
        assert log_interp(mid, anchors) == pytest.approx(math.sqrt(v0 * v1))


def test_larger_models_get_smaller_rates_and_float32_below_the_bf16_limit():
    small, large = scaled_defaults(135_000_000, "cuda"), scaled_defaults(2_600_000_000, "cuda")
    assert small["distill.lr"] > large["distill.lr"]
    assert max(small["attack.lrs"]) > max(large["attack.lrs"])
    assert small["model.dtype"] == "auto" and small["distill.lr"] >= BF16_MIN_LR
    assert large["model.dtype"] == "float32" and large["distill.lr"] < BF16_MIN_LR
    assert large["model.gradient_checkpointing"] and not small["model.gradient_checkpointing"]


def test_the_device_sets_the_budgets_and_the_cpu_demo_scales_its_distillation_lr():
    gpu, cpu = scaled_defaults(135_000_000, "cuda"), scaled_defaults(135_000_000, "cpu")
    assert cpu["distill.lr"] == pytest.approx(0.3 * gpu["distill.lr"], rel=0.02)
    assert gpu["unlearn.lr"] == cpu["unlearn.lr"] and gpu["attack.lrs"][2] == \
        pytest.approx(cpu["attack.lrs"][0] / 3 ** 0.5, rel=0.05)
    assert gpu["attack.steps"] == 500 and gpu["attack.budgets"] == [0, 40, 500]  # the paper's
    assert cpu["attack.steps"] < gpu["attack.steps"]
    assert cpu["distill.steps"] * cpu["distill.batch_size"] * cpu["data.seq_len"] < \
        gpu["distill.steps"] * gpu["distill.batch_size"] * gpu["data.seq_len"]
    assert not cpu["model.gradient_checkpointing"]


def test_attack_grid_is_centred_and_the_search_spans_it():
    grid = attack_grid(1e-4, 5)
    assert grid[2] == pytest.approx(1e-4) and grid == sorted(grid, reverse=True)
    assert grid[0] / grid[1] == pytest.approx(3, rel=0.05)
    d = scaled_defaults(135_000_000, "cuda")
    low, high = d["search.lr"]
    assert low < min(d["attack.lrs"]) and high > max(d["attack.lrs"])


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> dict[str, tuple[Path, int]]:
    """config.json folders (no weights) of the five shapes, with their parameter count."""
    out = {}
    for name, config in SHAPES.items():
        d = tmp_path_factory.mktemp(name)
        config.save_pretrained(d)
        with torch.device("meta"):
            n = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
        out[name] = (d, n)
    return out


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@pytest.mark.parametrize("name", list(SHAPES))
def test_shipped_recipes_are_the_rule_written_out(name, stand_ins, tmp_path):
    folder, params = stand_ins[name]
    assert params == pytest.approx(PUBLISHED_PARAMS[name], rel=0.01)
    rule = scaled_defaults(params, "cuda")
    data = tmp_path / "text.jsonl"
    data.write_text('{"text": "some text"}\n')
    r = robustify_config(model=str(folder), forget=[str(data)], retain=[str(data)],
                         config=f"robustify/{name}", device="cuda")
    cfg, scaled = r.cfg, r.scaled
    assert scaled == {}  # every scaled key is written in the recipe
    study = load_config(shipped_config(f"text/{name}"), [f"model.name_or_path={folder}"])
    for loaded in (cfg, study):
        values = _flat(to_dict(loaded))
        for key, want in rule.items():
            if key == "study.alphas" and loaded is study:
                continue  # the study template sweeps three α
            assert values[key] == want, (name, key)
    assert len(study.study.alphas) == 3 and len(study.study.seeds) == 3
    header = shipped_config(f"robustify/{name}").read_text()
    assert "GPU-hours" in header and "Expects" in header
