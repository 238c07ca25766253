"""`distill.logits=chunked`: the KL from last hidden states, the head applied per chunk,
must equal the loss on the models' full logits, value and gradients."""

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM

from undo.benchmarks.arithmetic.benchmark import ItemBatches
from undo.config import ConfigError, load_config
from undo.objectives.distill_hidden import (
    check_head,
    head_of,
    hidden_kl,
    student_hidden,
    teacher_hidden,
)
from undo.objectives.distill_kl import DistillKL, _rows_full, forward_logits, next_token_mask

V = 1000
SMALL = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=8,
             max_position_embeddings=64)



def _model(arch: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if arch == "llama":  # untied head
        m = LlamaForCausalLM(LlamaConfig(**SMALL, tie_word_embeddings=False))
    else:  # tied head; a small softcap so tanh is far from linear on these logits
        m = Gemma2ForCausalLM(Gemma2Config(**SMALL, final_logit_softcapping=0.5,
                                           attn_logit_softcapping=50.0, sliding_window=64,
                                           attn_implementation="eager"))
        with torch.no_grad():  # logits of a few units, so the softcap bends them
            m.model.norm.weight.add_(2.0)
    return m.double()


def _batch(right_padded: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (3, 11), generator=g)
    am = torch.ones(3, 11, dtype=torch.long)
    am[1, 8:] = 0
    am[2, 5:] = 0
    if not right_padded:
        am[2] = am[2].flip(0)  # left padding: the attention mask must be passed
    return {"input_ids": ids, "attention_mask": am}


def _loss_and_grads(obj: DistillKL, student: torch.nn.Module,
                    batch: dict) -> tuple[float, dict[str, torch.Tensor]]:
    student.zero_grad(set_to_none=True)
    loss, _ = obj.loss(student, batch)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in student.named_parameters()}


def _assert_same(a: tuple, b: tuple) -> None:
    assert a[0] == pytest.approx(b[0], rel=1e-10) and a[0] > 1e-5
    assert a[1].keys() == b[1].keys()
    for n in a[1]:
        assert torch.allclose(a[1][n], b[1][n], rtol=1e-8, atol=1e-13), n


# Left padding on Llama: HF's eager Gemma-2 gives NaN rows for a left-padded float64 batch
# (its full logits too), which is about the model, not this loss.
@pytest.mark.parametrize("arch, right_padded", [("llama", True), ("gemma2", True),
                                                ("llama", False)])
def test_online_teacher_loss_and_gradients_equal_full_logits(arch, right_padded):
    student, teacher, batch = _model(arch, 0), _model(arch, 1), _batch(right_padded)
    full = DistillKL(teacher, temperature=1.7)
    # 3 positions per chunk: the 21 or 19 counted positions leave a partial last chunk.
    chunked = DistillKL(teacher, temperature=1.7, chunk_positions=3, logits="chunked")
    _assert_same(_loss_and_grads(chunked, student, batch), _loss_and_grads(full, student, batch))


def test_cached_full_and_topk_targets_equal_full_logits():
    student, teacher, batch = _model("gemma2", 0), _model("gemma2", 1), _batch(True)
    mask = next_token_mask(batch["attention_mask"])
    with torch.no_grad():
        lt = F.log_softmax(forward_logits(teacher, batch["input_ids"],
                                          batch["attention_mask"])[mask] / 1.3, -1)
    top, idx = lt.topk(5, -1)
    rest = torch.logsumexp(lt.scatter(1, idx, float("-inf")), -1)
    for extra in ({"teacher_logprobs": lt},
                  {"teacher_topk_idx": idx, "teacher_topk_logp": top, "teacher_rest_logp": rest}):
        b = {**batch, **extra}
        want = _loss_and_grads(DistillKL(None, temperature=1.3), student, b)
        got = _loss_and_grads(DistillKL(None, 1.3, chunk_positions=4, logits="chunked"),
                              student, b)
        _assert_same(got, want)


def test_identical_models_give_zero_loss_and_gradient():
    student = _model("gemma2", 0)
    obj = DistillKL(_model("gemma2", 0), chunk_positions=5, logits="chunked")
    loss, grads = _loss_and_grads(obj, student, _batch(True))
    assert abs(loss) < 1e-12
    assert max(g.abs().max().item() for g in grads.values()) < 1e-12


def test_head_transform_read_from_config():
    head = head_of(_model("gemma2", 0))
    assert head.softcap == 0.5 and head.mul is None and head.div is None
    assert head_of(_model("llama", 0)).softcap is None


def test_head_check_rejects_hidden_states_that_are_not_the_heads_input():
    m = _model("llama", 0)
    ids = _batch(True)["input_ids"]
    check_head(m, student_hidden, ids)
    check_head(m, teacher_hidden, ids)
    with pytest.raises(ConfigError, match="distill.logits='chunked'.*valid: 'full'"):
        check_head(m, lambda mm, x, am: mm.model.embed_tokens(x), ids)


def test_config_field_validated():
    assert load_config(None, ["distill.logits=chunked"]).distill.logits == "chunked"
    with pytest.raises(ConfigError, match="'distill.logits': got 'fused'"):
        load_config(None, ["distill.logits=fused"])
    with pytest.raises(ConfigError, match="'distill.logits'"):
        DistillKL(None, logits="fused")


def test_sub_chunks_and_chunks_of_any_size_give_the_same_loss_and_gradients():
    head = head_of(_model("gemma2", 0))
    g = torch.Generator().manual_seed(0)
    h = torch.randn(13, 32, generator=g, dtype=torch.float64)
    lt = F.log_softmax(torch.randn(13, V, generator=g, dtype=torch.float64), -1)

    def rows(z, sl):
        return _rows_full(z, lt[sl].clone(), 1.7)

    got = []
    for chunk, sub in ((13, 13), (5, 2), (4, 3), (1, 1)):
        x = h.clone().requires_grad_()
        loss = hidden_kl(x, head, rows, chunk, sub)
        loss.backward()
        got.append((loss.item(), x.grad, head.weight.grad.clone()))
        head.weight.grad = None
    for loss, gx, gw in got[1:]:
        assert loss == pytest.approx(got[0][0], rel=1e-12)
        assert torch.allclose(gx, got[0][1], atol=1e-14)
        assert torch.allclose(gw, got[0][2], atol=1e-14)


def test_project_micro_model_chunked_equals_full(micro_model, tokenizer, bench):
    """The study's own architecture, float32, padded arithmetic batches."""
    teacher = copy.deepcopy(micro_model)
    with torch.no_grad():
        for p in teacher.parameters():
            p.mul_(1.3)
    batch = ItemBatches(bench.stream(bench.ops, word_fraction=0.5), tokenizer, 8, seed=0)(0)
    full = _loss_and_grads(DistillKL(teacher, 1.5), micro_model, batch)
    chunked = _loss_and_grads(DistillKL(teacher, 1.5, chunk_positions=7, logits="chunked"),
                              micro_model, batch)
    assert chunked[0] == pytest.approx(full[0], rel=1e-5)
    for n, g in full[1].items():
        assert torch.allclose(chunked[1][n], g, rtol=1e-4, atol=1e-6), n



def test_no_grad_gives_the_same_loss():
    student, teacher, batch = _model("llama", 0), _model("llama", 1), _batch(True)
    obj = DistillKL(teacher, chunk_positions=4, logits="chunked")
    with torch.no_grad():
        a = obj.loss(student, batch)[0]
    assert a.item() == pytest.approx(obj.loss(student, batch)[0].item(), rel=1e-12)
    assert not a.requires_grad
