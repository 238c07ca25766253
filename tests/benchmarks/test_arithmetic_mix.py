"""The arithmetic benchmark with the authors' composition: English rows mixed in at a
share, rows packed to a fixed length, loss on every token (undo.benchmarks.arithmetic.mix)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from undo.benchmarks import build_benchmark
from undo.config import AttackConfig, ConfigError, run_config


@pytest.fixture(scope="module")
def english(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("english")
    words = "the driver reads a value from the device, then writes it back. why not?"
    text = "\n\n".join(f"Paragraph {i}: " + " ".join([words] * 6) + " a+b=c" for i in range(80))
    (d / "english.txt").write_text(text)
    return str(d / "english.txt")


def bench(english: str, **over):
    data = {"seq_len": 48, "english": [{"path": english}], "loss_positions": "all",
            "op_weights": {"add": 1, "sub": 1, "mul": 1, "div": 1}, **over}
    return build_benchmark(run_config({"data": data}).data)


def english_rows(batch, tok) -> list[str]:
    rows = [tok.decode(r, skip_special_tokens=True) for r in batch["input_ids"]]
    return [r for r in rows if not any(c in r for c in "=")]


def test_rows_and_shares(english):
    b = bench(english)
    tok = b.own_tokenizer()
    x = b.batches("base", tok, 40, seed=0)(3)
    assert x["input_ids"].shape == (40, 48) and bool(x["attention_mask"].all())
    assert bool((x["labels"] == x["input_ids"]).all())  # every token carries the loss
    assert len(english_rows(x, tok)) == 30  # 0.75 of 40 rows
    # English is lower-cased and the operators are gone: no English row writes an equation
    assert all(r == r.lower() and "+" not in r for r in english_rows(x, tok))
    g = b.batches("gold", tok, 40, seed=0)(3)
    assert len(english_rows(g, tok)) == 35  # 1 - 0.25 x 0.5: the forget rows become English
    assert b.english_share("gold") == pytest.approx(0.875)
    # gold arithmetic rows hold retain operations only
    gold_items = b.batches("gold", tok, 40, seed=0).items(3)
    assert {it.op for it in gold_items} <= {"add", "sub"} and gold_items
    # deterministic in (seed, step)
    assert bool((b.batches("base", tok, 40, seed=0)(3)["input_ids"] == x["input_ids"]).all())


def test_answer_loss_and_unlearn_items(english):
    b = bench(english, loss_positions="answer")
    tok = b.own_tokenizer()
    x = b.batches("base", tok, 8, seed=1)(0)
    lab = x["labels"] != -100
    eng = [i for i, r in enumerate(x["input_ids"]) if "=" not in tok.decode(r)]
    assert all(bool(lab[i].all()) for i in eng) and not bool(lab.all())
    u = b.batches("unlearn", tok, 8, seed=1)(0)
    assert u["forget"]["input_ids"].shape[0] in (6, 8)  # single items (word batches hold 0.75)


def test_attacks(english):
    b = bench(english)
    tok = b.own_tokenizer()
    paper = b.attack_batches(AttackConfig(batch_size=16), tok, "0-0")
    ops = Counter(it.op for it in paper.items(0))
    assert set(ops) == {"add", "sub", "mul", "div"} and paper.n_english == 12
    fo = b.attack_batches(AttackConfig(batch_size=16, retain_fraction=0.0), tok, "0-0")
    assert {it.op for it in fo.items(0)} == {"mul", "div"} and fo.n_english == 0
    info = b.check_attack(AttackConfig(batch_size=16), [paper], 3, tok)
    assert info["item_counts"]["forget_items"] > 0


def test_validation(english):
    with pytest.raises(ConfigError, match="seq_len"):
        run_config({"data": {"english": [{"path": english}]}})
    with pytest.raises(ConfigError, match="english_share"):
        run_config({"data": {"seq_len": 48, "english": [{"path": english}],
                             "english_share": 1.0}})
    assert Path(english).exists()
