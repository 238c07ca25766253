import torch

from undo.benchmarks.arithmetic.benchmark import Benchmark, Config, ItemEvalSet, score_items
from undo.benchmarks.arithmetic.data import Item, encode
from undo.benchmarks.evaluate import evaluate


class Oracle(torch.nn.Module):
    """Puts all mass on the true next token: exact match must be 1 and CE ~0."""

    def __init__(self, items, tokenizer, vocab):
        super().__init__()
        self.batch = encode(items, tokenizer)
        self.vocab = vocab
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, use_cache=None):
        nxt = torch.roll(input_ids, -1, dims=1)
        logits = torch.full((*input_ids.shape, self.vocab), -30.0)
        logits.scatter_(2, nxt.unsqueeze(-1), 30.0)
        return type("Out", (), {"logits": logits})()


def test_exact_match_equals_greedy_on_oracle(tokenizer):
    items = [Item("add", 7, 12), Item("div", 120, 12, 3)]
    oracle = Oracle(items, tokenizer, len(tokenizer))
    correct, ce, n = score_items(oracle, items, tokenizer)
    assert correct.all() and (ce / n < 1e-6).all()
    es = ItemEvalSet("x", items, tokenizer)
    m = es.metrics(es.score(oracle))
    assert m["acc"] == 1.0 and m["acc/add/equation"] == 1.0 and m["acc/div/word"] == 1.0


def _fit(model, items, tokenizer, steps: int) -> None:
    """Full-batch AdamW on `items` (answer tokens only): deterministic, ~1 s on a CPU."""
    batch = encode(items, tokenizer)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_exact_match_matches_greedy_decoding(micro_model, tokenizer):
    """The teacher-forced shortcut agrees with real greedy generation, item by item, on a
    model that gets some items right and some wrong (an untrained model gets all wrong,
    and then any shortcut that says "wrong" passes)."""
    torch.manual_seed(0)
    learned = [Item("add", a, b) for a in range(1, 5) for b in range(1, 5)]
    _fit(micro_model, learned, tokenizer, steps=200)
    unseen = [Item("add", a, b) for a in range(5, 9) for b in range(1, 5)]
    items = learned + unseen + [Item("add", a, b, 0) for a, b in ((1, 2), (3, 4))]
    correct, _, _ = score_items(micro_model, items, tokenizer)
    greedy = []
    for it in items:
        ids = encode([it], tokenizer)["input_ids"]
        n_prompt = 1 + len(it.prompt())
        out = micro_model.generate(ids[:, :n_prompt], max_new_tokens=4, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id, eos_token_id=None)
        greedy.append(out[0, n_prompt:].tolist() == ids[0, n_prompt:].tolist())
    assert correct.tolist() == greedy
    assert 0 < sum(greedy) < len(items)  # both outcomes occur, so the check can fail
    assert all(correct[: len(learned)])


def test_evaluate_keys(micro_model, tokenizer):
    bench = Benchmark(Config(eval_items_per_op=16))
    m = evaluate(micro_model, bench, tokenizer, sets=("retain", "forget"))
    assert {"retain/acc", "retain/ce", "forget/acc", "forget/ce"} <= set(m)
    assert "forget/acc/mul/word" in m and all(v >= 0 for v in m.values())
