"""Every supported family, end to end: a tiny random model saved with `save_pretrained`,
loaded through `load_pretrained`, then the mapping, noise, RMU, RepNoise and FLOP count."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
)
from transformers.pytorch_utils import Conv1D

from families import FAMILY_NAMES, FF, LAYERS, H, tiny_configs
from undo.architectures import (
    GROUPS,
    blocks,
    classify,
    family,
    family_of,
    head_is_tied,
    mlp_out_names,
)
from undo.compute import matmul_params
from undo.config import ConfigError, ModelConfig, NoiseConfig
from undo.models import load_pretrained
from undo.objectives.repnoise import RepNoise
from undo.objectives.rmu import RMU, RMUArgs
from undo.stages.noise import apply_noise, noised_copy, xavier_bound
from undo.tokenizers import build_char_tokenizer


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """family -> a save_pretrained folder (random weights + the char tokenizer)."""
    tok = build_char_tokenizer()
    special = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                   eos_token_id=tok.eos_token_id)
    out = {}
    for name, cfg in tiny_configs(len(tok), special).items():
        torch.manual_seed(0)
        d = tmp_path_factory.mktemp(name)
        AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
        tok.save_pretrained(d)
        out[name] = d
    return out


def _load(saved: dict[str, Path], name: str) -> torch.nn.Module:
    model, tok = load_pretrained(ModelConfig(name_or_path=str(saved[name])), "cpu")
    assert tok.pad_token is not None and len(tok) == model.config.vocab_size
    return model


def _batch(vocab: int, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)

    def enc() -> dict[str, torch.Tensor]:
        ids = torch.randint(4, vocab, (2, 8), generator=g)
        mask = torch.ones_like(ids)
        mask[1, 6:] = 0
        labels = ids.masked_fill(mask == 0, -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return {"forget": enc(), "retain": enc()}


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_mapping_finds_blocks_projections_and_groups(saved, name):
    model = _load(saved, name)
    assert model.config.model_type == name
    assert len(blocks(model)) == LAYERS
    params = dict(model.named_parameters())
    outs = mlp_out_names(model)
    assert len(outs) == LAYERS and all(n in params for n in outs)
    for n in outs:  # the projection back to the residual stream: FF -> H
        mod = model.get_submodule(n.rsplit(".", 1)[0])
        in_out = tuple(mod.weight.shape) if isinstance(mod, Conv1D) else mod.weight.T.shape
        assert tuple(in_out) == (FF, H), (n, in_out)
    fam = family(model)
    seen = {g: 0 for g in GROUPS}
    for n in params:
        group, layer = classify(fam, n)
        seen[group] += 1
        in_block = n.startswith(fam.blocks + ".")
        assert layer == (int(n[len(fam.blocks) + 1:].split(".")[0]) if in_block else None), n
    assert seen["other"] == 0, [n for n in params if classify(fam, n)[0] == "other"]
    assert seen["attention"] and seen["mlp"] and seen["norms"] and seen["embeddings"]
    tied = bool(model.config.tie_word_embeddings)
    assert head_is_tied(model) == tied and (seen["head"] == 0) == tied


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_noise_on_each_family(saved, name):
    model = _load(saved, name)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    same, _ = noised_copy(model, NoiseConfig(alpha=0.0), seed=0)
    assert all(torch.equal(v, before[k]) for k, v in same.named_parameters())
    # β = 0 with the literal shrink of every tensor: every weight must be exactly halved
    # once; a tied head noised twice would be quartered.
    rep = apply_noise(model, 0.5, 0.0, torch.Generator().manual_seed(0), norms="shrink")
    assert all(torch.allclose(v, 0.5 * before[k]) for k, v in model.named_parameters())
    head = model.get_output_embeddings().weight
    head_name = next(k for k, v in model.named_parameters() if v is head)  # tied: the embedding
    assert torch.allclose(head, 0.5 * before[head_name])
    assert rep.params_touched == rep.params_total == sum(p.numel() for p in model.parameters())
    noisy, rep = noised_copy(model, NoiseConfig(alpha=0.5, beta=0.5, targets=["mlp"]), seed=0)
    assert set(rep.touched_by_group) == {"mlp"}
    fam = family(model)
    for k, v in noisy.named_parameters():  # 2-D: noise makes every MLP weight differ
        if v.dim() == 2:
            assert torch.equal(v, model.get_parameter(k)) != (classify(fam, k)[0] == "mlp"), k


def test_gpt2_conv1d_gets_the_linear_bound(saved):
    """Conv1D stores (in, out); the Xavier bound of the equivalent Linear (out, in) is
    the same because it depends on fan_in + fan_out only."""
    model = _load(saved, "gpt2")
    w = model.transformer.h[0].attn.c_attn.weight
    assert isinstance(model.transformer.h[0].attn.c_attn, Conv1D) and w.shape == (H, 3 * H)
    assert xavier_bound(w.shape) == xavier_bound(w.T.shape) == (6 / (H + 3 * H)) ** 0.5


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_rmu_trains_each_familys_mlp_output(saved, name):
    model = _load(saved, name)
    obj = RMU(1.0, RMUArgs(layer=1, train_layers=[0, 1]))
    obj.prepare(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(mlp_out_names(model))
    loss, metrics = obj.loss(model, _batch(model.config.vocab_size))
    loss.backward()
    assert metrics["forget_mse"] > 0
    for n in trainable:
        g = model.get_parameter(n).grad
        assert g is not None and g.abs().sum() > 0, n


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_repnoise_term_on_each_family(saved, name):
    model = _load(saved, name)
    term = RepNoise(base=None).noise_term(model, _batch(model.config.vocab_size))
    term.backward()
    assert torch.isfinite(term) and term > 0
    assert model.get_parameter(mlp_out_names(model, [0])[0]).grad is not None


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_matmul_params_matches_an_independent_count(saved, name):
    model = _load(saved, name)
    # Independently: every parameter, minus every nn.Embedding (lookups), plus the head
    # once more when it shares the token embedding's tensor.
    lookups = sum(m.weight.numel() for m in model.modules()
                  if isinstance(m, torch.nn.Embedding))
    head = model.get_output_embeddings().weight
    tied = any(head is m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding))
    expected = sum(p.numel() for p in model.parameters()) - lookups + (head.numel() if tied else 0)
    assert matmul_params(model) == expected
    if name == "gpt2":  # the learned position table is a lookup, not a matmul
        assert lookups == model.transformer.wpe.weight.numel() + head.numel()


def test_unknown_family_names_it_and_the_supported_ones():
    with pytest.raises(ConfigError, match=r"'opt'.*Supported families: gemma2, gpt2, gpt_neox"):
        family_of("opt")


def test_rmu_param_override_and_its_error(saved):
    model = _load(saved, "gpt2")
    assert RMU(1.0, RMUArgs(param="mlp.c_fc")).trained_names(model) == [
        "transformer.h.0.mlp.c_fc.weight", "transformer.h.1.mlp.c_fc.weight"]
    with pytest.raises(ConfigError, match="param': got 'mlp.down_proj'.*no parameter "
                                          "transformer.h.0.mlp.down_proj.weight"):
        RMU(1.0, RMUArgs(param="mlp.down_proj")).trained_names(model)
