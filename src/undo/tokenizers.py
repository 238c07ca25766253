"""Locally built tokenizers, saved as HF tokenizers: characters (the synthetic
benchmarks) and a byte-level BPE trained on a corpus (the text benchmark).

Built with the `tokenizers` library and wrapped in `PreTrainedTokenizerFast`, so every
checkpoint folder we write loads with `AutoTokenizer.from_pretrained`.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]
# Every character the arithmetic benchmark writes: digits, operators, lower-case words.
CHARACTERS = list(string.digits) + list("+-*/= ?.,'") + list(string.ascii_lowercase)


def build_char_tokenizer(characters: list[str] | None = None) -> PreTrainedTokenizerFast:
    chars = characters or CHARACTERS
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # Each character is its own token; Fuse joins them back without spaces on decode.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK
    )
    hf.padding_side = "right"
    return hf


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE of at most `vocab_size` tokens (specials included) trained on `texts`.

    Deterministic: the same texts in the same order give the same vocabulary and merges,
    in any process. Every byte is in the alphabet, so no text ever maps to <unk>.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK
    )
    hf.padding_side = "right"
    return hf
