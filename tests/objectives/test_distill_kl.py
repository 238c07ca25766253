import copy
import math

import pytest
import torch
import torch.nn.functional as F

from undo.benchmarks.arithmetic.benchmark import ItemBatches
from undo.compute import matmul_params
from undo.objectives import LOSSES
from undo.objectives.distill_kl import (
    forward_kl,
    forward_logits,
    is_right_padded,
    kl_per_row,
    next_token_mask,
    topk_kl,
)

AM = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])


def _logits(seed, shape=(3, 5, 7), dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_next_token_mask_hand_computed():
    want = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]]).bool()
    assert torch.equal(next_token_mask(AM), want)
    assert is_right_padded(AM) and not is_right_padded(AM.flip(1))


def test_kl_of_identical_logits_is_zero():
    s = _logits(0).requires_grad_()
    loss = forward_kl(s, s.detach().clone(), next_token_mask(AM))
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert s.grad.abs().max().item() < 1e-12


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_matches_torch_kl_div(temperature):
    s, t, m = _logits(0), _logits(1), next_token_mask(AM)
    ours = forward_kl(s, t, m, temperature=temperature, chunk=2)
    ref = F.kl_div(F.log_softmax(s[m] / temperature, -1), F.log_softmax(t[m] / temperature, -1),
                   log_target=True, reduction="batchmean") * temperature**2
    assert ours.item() == pytest.approx(ref.item(), rel=1e-10)


def test_hand_computed_two_token_case():
    # p_t = (0.5, 0.5), p_s = (0.8, 0.2): KL = 0.5 ln(0.5/0.8) + 0.5 ln(0.5/0.2)
    s = torch.tensor([[[0.8, 0.2], [1.0, 1.0]]], dtype=torch.float64).log()
    t = torch.zeros(1, 2, 2, dtype=torch.float64)
    want = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)
    loss = forward_kl(s, t, next_token_mask(torch.ones(1, 2)))
    assert loss.item() == pytest.approx(want, rel=1e-12)


def test_masked_positions_do_not_contribute():
    s, t, m = _logits(0).requires_grad_(), _logits(1), next_token_mask(AM)
    a = forward_kl(s, t, m)
    a.backward()
    s2, t2 = s.detach().clone(), t.clone()
    s2[~m] = 100.0 * torch.randn(int((~m).sum()), 7, dtype=torch.float64)
    t2[~m] = -50.0
    assert forward_kl(s2, t2, m).item() == pytest.approx(a.item(), rel=1e-12)
    assert s.grad[~m].abs().max() == 0


def test_chunked_gradient_matches_autograd_reference():
    s, t, m = _logits(0).requires_grad_(), _logits(1), next_token_mask(AM)
    g_chunk, = torch.autograd.grad(forward_kl(s, t, m, temperature=1.5, chunk=1), s)
    g_ref, = torch.autograd.grad(kl_per_row(s[m], t[m], 1.5).mean(), s)
    assert torch.allclose(g_chunk, g_ref, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x: forward_kl(x, t, m, chunk=3), (s,), fast_mode=True)


def test_packed_logprob_rows_equal_unpacked_logits():
    s, t, m = _logits(0), _logits(1), next_token_mask(AM)
    packed = F.log_softmax(t[m], -1)
    a = forward_kl(s, t, m)
    b = forward_kl(s, packed, m, packed=True, teacher_is_logprobs=True)
    assert a.item() == pytest.approx(b.item(), rel=1e-12)
    with pytest.raises(ValueError, match="teacher rows"):
        forward_kl(s, packed[:-1], m, packed=True, teacher_is_logprobs=True)


def test_topk_is_exact_at_full_k_and_a_lower_bound_below():
    s, t, m = _logits(0).requires_grad_(), _logits(1), next_token_mask(AM)
    lt = F.log_softmax(t[m], -1)
    exact = forward_kl(s, t, m).item()
    for k in (1, 3, 7):
        top, idx = lt.topk(k, -1)
        rest = torch.logsumexp(lt.scatter(1, idx, float("-inf")), -1)
        approx = topk_kl(s, idx, top, rest, m, chunk=2)
        assert approx.item() <= exact + 1e-12
        if k == 7:
            assert approx.item() == pytest.approx(exact, rel=1e-9)
        assert torch.autograd.gradcheck(
            lambda x, idx=idx, top=top, rest=rest: topk_kl(x, idx, top, rest, m, chunk=2,
                                                           temperature=1.3), (s,), fast_mode=True)


def test_low_precision_logits_keep_their_dtype():
    s = _logits(0, dtype=torch.float32).bfloat16().requires_grad_()
    loss = forward_kl(s, _logits(1, dtype=torch.float32).bfloat16(), next_token_mask(AM))
    loss.backward()
    assert loss.dtype == torch.float32 and s.grad.dtype == torch.bfloat16


def test_right_padded_forward_drops_mask_exactly(micro_model, tokenizer, bench):
    batch = ItemBatches(bench.stream(bench.ops, word_fraction=0.5), tokenizer, 16, seed=0)(0)
    ids, am = batch["input_ids"], batch["attention_mask"]
    assert not bool(am.all())  # there is padding
    with torch.no_grad():
        ref = micro_model(input_ids=ids, attention_mask=am).logits
        ours = forward_logits(micro_model, ids, am)
    real = am.bool()
    assert torch.allclose(ours[real], ref[real], atol=1e-6)


def test_objective_online_teacher(micro_model, tokenizer, bench):
    teacher = copy.deepcopy(micro_model)
    obj = LOSSES.get("distill_kl")(teacher)
    assert obj.extra_forward_params == matmul_params(teacher)
    assert not any(p.requires_grad for p in teacher.parameters())
    batch = ItemBatches(bench.stream(bench.ops), tokenizer, 8, seed=0)(0)
    loss, _ = obj.loss(micro_model, batch)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)  # student == teacher
    with torch.no_grad():
        for p in micro_model.parameters():
            p.mul_(0.5)
    loss, _ = obj.loss(micro_model, batch)
    loss.backward()
    assert loss.item() > 1e-4 and micro_model.lm_head.weight.grad is not None
    with pytest.raises(ValueError, match="no teacher"):
        LOSSES.get("distill_kl")().loss(micro_model, batch)
