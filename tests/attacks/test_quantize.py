"""The quantization attack: optimum-quanto's round-to-nearest against a hand RTN, a model
whose forget ability was hidden in sub-step weight changes (quantization must bring it
back exactly), and a model that never had it (quantization must not invent it)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from undo.attacks import registry
from undo.attacks.quantize import quantize_model, quantize_weight
from undo.benchmarks.arithmetic.benchmark import Benchmark
from undo.config import ConfigError, load_config
from undo.models import save_model

pytest.importorskip("optimum.quanto")

FAST = ["data.eval_items_per_op=8", "attack.steps=4", "attack.budgets=[0,4]",
        "attack.curve_items_per_op=2", "attack.seeds=[0,1]", "attack.precision=fp32",
        "threads=1", "progress=false"]


def _groups(w, g):
    return w if g is None else w.reshape(w.shape[0], -1, g)


def hand_rtn(w: torch.Tensor, bits: int, g: int | None) -> torch.Tensor:
    """int8: symmetric per row, max|w| / 127; int4: affine per row or group, 15 levels."""
    if bits == 8:
        s = w.abs().amax(-1, keepdim=True) / 127
        return (w / s).round().clamp(-128, 127) * s
    W = _groups(w, g)
    lo, hi = W.amin(-1, keepdim=True), W.amax(-1, keepdim=True)
    s = (hi - lo) / 15
    return (((W - lo) / s).round().clamp(0, 15) * s + lo).reshape(w.shape)


@pytest.mark.parametrize("bits,group", [(8, None), (4, None), (4, 32), (4, 16)])
def test_quanto_is_bit_exact_to_a_hand_round_to_nearest(bits, group):
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(quantize_weight(w, bits, group), hand_rtn(w, bits, group))


def _linears(model):
    head = model.get_output_embeddings()
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head]


def _forget_ce(model, bench, tok) -> float:
    s = bench.eval_set("forget", tok).score(model)
    return float(s["ce_sum"].sum() / s["n_tok"].sum())


def _hide(model, bench, tok, steps: int = 30) -> None:
    """Raise forget CE by sign-gradient ascent within 0.45 of an int4 step of each weight,
    each row's extremes kept: int4 per-channel rounding undoes every change exactly."""
    cfg = load_config(None, ["attack.retain_fraction=0", "attack.batch_size=32"])
    batches = bench.attack_batches(cfg.attack, tok, seed="hide")
    ref = {m: m.weight.detach().clone() for m in _linears(model)}
    for step in range(steps):
        b = batches(step)
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), b["labels"][:, 1:],
                               ignore_index=-100)
        model.zero_grad()
        (-loss).backward()
        with torch.no_grad():
            for m, w0 in ref.items():
                s = (w0.amax(-1, keepdim=True) - w0.amin(-1, keepdim=True)) / 15
                keep = (w0 == w0.amax(-1, keepdim=True)) | (w0 == w0.amin(-1, keepdim=True))
                w = m.weight - 0.3 * s * m.weight.grad.sign()
                w = torch.minimum(torch.maximum(w, w0 - 0.45 * s), w0 + 0.45 * s)
                m.weight.copy_(torch.where(keep, w0, w))


def test_quantizing_brings_back_what_sub_step_changes_hid(tmp_path, micro_model, tokenizer):
    cfg = load_config(None, [f"out_dir={tmp_path}", *FAST,
                             "attack.options={quantize: {schemes: [int8, int4]}}"])
    bench = Benchmark(cfg.data)
    knows = micro_model
    quantize_model(knows, "int4")  # its weights on the int4 grid: what it "knows"
    hidden = copy.deepcopy(knows)
    _hide(hidden, bench, tokenizer)
    before, after_hiding = _forget_ce(knows, bench, tokenizer), _forget_ce(hidden, bench, tokenizer)
    assert after_hiding > before + 0.1  # the forget ability is hidden
    save_model(hidden, tokenizer, tmp_path / "hidden")
    c = registry.configured(cfg, "quantize")
    rel = json.loads((registry.run_attack(c, tmp_path / "hidden") / "relearn.json").read_text())
    by = {r["setting"]: r for r in rel["runs"]}
    assert by["int4"]["budgets"]["4"]["forget/ce"] == pytest.approx(before, abs=1e-5)
    assert rel["start"]["forget/ce"] == pytest.approx(after_hiding, abs=1e-5)
    worst = rel["worst_case"]["forget/ce"]["4"]  # CE: the lowest is the worst case
    assert rel["settings"][repr(worst["lr"])] == "int4"
    assert worst["value"] == pytest.approx(before, abs=1e-5)
    assert by["int4"]["info"] == {"layers": len(_linears(hidden)), "per_channel_fallback": 0}
    assert rel["cost"]["runs"] == 2 and rel["seeds"] == [0, 1]  # once per scheme


def test_quantizing_a_model_that_never_knew_invents_nothing(tmp_path, micro_model, tokenizer):
    """The gold standard's case: a model without the ability stays without it."""
    cfg = load_config(None, [f"out_dir={tmp_path}", *FAST])
    save_model(micro_model, tokenizer, tmp_path / "gold")
    c = registry.configured(cfg, "quantize")
    rel = json.loads((registry.run_attack(c, tmp_path / "gold") / "relearn.json").read_text())
    for r in rel["runs"]:
        assert r["budgets"]["4"]["forget/acc"] <= rel["start"]["forget/acc"]
        assert abs(r["budgets"]["4"]["forget/ce"] - rel["start"]["forget/ce"]) < 0.05


def test_bad_scheme_is_a_config_error(tmp_path):
    cfg = load_config(None, [f"out_dir={tmp_path}", "attack.options={quantize: {schemes: [int3]}}"])
    with pytest.raises(ConfigError, match="attack.options.quantize.schemes.*int4-g<G>"):
        registry.configured(cfg, "quantize")
