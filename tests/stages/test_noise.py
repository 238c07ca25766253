import copy
import math

import pytest
import torch

from undo.architectures import FAMILIES
from undo.config import ConfigError, ModelConfig, NoiseConfig
from undo.models import build_model
from undo.stages.noise import (
    apply_noise,
    importance_mask,
    layer_index,
    noised_copy,
    param_group,
    shrink_perturb,
    xavier_bound,
    xavier_uniform,
)

LLAMA, GPT2 = FAMILIES["llama"], FAMILIES["gpt2"]



def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _params(m):
    return {k: v.detach().clone() for k, v in m.named_parameters()}


def test_shrink_perturb_hand_computed():
    theta = torch.tensor([[1.0, -2.0], [0.5, 4.0]])
    noise = torch.tensor([[0.1, 0.2], [-0.3, 0.0]])
    mask = torch.tensor([[1.0, 0.0], [0.5, 1.0]])
    out = shrink_perturb(theta, 0.25, 0.5, noise, mask)
    # (1 − 0.25)·θ + 0.25·0.5·(I ⊙ N)
    want = torch.tensor([[0.75 + 0.0125, -1.5], [0.375 - 0.01875, 3.0]])
    assert torch.allclose(out, want)
    assert torch.allclose(shrink_perturb(theta[0], 0.25, 0.5), 0.75 * theta[0])


def test_xavier_bound_hand_computed():
    assert xavier_bound((64, 32)) == pytest.approx(math.sqrt(6 / 96))
    with pytest.raises(ValueError):
        xavier_bound((5,))


def test_alpha_zero_leaves_weights_unchanged(micro_model):
    before = _params(micro_model)
    rep = apply_noise(micro_model, 0.0, 1.0, _gen())
    for k, v in micro_model.named_parameters():
        assert torch.equal(v, before[k]), k
    assert rep.fraction_touched == 1.0 and rep.norm_after == pytest.approx(rep.norm_before)


def test_same_seed_same_weights_other_seed_differs(micro_model):
    cfg = NoiseConfig(alpha=0.5, beta=0.3)
    a, _ = noised_copy(micro_model, cfg, seed=3)
    b, _ = noised_copy(micro_model, cfg, seed=3)
    c, _ = noised_copy(micro_model, cfg, seed=4)
    pa, pb, pc = _params(a), _params(b), _params(c)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    two_d = [k for k in pa if pa[k].dim() == 2]
    assert all(not torch.equal(pa[k], pc[k]) for k in two_d)
    # noised_copy leaves the original alone
    assert not torch.equal(pa[two_d[0]], dict(micro_model.named_parameters())[two_d[0]])


def test_one_d_params_only_shrunk(micro_model):
    """`shrink`, the literal port: every 1-D weight times 1 − α, no noise."""
    before = _params(micro_model)
    apply_noise(micro_model, 0.4, 1.0, _gen(), norms="shrink")
    one_d = [k for k, v in before.items() if v.dim() == 1]
    assert one_d
    for k, v in micro_model.named_parameters():
        if v.dim() == 1:
            assert torch.allclose(v, 0.6 * before[k]), k


def test_alpha_beta_one_gives_xavier_range(micro_model):
    apply_noise(micro_model, 1.0, 1.0, _gen())
    for name, p in micro_model.named_parameters():
        if p.dim() != 2:
            continue
        b = xavier_bound(p.shape)
        assert p.abs().max() <= b + 1e-7, name
        assert p.abs().max() >= 0.98 * b, name  # ≥1024 draws: the range is filled
        assert abs(p.mean().item()) < 0.1 * b, name


def test_noise_is_drawn_on_cpu_generator():
    # Same numbers whatever the target device: the draw never uses a device generator.
    x = xavier_uniform((8, 4), _gen(7))
    y = xavier_uniform((8, 4), _gen(7))
    assert x.device.type == "cpu" and torch.equal(x, y)


def test_tied_embeddings_noised_once(micro_model):
    assert micro_model.lm_head.weight is micro_model.model.embed_tokens.weight
    w0 = micro_model.model.embed_tokens.weight.detach().clone()
    rep = apply_noise(micro_model, 0.5, 0.0, _gen())
    # Shrunk once (0.5), not twice (0.25).
    assert torch.allclose(micro_model.lm_head.weight, 0.5 * w0)
    assert rep.params_total == sum(p.numel() for p in micro_model.parameters())


