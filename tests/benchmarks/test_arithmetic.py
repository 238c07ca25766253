import random
import re

import pytest

from undo.benchmarks.arithmetic.benchmark import Config as DataConfig
from undo.benchmarks.arithmetic.benchmark import ItemBatches
from undo.benchmarks.arithmetic.data import (
    SYMBOLS,
    TEMPLATES,
    TRAIN_TEMPLATES,
    ArithmeticData,
    Item,
    _pairs,
    encode,
    fact_key,
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
    # a fact lies wholly in one split, whatever the operation
    part = {(op, *p): name for op, s in bench.splits.items()
            for name in ("heldout", "attack", "known") for p in getattr(s, name)}
    for item, name in part.items():
        assert all(part[f] == name for f in _same_fact(*item)), item


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


_PAIRS = {op: set(_pairs(op)) for op in SYMBOLS}


def _same_fact(op: str, a: int, b: int) -> set[tuple[str, int, int]]:
    """Every item testing the fact of (op, a, b), written out by hand: the item, its
    commuted form and the inverse operation's items (those that exist)."""
    if op in ("add", "sub"):
        x, y = (a, b) if op == "add" else (b, a - b)
        if y == 0:  # a - a: no addition of positive operands behind it
            return {("sub", a, b)}
        cands = {("add", x, y), ("add", y, x), ("sub", x + y, x), ("sub", x + y, y)}
    else:
        x, y = (a, b) if op == "mul" else (a // b, b)
        cands = {("mul", x, y), ("mul", y, x), ("div", x * y, x), ("div", x * y, y)}
    return {c for c in cands if (c[1], c[2]) in _PAIRS[c[0]]}


def test_fact_key_groups_commuted_and_inverse_items():
    assert _same_fact("mul", 3, 7) == {("mul", 3, 7), ("mul", 7, 3), ("div", 21, 3),
                                       ("div", 21, 7)}
    assert _same_fact("sub", 30, 12) == {("add", 12, 18), ("add", 18, 12), ("sub", 30, 12),
                                         ("sub", 30, 18)}
    assert _same_fact("add", 40, 30) == {("add", 40, 30), ("add", 30, 40)}  # 70 > 50
    keys: dict[tuple[str, int, int], set[tuple[str, int, int]]] = {}
    for op in SYMBOLS:
        for a, b in _pairs(op):
            keys.setdefault(fact_key(op, a, b), set()).add((op, a, b))
    # fact_key's groups are exactly the hand-written ones: one key per fact, every item in one
    for group in keys.values():
        for op, a, b in group:
            assert _same_fact(op, a, b) == group, (op, a, b)


@pytest.mark.parametrize("seed", [0, 1])
def test_no_fact_of_an_eval_item_in_attack(seed):
    b = ArithmeticData(DataConfig(seed=seed))  # the default 100 pairs per op
    attack = {(op, *p) for op, s in b.splits.items() for p in s.attack}
    trained = {(op, *p) for op, s in b.splits.items() for p in s.trained}
    sets = b.eval_sets()
    for name, items in sets.items():
        assert items
        for it in items:
            fact = _same_fact(it.op, it.a, it.b)
            assert not fact & attack, (name, it)
            if name.endswith("heldout"):  # never trained on, in any form
                assert not fact & trained, (name, it)


@pytest.mark.parametrize("heldout,attack", [(0.1, 0.35), (0.2, 0.5), (0.05, 0.2)])
def test_split_fractions_in_items_per_op(heldout, attack):
    b = ArithmeticData(DataConfig(heldout_fraction=heldout, attack_fraction=attack))
    for op, s in b.splits.items():
        n = len(_pairs(op))
        # within 1.5 points of the configured shares (rounding whole facts per stratum)
        assert len(s.heldout) / n == pytest.approx(heldout, abs=0.015), op
        assert len(s.attack) / len(s.trained) == pytest.approx(attack, abs=0.015), op


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
    a = ArithmeticData(DataConfig(seed=3))
    b = ArithmeticData(DataConfig(seed=3))
    c = ArithmeticData(DataConfig(seed=4))
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
    b = ArithmeticData(DataConfig())  # weights add, sub 1.5; mul, div 2
    assert b.retain_share() == pytest.approx(3 / 7)
    even = ArithmeticData(DataConfig(op_weights={"add": 1, "sub": 1, "mul": 1, "div": 1}))
    assert even.retain_share() == pytest.approx(1 / 2)
