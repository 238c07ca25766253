"""Unlearning losses on hand-built tensors, against direct computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from undo.objectives.grad_ascent import grad_ascent_loss
from undo.objectives.grad_diff import grad_diff_loss
from undo.objectives.maxent import MaxEntArgs, kl_uniform, maxent_forget_loss
from undo.objectives.npo import npo_loss
from undo.objectives.repnoise import mmd2, sample_positions
from undo.objectives.rmu import control_vector, rmu_loss
from undo.objectives.sam import sam_perturbation
from undo.objectives.simnpo import simnpo_loss
from undo.objectives.unlearning import forward_kl, sequence_logprob, token_ce


def _batch(seed, b=3, t=6, v=7):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, v, generator=g)
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[:, :3] = -100  # prompt
    labels[0, -1] = -100  # padding
    return logits, labels


def _direct_ce(logits, labels):
    """Per-token CE by hand: −log softmax at the target, mean over labelled positions."""
    total, n = 0.0, 0
    for i in range(labels.size(0)):
        for t in range(labels.size(1) - 1):
            y = int(labels[i, t + 1])
            if y == -100:
                continue
            z = logits[i, t]
            total += float(torch.logsumexp(z, 0) - z[y])
            n += 1
    return total / n


def test_token_ce_matches_hand_computation():
    logits, labels = _batch(0)
    assert float(token_ce(logits, labels)) == pytest.approx(_direct_ce(logits, labels), rel=1e-5)


def test_grad_ascent_and_grad_diff():
    lf, yf = _batch(1)
    lr_, yr = _batch(2)
    assert float(grad_ascent_loss(lf, yf)) == pytest.approx(-_direct_ce(lf, yf), rel=1e-5)
    lam = 2.5
    want = -_direct_ce(lf, yf) + lam * _direct_ce(lr_, yr)
    assert float(grad_diff_loss(lf, yf, lr_, yr, lam)) == pytest.approx(want, rel=1e-5)


def test_kl_uniform_zero_for_uniform_logits_and_hand_value():
    mask = torch.ones(2, 4, dtype=torch.bool)
    assert float(kl_uniform(torch.full((2, 4, 5), 3.7), mask)) == pytest.approx(0.0, abs=1e-6)
    # One position with p = (1/2, 1/4, 1/4): KL(U‖p) = Σ (1/3) log((1/3)/p_v).
    p = torch.tensor([0.5, 0.25, 0.25])
    want = sum((1 / 3) * math.log((1 / 3) / float(pv)) for pv in p)
    got = kl_uniform(p.log().view(1, 1, 3), torch.ones(1, 1, dtype=torch.bool))
    assert float(got) == pytest.approx(want, rel=1e-5)
    assert want > 0


def _maxent_batch(seed):
    logits, labels = _batch(seed)
    attention = torch.ones_like(labels)
    attention[0, -1] = 0  # the padded position of `_batch`
    return logits, {"labels": labels, "attention_mask": attention}


def test_maxent_answer_variant_counts_only_labelled_positions():
    logits, batch = _maxent_batch(3)
    mask = batch["labels"][:, 1:] != -100
    # Make every labelled position uniform: the loss is 0 whatever the rest is.
    logits[:, :-1][mask] = 0.0
    assert float(maxent_forget_loss(logits, batch, "answer")) == pytest.approx(0.0, abs=1e-6)


def test_maxent_default_covers_every_non_padding_position():
    """The paper's forget term (their uniform_forget_loss_fn): every position whose next
    token is not padding, the prompt included; the padded one is ignored."""
    logits, batch = _maxent_batch(3)
    answers = batch["labels"][:, 1:] != -100
    logits[:, :-1][answers] = 0.0
    assert float(maxent_forget_loss(logits, batch)) > 0.1  # the prompt still counts
    logits[:, :-1][batch["attention_mask"][:, 1:].bool()] = 0.0
    logits[0, -2] = torch.randn(logits.size(-1)) * 5  # predicts the pad: not counted
    assert float(maxent_forget_loss(logits, batch)) == pytest.approx(0.0, abs=1e-6)
    assert MaxEntArgs().positions == "all"


def test_forward_kl_identity_and_hand_value():
    a = torch.randn(2, 3, 5)
    m = torch.ones(2, 3, dtype=torch.bool)
    assert float(forward_kl(a, a, m)) == pytest.approx(0.0, abs=1e-6)
    p, q = torch.tensor([0.7, 0.3]), torch.tensor([0.4, 0.6])
    want = float((p * (p / q).log()).sum())
    got = forward_kl(p.log().view(1, 1, 2), q.log().view(1, 1, 2), torch.ones(1, 1, dtype=torch.bool))
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_sequence_logprob_sums_answer_tokens():
    logits, labels = _batch(4)
    lp = F.log_softmax(logits, -1)
    want = torch.zeros(labels.size(0))
    for i in range(labels.size(0)):
        for t in range(labels.size(1) - 1):
            if labels[i, t + 1] != -100:
                want[i] += lp[i, t, labels[i, t + 1]]
    assert torch.allclose(sequence_logprob(logits, labels), want, atol=1e-5)


def test_npo_hand_value_and_limits():
    logp = torch.tensor([-1.0, -3.0])
    ref = torch.tensor([-2.0, -2.0])
    beta = 0.5
    want = (2 / beta) * sum(math.log(1 + math.exp(beta * (a - b))) for a, b in zip(logp, ref, strict=True)) / 2
    assert float(npo_loss(logp, ref, beta)) == pytest.approx(want, rel=1e-6)
    # β → 0: L − 2·log2/β → mean(logp − ref), i.e. gradient ascent's objective.
    tiny = 1e-4
    shifted = float(npo_loss(logp.double(), ref.double(), tiny)) - 2 * math.log(2) / tiny
    assert shifted == pytest.approx(float((logp - ref).mean()), abs=1e-3)
    # Gradient wrt logp at β → 0 is GA's (1/B each); for β > 0 it vanishes once π_θ ≪ π_ref.
    x = logp.clone().requires_grad_(True)
    npo_loss(x, ref, tiny).backward()
    assert torch.allclose(x.grad, torch.full((2,), 0.5), atol=1e-4)
    far = torch.tensor([-200.0], requires_grad=True)
    loss = npo_loss(far, torch.tensor([0.0]), 1.0)
    loss.backward()
    assert 0 <= float(loss.detach()) < 1e-6 and abs(float(far.grad)) < 1e-6  # bounded below by 0


def test_simnpo_hand_value():
    logp = torch.tensor([-2.0, -6.0])
    lengths = torch.tensor([2.0, 3.0])
    beta, gamma = 2.5, 0.5
    want = sum(-(2 / beta) * math.log(1 / (1 + math.exp(beta * lp / n + gamma)))
               for lp, n in zip(logp.tolist(), lengths.tolist(), strict=True)) / 2
    assert float(simnpo_loss(logp, lengths, beta, gamma)) == pytest.approx(want, rel=1e-6)


def test_rmu_loss_hand_value():
    control = torch.tensor([1.0, 0.0])
    h_f = torch.tensor([[[1.0, 2.0], [3.0, 0.0]]])  # (1, 2, 2)
    m_f = torch.tensor([[True, False]])  # only the first position counts: ((0)² + 2²)/2 = 2
    h_r = torch.tensor([[[1.0, 1.0]]])
    h_ref = torch.tensor([[[0.0, 1.0]]])  # (1² + 0)/2 = 0.5
    total, fl, rl = rmu_loss(h_f, m_f, control, h_r, h_ref, torch.ones(1, 1, dtype=torch.bool), 4.0)
    assert (float(fl), float(rl), float(total)) == pytest.approx((2.0, 0.5, 4.0))
    total2, _, rl2 = rmu_loss(h_f, m_f, control)
    assert float(rl2) == 0.0 and float(total2) == pytest.approx(2.0)


def test_control_vector_norm_and_seed():
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    u = control_vector(16, 7.0, "uniform", g())
    assert float(u.norm()) == pytest.approx(7.0, rel=1e-6) and bool((u >= 0).all())
    assert torch.equal(u, control_vector(16, 7.0, "uniform", g()))
    v = control_vector(16, 7.0, "gaussian", g())
    assert float(v.norm()) == pytest.approx(7.0, rel=1e-6) and bool((v < 0).any())


def test_mmd2_zero_for_equal_samples_and_hand_value():
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    assert float(mmd2(x, x.clone())) == pytest.approx(0.0, abs=1e-6)
    # One point each, distance² 4: σ₀ = mean off-diagonal d² = 4; with one kernel
    # k = exp(−d²/σ₀): MMD² = 1 + 1 − 2·exp(−1).
    a, b = torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]])
    assert float(mmd2(a, b, kernel_num=1)) == pytest.approx(2 - 2 * math.exp(-1), rel=1e-5)
    far = mmd2(x, x + 10.0)
    assert float(far) > float(mmd2(x, x + 0.1))


def test_sample_positions_respects_mask_and_cap():
    h = torch.arange(2 * 5 * 1, dtype=torch.float).view(2, 5, 1)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    pts = sample_positions(h, mask, 100, torch.Generator().manual_seed(0))
    assert sorted(pts.view(-1).tolist()) == [0.0, 1.0, 2.0, 5.0, 6.0]
    assert sample_positions(h, mask, 3, torch.Generator().manual_seed(0)).shape == (3, 1)


def test_sam_perturbation_has_norm_rho():
    grads = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])]
    eps = sam_perturbation(grads, 0.5)
    assert float(torch.sqrt(sum((e ** 2).sum() for e in eps))) == pytest.approx(0.5)
    assert torch.allclose(eps[0], torch.tensor([0.3, 0.0]))