def test_restrict_to_groups_and_layers(micro_model):
    before = _params(micro_model)
    rep = apply_noise(micro_model, 0.5, 0.5, _gen(), targets=["mlp"], layers=[1])
    for k, v in micro_model.named_parameters():
        changed = not torch.equal(v, before[k])
        assert changed == (param_group(k, LLAMA) == "mlp" and layer_index(k, LLAMA) == 1), k
    assert 0 < rep.fraction_touched < 0.5 and set(rep.touched_by_group) == {"mlp"}


def test_param_groups_of_llama_names():
    assert param_group("model.layers.0.self_attn.q_proj.weight", LLAMA) == "attention"
    assert param_group("model.layers.0.post_attention_layernorm.weight", LLAMA) == "norms"
    assert param_group("model.layers.3.mlp.down_proj.weight", LLAMA) == "mlp"
    assert param_group("model.embed_tokens.weight", LLAMA) == "embeddings"
    assert param_group("lm_head.weight", LLAMA) == "embeddings"
    assert param_group("model.norm.weight", LLAMA) == "norms"
    assert layer_index("model.layers.12.mlp.up_proj.weight", LLAMA) == 12
    assert layer_index("model.norm.weight", LLAMA) is None


def test_param_groups_of_gpt2_names():
    """GPT-2 names its attention and MLP output projections both `c_proj`: the block
    child (attn / mlp) decides; `wpe` (learned positions) is an embedding."""
    assert param_group("transformer.h.0.attn.c_proj.weight", GPT2) == "attention"
    assert param_group("transformer.h.0.mlp.c_proj.weight", GPT2) == "mlp"
    assert param_group("transformer.h.0.ln_2.bias", GPT2) == "norms"
    assert param_group("transformer.wpe.weight", GPT2) == "embeddings"
    assert param_group("transformer.ln_f.weight", GPT2) == "norms"
    assert layer_index("transformer.h.7.mlp.c_fc.bias", GPT2) == 7


def test_importance_masks_hand_computed():
    base = torch.zeros(2, 3)
    theta = torch.tensor([[0.1, -0.4, 0.0], [0.2, 0.0, 0.8]])
    top = importance_mask(theta, base, "top_fraction", fraction=1 / 3)
    assert torch.equal(top, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    mag = importance_mask(theta, base, "magnitude")
    assert torch.allclose(mag, theta.abs() / 0.8)
    assert torch.equal(importance_mask(base, base, "magnitude"), torch.zeros(2, 3))


def test_top_fraction_never_selects_unchanged_entries():
    # 3 of 100 entries changed, k = ⌈0.1·100⌉ = 10: only those 3 are selected, not all
    # 100 (a threshold at the 10th largest d would be 0, and d >= 0 holds everywhere).
    base = torch.zeros(10, 10)
    theta = base.clone()
    theta[0, 1], theta[4, 4], theta[9, 0] = 0.3, -1e-6, 2.0
    top = importance_mask(theta, base, "top_fraction", fraction=0.1)
    assert torch.equal(top, (theta != 0).float())
    assert torch.equal(importance_mask(base, base, "top_fraction", fraction=0.5),
                       torch.zeros(10, 10))


def test_top_fraction_exactly_k_with_ties():
    base = torch.zeros(8)
    # Four entries tie at the k-th value (0.5), k = ⌈0.25·8⌉ = 2, one entry above it:
    # 0.9 plus the lowest-index tie (index 1).
    theta = torch.tensor([0.0, 0.5, -0.5, 0.9, 0.5, 0.0, -0.5, 0.1])
    top = importance_mask(theta, base, "top_fraction", fraction=0.25)
    assert top.tolist() == [0, 1, 0, 1, 0, 0, 0, 0]
    # All equal: the first k by index; exactly k whatever the fraction.
    flat = torch.full((3, 5), 0.7)
    for frac in (0.1, 0.3, 0.5, 1.0):
        m = importance_mask(flat, torch.zeros(3, 5), "top_fraction", fraction=frac)
        k = math.ceil(frac * 15)
        assert int(m.sum()) == k and torch.equal(m.flatten()[:k], torch.ones(k)), frac


def test_localized_noise_only_where_unlearning_moved(micro_model, tokenizer):
    base = build_model(ModelConfig(preset="micro"), tokenizer, seed=0)
    with torch.no_grad():  # "unlearning" changed only one MLP weight
        micro_model.model.layers[0].mlp.up_proj.weight.add_(0.1)
    before = _params(micro_model)
    apply_noise(micro_model, 0.5, 1.0, _gen(), mask="magnitude", base=base, norms="shrink")
    for k, v in micro_model.named_parameters():
        if k == "model.layers.0.mlp.up_proj.weight":
            assert not torch.allclose(v, 0.5 * before[k])
        else:  # mask 0: shrunk only
            assert torch.allclose(v, 0.5 * before[k]), k
    with pytest.raises(ConfigError, match="needs the base model"):
        apply_noise(micro_model, 0.5, 1.0, _gen(), mask="magnitude")


@pytest.mark.parametrize("override, key", [
    ("noise.alpha=-0.1", "noise.alpha"), ("noise.alpha=1.5", "noise.alpha"),
    ("noise.beta=2.0", "noise.beta"), ("study.alphas=[0.5, 1.2]", "study.alphas")])
def test_alpha_beta_validated_once_in_the_config(override, key):
    """α has one rule (`config.alpha_ok`) for `noise.alpha` and every `study.alphas`."""
    from undo.config import load_config

    with pytest.raises(ConfigError, match=f"'{key}'.*valid: (a number|numbers) in \\[0, 1\\]"):
        load_config(None, [override])


@pytest.mark.parametrize("name", ["llama", "gemma2", "gpt2", "gpt_neox"])
def test_norms_toward_init_mixes_gains_with_a_fresh_init(name):
    """`norms="toward_init"`: g -> (1-α)·g + α·g_init, with g_init what the family's own norm
    module starts from (1, or 0 for Gemma-2's 1 + g); at α = 1 the norms are a fresh
    init's. Norm biases (GPT-2, NeoX) start at 0, so they are only shrunk."""
    from transformers import AutoModelForCausalLM

    from families import tiny_configs
    from undo.stages.noise import param_group

    cfg = tiny_configs(64, {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0})[name]
    fresh = dict(AutoModelForCausalLM.from_config(cfg).named_parameters())
    for alpha in (0.5, 1.0):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.3)  # a "trained" model: gains and biases off their init
        before = _params(model)
        apply_noise(model, alpha, 0.1, _gen(), norms="toward_init")
        fam = FAMILIES[name]
        norms = [k for k in before if param_group(k, fam) == "norms"]
        assert any(k.endswith("weight") for k in norms)
        for k, v in model.named_parameters():
            if k not in norms:
                continue
            init = fresh[k] if k.endswith("weight") else torch.zeros_like(v)
            assert torch.allclose(v, (1 - alpha) * before[k] + alpha * init), k


