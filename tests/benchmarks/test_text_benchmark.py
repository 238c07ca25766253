"""The `text` benchmark on small corpora written here: English sentences (retain) and a
synthetic Greek-alphabet language (forget), a few dozen documents each."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

from undo.benchmarks import build_benchmark
from undo.benchmarks.evaluate import evaluate
from undo.benchmarks.text.corpus import Corpus, pack, split_of
from undo.config import ConfigError, ModelConfig, run_config
from undo.models import build_model

torch.set_num_threads(1)

ENGLISH = ["the", "a", "cat", "dog", "bird", "runs", "sleeps", "sits", "on", "under", "mat",
           "house", "garden", "tree", "sun", "moon", "quickly", "slowly", "red", "blue"]
GREEK = "αβγδεζηθικλμνξοπρστυφχψω"


def make_docs(n: int, seed: int, greek: bool) -> list[str]:
    rng = random.Random(seed)
    vocab = (["".join(rng.choice(GREEK) for _ in range(rng.randint(2, 6))) for _ in range(30)]
             if greek else ENGLISH)
    return [" ".join(" ".join(rng.choice(vocab) for _ in range(rng.randint(5, 12))) + "."
                     for _ in range(rng.randint(2, 5))) for _ in range(n)]


def write_jsonl(path: Path, docs: list[str], field: str = "text") -> str:
    path.write_text("".join(json.dumps({field: d, "id": i}) + "\n" for i, d in enumerate(docs)))
    return str(path)


@pytest.fixture
def corpora(tmp_path: Path) -> dict[str, str]:
    return {"forget": write_jsonl(tmp_path / "greek.jsonl", make_docs(60, 1, greek=True)),
            "retain": write_jsonl(tmp_path / "english.jsonl", make_docs(60, 2, greek=False))}


def load(corpora: dict[str, str], **data: Any) -> Any:
    """A resolved RunConfig with a text `data:` section (every check of config load runs)."""
    run = data.pop("run", {})
    section = {"benchmark": "text", "forget": [{"path": corpora["forget"]}],
               "retain": [{"path": corpora["retain"]}], "seq_len": 16, "vocab_size": 320,
               "eval_fraction": 0.2, "attack_fraction": 0.2, **data}
    return run_config({"data": section, **run})


def bench_of(corpora: dict[str, str], **data: Any) -> Any:
    return build_benchmark(load(corpora, **data).data)


def test_config_defaults_and_sources(corpora):
    cfg = run_config({"data": {"benchmark": "text", "forget": [{"path": corpora["forget"]}],
                              "retain": [{"path": corpora["retain"], "weight": 2}]}}).data
    assert (cfg.seq_len, cfg.eval_fraction, cfg.attack_fraction, cfg.forget_weight,
            cfg.eval_windows, cfg.tokenizer, cfg.vocab_size, cfg.seed) == (
        128, 0.1, 0.1, 0.5, 256, "bpe", 4096, 0)
    assert cfg.distill is None and cfg.attack is None
    src = cfg.retain[0]
    assert (src.field, src.split, src.weight, src.max_documents) == ("text", "train", 2.0, None)


def test_splits_disjoint_stable_and_duplicates_together(tmp_path):
    docs = make_docs(80, 3, greek=False)
    path = Path(write_jsonl(tmp_path / "c.jsonl", docs + docs[:5]))  # 5 exact duplicates
    cfg = load({"forget": str(path), "retain": str(path)}).data  # Corpus reads one source
    corpus = Corpus("forget", cfg.forget, 0, 0.2, 0.2)
    ids = {s: corpus.ids(s) for s in ("train", "eval", "attack")}
    assert all(ids[s] for s in ids)
    assert not (ids["train"] & ids["eval"] or ids["train"] & ids["attack"]
                or ids["eval"] & ids["attack"])
    where = {t: s for s in ids for t in corpus.docs[0][s]}
    for d in docs[:5]:
        assert sum(t == d for s in ids for t in corpus.docs[0][s]) == 2  # both copies ...
        assert sum(t == d for t in corpus.docs[0][where[d]]) == 2  # ... in one split
    # Appending documents leaves every earlier document in its split.
    write_jsonl(path, docs + make_docs(40, 4, greek=True))
    grown = Corpus("forget", cfg.forget, 0, 0.2, 0.2)
    grown_where = {t: s for s in ids for t in grown.docs[0][s]}
    assert all(grown_where[d] == where[d] for d in docs)
    assert grown.counts()["eval"] > corpus.counts()["eval"] - 2  # the new ones split too
    # The seed salts the hash: another seed, other splits.
    assert [split_of(d, 1, 0.2, 0.2) for d in docs] != [where[d] for d in docs]


def test_bpe_round_trip_deterministic_and_trained_on_train_docs_only(corpora, tmp_path):
    # A document of a word seen nowhere else, placed in the eval split: no merge may know it.
    marker = next(f"zqx{k} " * 400 for k in range(1000)
                  if split_of(f"zqx{k} " * 400, 0, 0.2, 0.2) == "eval")
    docs = make_docs(60, 1, greek=True) + [marker]
    corpora = {**corpora, "forget": write_jsonl(tmp_path / "f.jsonl", docs)}
    tok = bench_of(corpora).own_tokenizer()
    assert not any("zqx" in t for t in tok.get_vocab())
    b = bench_of(corpora)
    assert b.own_tokenizer() is b.own_tokenizer()  # cached per instance
    assert b.own_tokenizer().get_vocab() == tok.get_vocab()  # deterministic
    assert len(tok) == 320
    for text in ["the cat sits on the mat.", docs[0], "unseen: Ωμέγα ünïcödé 12345 \t!"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == text
    assert len(tok(docs[0])["input_ids"]) < 0.7 * len(docs[0].encode())  # it learned merges
    tok.save_pretrained(tmp_path / "tok")
    again = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert again(docs[0])["input_ids"] == tok(docs[0])["input_ids"]
    assert [again.pad_token, again.bos_token, again.eos_token, again.unk_token] == [
        "<pad>", "<bos>", "<eos>", "<unk>"]


def test_packing_joins_documents_with_eos(corpora):
    tok = bench_of(corpora).own_tokenizer()
    texts = make_docs(7, 5, greek=False)
    windows, n_tokens = pack(texts, tok, 16)
    flat = [i for t in texts for i in tok(t, add_special_tokens=False)["input_ids"]
            + [tok.eos_token_id]]
    assert n_tokens == len(flat)
    assert windows.shape == (len(flat) // 16, 16)
    assert windows.flatten().tolist() == flat[: windows.numel()]  # the tail is dropped


def test_batches_deterministic_shapes_and_mixture(corpora):
    b = bench_of(corpora, forget_weight=0.25)
    tok = b.own_tokenizer()
    base = b.batches("base", tok, 64, seed=3)
    x = base(5, 1)
    assert x["input_ids"].shape == (64, 16) and x["input_ids"].dtype == torch.long
    assert torch.equal(x["labels"], x["input_ids"]) and bool(x["attention_mask"].all())
    assert torch.equal(b.batches("base", tok, 64, seed=3)(5, 1)["input_ids"], x["input_ids"])
    for other in (base(5, 0), base(6, 1), b.batches("base", tok, 64, 4)(5, 1),
                  b.batches("base", tok, 64, 3, rank=1)(5, 1)):
        assert not torch.equal(other["input_ids"], x["input_ids"])
    forget_rows = {tuple(r.tolist()) for r in b._pack("forget", "train", tok)[0][0]}
    retain_rows = {tuple(r.tolist()) for r in b._pack("retain", "train", tok)[0][0]}
    rows = [tuple(r.tolist()) for s in range(20) for r in base(s, 0)["input_ids"]]
    share = sum(r in forget_rows for r in rows) / len(rows)
    assert all(r in forget_rows or r in retain_rows for r in rows)
    assert 0.2 < share < 0.3  # forget_weight 0.25 of 1280 windows
    gold = b.batches("gold", tok, 32, 0)(0)
    assert all(tuple(r.tolist()) in retain_rows for r in gold["input_ids"])
    un = b.batches("unlearn", tok, 8, 0)(2, 0)
    assert set(un) == {"forget", "retain", "noise_seed"}
    assert all(tuple(r.tolist()) in forget_rows for r in un["forget"]["input_ids"])
    assert all(tuple(r.tolist()) in retain_rows for r in un["retain"]["input_ids"])
    distill = b.batches("distill", tok, 64, 0)(0)["input_ids"]  # default: the base mix
    assert {tuple(r.tolist()) for r in distill} & forget_rows
    with pytest.raises(ValueError, match="role"):
        b.batches("nope", tok, 4, 0)


def test_weighted_sources_and_distill_corpus(corpora, tmp_path):
    extra = write_jsonl(tmp_path / "more.jsonl", make_docs(60, 7, greek=False))
    distill = write_jsonl(tmp_path / "distill.jsonl", make_docs(60, 8, greek=False))
    b = bench_of(corpora, retain=[{"path": corpora["retain"], "weight": 3},
                                  {"path": extra, "weight": 1}],
                 distill=[{"path": distill}])
    tok = b.own_tokenizer()
    first = {tuple(r.tolist()) for r in b._pack("retain", "train", tok)[0][0]}
    rows = [tuple(r.tolist()) for s in range(20) for r in b.batches("gold", tok, 64, 0)(s)[
        "input_ids"]]
    assert 0.7 < sum(r in first for r in rows) / len(rows) < 0.8
    distill_rows = {tuple(r.tolist()) for r in b._pack("distill", "train", tok)[0][0]}
    assert b.corpora["distill"].counts()["train"] == 60  # used whole
    assert all(tuple(r.tolist()) in distill_rows
               for r in b.batches("distill", tok, 32, 0)(0)["input_ids"])
    es = b.eval_set("retain", tok)  # two sources, interleaved, with per-source metrics
    assert es.sources[:2] == ["english", "more"]
    m = es.metrics(es.score(build_model(ModelConfig(preset="micro"), tok, seed=0)))
    assert {"ce", "acc", "ce/english", "acc/english", "ce/more", "acc/more"} == set(m)


def test_eval_metrics_match_a_hand_computation(corpora):
    b = bench_of(corpora, eval_windows=5)
    tok = b.own_tokenizer()
    model = build_model(ModelConfig(preset="micro"), tok, seed=0)
    es = b.eval_set("forget", tok)
    assert len(es) == 5 and es.subset(2) == [0, 1] and es.subset(0) == list(range(5))
    scores = es.score(model)
    w = es.windows[1:2].long()
    with torch.no_grad():
        out = model(input_ids=w, labels=w)  # HF shifts the labels: mean CE over 15 tokens
    assert scores["n_tok"].tolist() == [15] * 5
    assert scores["ce_sum"][1].item() == pytest.approx(out.loss.item() * 15, rel=1e-5)
    hand_hits = (out.logits[0, :-1].argmax(-1) == w[0, 1:]).sum().item()
    assert scores["hits"][1].item() == hand_hits
    m = es.metrics(scores)
    assert m["ce"] == pytest.approx(scores["ce_sum"].sum().item() / 75, rel=1e-6)
    assert m["acc"] == pytest.approx(scores["hits"].sum().item() / 75)
    assert 4 < m["ce"] < 7  # about ln(320) = 5.8 for an untrained model
    part = es.score(model, [1])
    assert part["ce_sum"].item() == pytest.approx(scores["ce_sum"][1].item(), rel=1e-5)
    assert part["index"].tolist() == [1]
    flat = evaluate(model, b, tok, sets=("retain", "forget"))
    assert set(flat) == {"retain/ce", "retain/acc", "forget/ce", "forget/acc"}
    assert flat["forget/ce"] == pytest.approx(m["ce"], rel=1e-6)
    assert b.forget_metric.name == "forget/ce" and not b.forget_metric.higher_is_better
    assert b.stop_rule == "retain_ce" and b.stop_sets == ("retain_val", "forget_val")
    assert b.eval_names == ("retain", "forget", "retain_val", "forget_val")


def test_stop_rule_validation_windows_are_not_evaluated_ones(corpora):
    """`<role>_val` holds the eval windows after the evaluated ones: never a window the
    report quotes or an attack scores; too few left is a ConfigError naming the fix."""
    b = bench_of(corpora, eval_windows=5)
    tok = b.own_tokenizer()
    for role in ("retain", "forget"):
        ev, val = b.eval_set(role, tok).windows, b.eval_set(f"{role}_val", tok).windows
        assert len(val) > 0
        assert not any(torch.equal(v, e) for v in val for e in ev)
    big = bench_of(corpora, eval_windows=10_000)
    with pytest.raises(ConfigError, match="eval_windows"):
        big.eval_set("retain_val", big.own_tokenizer())


def test_attack_batches_and_check(corpora):
    cfg = load(corpora, run={"attack": {"retain_fraction": 0.5, "batch_size": 8}})
    b = build_benchmark(cfg.data)
    tok = b.own_tokenizer()
    data = [b.attack_batches(cfg.attack, tok, f"0-{s}") for s in (0, 1)]
    x = data[0](3)["input_ids"]
    assert torch.equal(x, b.attack_batches(cfg.attack, tok, "0-0")(3)["input_ids"])
    forget_attack = {tuple(r.tolist()) for r in b._pack("forget", "attack", tok)[0][0]}
    retain_attack = {tuple(r.tolist()) for r in b._pack("retain", "attack", tok)[0][0]}
    assert all(tuple(r.tolist()) in forget_attack for r in x[:4])
    assert all(tuple(r.tolist()) in retain_attack for r in x[4:])
    info = b.check_attack(cfg.attack, data, 10, tok)
    assert info["eval_disjoint_from_attack"] is True
    assert info["window_counts"] == {"forget_windows": 80, "retain_windows": 80,
                                     "total_windows": 160}
    assert info["split_sizes"]["forget"]["documents"] == b.corpora["forget"].counts()["attack"]
    assert info["split_sizes"]["forget"]["windows"] == len(forget_attack)
    only_retain = load(corpora, run={"attack": {"retain_fraction": 1.0}}).attack
    with pytest.raises(ConfigError, match="no forget-domain"):
        b.check_attack(only_retain, [b.attack_batches(only_retain, tok, "0")], 10, tok)
    only_retain.allow_no_forget = True
    b.check_attack(only_retain, [b.attack_batches(only_retain, tok, "0")], 10, tok)


def test_attack_corpus_must_not_hold_eval_documents(corpora, tmp_path):
    b = bench_of(corpora)
    eval_docs = b.corpora["forget"].docs[0]["eval"]
    clean = write_jsonl(tmp_path / "attack.jsonl", make_docs(30, 9, greek=True))
    assert bench_of(corpora, attack=[{"path": clean}]).corpora["attack"].counts()[
        "attack"] == 30
    leaky = write_jsonl(tmp_path / "leaky.jsonl", make_docs(30, 9, greek=True) + eval_docs[:3])
    with pytest.raises(ConfigError, match="data.attack: 3 of its documents are also eval"):
        bench_of(corpora, attack=[{"path": leaky}])


def test_txt_paragraphs_folder_and_local_datasets(tmp_path, corpora):
    docs = make_docs(40, 1, greek=True)
    folder = tmp_path / "txt"
    folder.mkdir()
    (folder / "a.txt").write_text("\n\n".join(docs[:20]) + "\n")
    (folder / "b.txt").write_text("\n \n".join(docs[20:]))  # a blank line may hold spaces
    (folder / "notes.md").write_text("not read")
    cfg = load({**corpora, "forget": str(folder)}).data
    assert Corpus("forget", cfg.forget, 0, 0.2, 0.2).texts("train") == [
        d for d in docs if split_of(d, 0, 0.2, 0.2) == "train"]
    source = {"dataset": "json", "data_files": [corpora["forget"]], "streaming": True,
              "max_documents": 50}
    cfg = load(corpora, forget=[source]).data
    via_datasets = Corpus("forget", cfg.forget, 0, 0.2, 0.2)
    assert sum(via_datasets.counts().values()) == 50
    assert via_datasets.texts("eval") == [d for d in make_docs(60, 1, greek=True)[:50]
                                          if split_of(d, 0, 0.2, 0.2) == "eval"]


# ---------------------------------------------------------------------- bad input


def bad_jsonl(tmp_path: Path) -> str:
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n\n{"body": "no text"}\n')
    return str(tmp_path / "bad.jsonl")


@pytest.mark.parametrize("case, message", [
    ("missing", r"data.forget\[0\].path': got '.*nope.jsonl'; valid: an existing file"),
    ("empty", r"data.forget\[0\]': .*empty.jsonl holds no documents"),
    ("no_field", r"bad.jsonl, line 3: no field 'text'"),
    ("identical", "data.forget and data.retain hold the same 60 documents"),
    ("too_small", r"data.forget \(.*tiny.jsonl\) is too small for the splits"),
    ("dataset", r"data.forget\[0\].dataset': could not load 'json'.*FileNotFoundError"),
    ("dataset_field", r"data.forget\[0\].field': record 0 of 'json'.* no string field 'body'"),
    ("streaming", r"data.forget\[0\].max_documents.*when streaming=true"),
    ("both", r"data.forget\[0\]'.*exactly one of path, dataset"),
    ("suffix", r"data.forget\[0\].path'.*a .jsonl or .txt file"),
])
def test_bad_corpora_raise_config_errors(case, message, corpora, tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "notes.md").write_text("x")
    forget = {
        "missing": {"path": str(tmp_path / "nope.jsonl")},
        "empty": {"path": str(tmp_path / "empty.jsonl")},
        "no_field": {"path": bad_jsonl(tmp_path)},
        "identical": {"path": corpora["retain"]},
        "too_small": {"path": write_jsonl(tmp_path / "tiny.jsonl", make_docs(2, 1, True))},
        "dataset": {"dataset": "json", "data_files": [str(tmp_path / "nope.jsonl")]},
        "dataset_field": {"dataset": "json", "data_files": [corpora["forget"]], "field": "body",
                          "streaming": True, "max_documents": 5},
        "streaming": {"dataset": "json", "streaming": True},
        "both": {"path": corpora["forget"], "dataset": "json"},
        "suffix": {"path": str(tmp_path / "notes.md")},
    }[case]
    with pytest.raises(ConfigError, match=message):
        bench_of(corpora, forget=[forget])


def test_too_few_tokens_for_a_window(corpora):
    b = bench_of(corpora, seq_len=100_000, run={"model": {"max_position_embeddings": 100_000}})
    tok = b.own_tokenizer()
    with pytest.raises(ConfigError, match=r"data.forget\[0\] .* too small: its train split "
                                          r"has \d+ documents, \d+ tokens"):
        b.batches("base", tok, 4, 0)
    with pytest.raises(ConfigError, match="data.retain is too small: its eval split"):
        b.eval_set("retain", tok)


@pytest.mark.parametrize("run, message", [
    ({"attack": {"ops": ["mul"]}}, "'attack.ops'.*arithmetic-only"),
    ({"attack": {"word_fraction": 0.5}}, "'attack.word_fraction'.*arithmetic-only"),
    ({"data_tokenizer": "model"}, "'data.tokenizer': got 'model'.*set model.name_or_path"),
    ({"model": {"name_or_path": "some/model"}}, "'data.tokenizer': got 'bpe'.*vocabulary"),
    ({"data_seq_len": 256}, "'data.seq_len'.*max_position_embeddings \\(128\\)"),
])
def test_check_run_rejects_settings_that_do_not_fit(run, message, corpora):
    data = {k.removeprefix("data_"): run.pop(k) for k in list(run) if k.startswith("data_")}
    with pytest.raises(ConfigError, match=message):
        load(corpora, run=run, **data)


def test_filtered_distill_inputs_and_a_distill_corpus_conflict(corpora):
    """Both choose what the student distils on: one clear error, naming both."""
    load(corpora, run={"distill": {"inputs": "filtered"}})  # alone: fine
    with pytest.raises(ConfigError, match="'distill.inputs': got 'filtered'.*data.distill"):
        load(corpora, run={"distill": {"inputs": "filtered"}},
             distill=[{"path": corpora["retain"]}])


def test_check_attack_re_verifies_disjointness(corpora):
    cfg = load(corpora)
    b = build_benchmark(cfg.data)
    tok = b.own_tokenizer()
    data = [b.attack_batches(cfg.attack, tok, "0")]
    b.corpora["forget"].docs[0]["attack"] += b.corpora["forget"].docs[0]["eval"][:2]
    with pytest.raises(ConfigError, match="2 attack documents are also evaluation documents"):
        b.check_attack(cfg.attack, data, 5, tok)
