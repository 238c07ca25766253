from transformers import AutoTokenizer

from undo.benchmarks.arithmetic.data import TEMPLATES, Item


def test_round_trip_and_reload(tokenizer, tmp_path):
    texts = [Item(op, 120, 12, t).prompt() for op in TEMPLATES for t in range(15)]
    texts.append("07*12=480")
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        assert len(ids) == len(text)  # one token per character
        assert tokenizer.unk_token_id not in ids, text
        assert tokenizer.decode(ids) == text
    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(texts[0])["input_ids"] == tokenizer(texts[0])["input_ids"]
    assert (again.pad_token_id, again.bos_token_id, again.eos_token_id) == (0, 1, 2)