def test_default_noise_is_the_papers_experiment():
    """The default treatment of norm gains is `toward_init` (config and function alike):
    on Gemma-2 (x·(1 + g), g_init 0) it is bit-for-bit the authors' shrink, so it is the
    paper's experiment; on Llama the effective gain moves toward 1, not toward 0."""
    from transformers import AutoModelForCausalLM

    from families import tiny_configs

    assert NoiseConfig().norms == "toward_init"
    cfgs = tiny_configs(64, {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0})
    torch.manual_seed(0)
    gemma = AutoModelForCausalLM.from_config(cfgs["gemma2"])
    with torch.no_grad():
        for p in gemma.parameters():
            p.add_(0.3)
    paper, default = copy.deepcopy(gemma), copy.deepcopy(gemma)
    apply_noise(paper, 0.8, 0.1, _gen(), norms="shrink")
    apply_noise(default, 0.8, 0.1, _gen())
    for (k, a), (_, b) in zip(paper.named_parameters(), default.named_parameters(), strict=True):
        assert torch.equal(a, b), k
    llama = AutoModelForCausalLM.from_config(cfgs["llama"])
    with torch.no_grad():
        llama.model.norm.weight.fill_(2.0)
    apply_noise(llama, 0.8, 0.1, _gen())
    assert torch.allclose(llama.model.norm.weight, torch.full_like(llama.model.norm.weight,
                                                                   0.2 * 2.0 + 0.8))


def test_norms_keep_leaves_gains_and_shrinks_biases():
    from transformers import AutoModelForCausalLM

    from families import tiny_configs

    cfg = tiny_configs(64, {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0})["gpt2"]
    model = AutoModelForCausalLM.from_config(cfg)
    before = _params(model)
    report = apply_noise(model, 0.6, 0.1, _gen(), norms="keep")
    for k, v in model.named_parameters():
        if param_group(k, GPT2) != "norms":
            continue
        expected = before[k] if k.endswith("weight") else 0.4 * before[k]
        assert torch.allclose(v, expected), k
    gains = sum(v.numel() for k, v in before.items()
                if param_group(k, GPT2) == "norms" and k.endswith("weight"))
    assert report.params_touched == report.params_total - gains


def test_norms_mode_validated(micro_model):
    with pytest.raises(ConfigError, match="noise.norms"):
        apply_noise(micro_model, 0.5, 0.1, _gen(), norms="zero")
