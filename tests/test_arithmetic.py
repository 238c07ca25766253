import random
import re

import pytest

from undo.benchmarks.arithmetic import Config as DataConfig
from undo.benchmarks.arithmetic import ItemBatches
from undo.data.arithmetic import (
    SYMBOLS,
    TEMPLATES,
    TRAIN_TEMPLATES,
    ArithmeticBenchmark,
    Item,
    _pairs,
    encode,
)


def test_answers_correct_and_formats():
    assert Item("add", 7, 12).prompt() == "07+12=" and Item("add", 7, 12).answer_text() == "910"
    assert Item("sub", 50, 3).answer == 47
    assert Item("mul", 20, 20).answer_text() == "004"
    assert Item("div", 120, 12).prompt() == "120/12=" and Item("div", 120, 12).answer == 10
    for op in SYMBOLS:
        for a, b in _pairs(op):
            it = Item(op, a, b)
            assert 0 <= it.answer <= 999
            if op == "div":
                assert a % b == 0 and 1 <= b <= 20 and 1 <= it.answer <= 20
            if op in ("add", "sub"):
                assert 1 <= a <= 50 and 1 <= b <= 50
            if op == "mul":
                assert 1 <= a <= 20 and 1 <= b <= 20


def test_templates_count_and_operands():
    for op, ts in TEMPLATES.items():
        assert len(ts) >= TRAIN_TEMPLATES + 5
        assert len(set(ts)) == len(ts)
        for t in ts:
            words = re.findall(r"[a-z]+", t)
            assert "x" in words and "y" in words, (op, t)


def test_splits_disjoint_and_cover(bench):
    for op, s in bench.splits.items():
        h, a, k = set(s.heldout), set(s.attack), set(s.known)
        assert not (h & a) and not (h & k) and not (a & k)
        assert h | a | k == set(_pairs(op))


def test_eval_items_are_trained_never_attack(bench):
    for op in bench.ops:
        seen = bench.eval_items([op])
        held = bench.eval_items([op], heldout=True)
        split = bench.splits[op]
        assert {(i.a, i.b) for i in seen} <= set(split.known)
        assert not {(i.a, i.b) for i in seen} & set(split.attack)
        assert {(i.a, i.b) for i in held} <= set(split.heldout)
        assert all(i.template < TRAIN_TEMPLATES for i in seen)
        assert all(i.template < 0 or i.template >= TRAIN_TEMPLATES for i in held)
        assert {i.fmt for i in seen} == {"equation", "word"}


def test_attack_stream_only_attack_pairs(bench, tokenizer):
    stream = bench.stream(bench.forget_ops, "attack")
    rng = random.Random(0)
    for _ in range(20):
        for it in stream.sample(rng, 32):
            assert it.op in bench.forget_ops
            assert (it.a, it.b) in set(bench.splits[it.op].attack)


def test_gold_stream_has_no_forget_ops(bench):
    stream = bench.stream(bench.retain_ops)
    rng = random.Random(0)
    assert {it.op for _ in range(20) for it in stream.sample(rng, 32)} <= set(bench.retain_ops)


def test_generation_is_deterministic(tokenizer):
    a = ArithmeticBenchmark(DataConfig(seed=3))
    b = ArithmeticBenchmark(DataConfig(seed=3))
    c = ArithmeticBenchmark(DataConfig(seed=4))
    assert a.splits == b.splits and a.eval_sets() == b.eval_sets()
    assert a.splits != c.splits
    ba = ItemBatches(a.stream(a.ops), tokenizer, 16, seed=1)
    bb = ItemBatches(b.stream(b.ops), tokenizer, 16, seed=1)
    for step in range(5):
        assert all((ba(step)[k] == bb(step)[k]).all() for k in ba(step))
    assert not (ba(0)["input_ids"].shape == ba(1)["input_ids"].shape
                and (ba(0)["input_ids"] == ba(1)["input_ids"]).all())


def test_encode_labels_only_answer_and_eos(tokenizer):
    items = [Item("add", 7, 12), Item("mul", 3, 4, 0)]
    batch = encode(items, tokenizer)
    for i, it in enumerate(items):
        ids, labels = batch["input_ids"][i], batch["labels"][i]
        labelled = ids[labels != -100].tolist()
        assert tokenizer.decode(labelled[:-1]) == it.answer_text()
        assert labelled[-1] == tokenizer.eos_token_id
        n = int(batch["attention_mask"][i].sum())
        assert ids[0] == tokenizer.bos_token_id and (ids[n:] == tokenizer.pad_token_id).all()


def test_retain_share():
    b = ArithmeticBenchmark(DataConfig())  # weights add, sub 1.5; mul, div 2
    assert b.retain_share() == pytest.approx(3 / 7)
    even = ArithmeticBenchmark(DataConfig(op_weights={"add": 1, "sub": 1, "mul": 1, "div": 1}))
    assert even.retain_share() == pytest.approx(1 / 2)
