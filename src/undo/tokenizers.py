"""Character-level tokenizer for the synthetic benchmarks, saved as a HF tokenizer.

Built with the `tokenizers` library and wrapped in `PreTrainedTokenizerFast`, so every
checkpoint folder we write loads with `AutoTokenizer.from_pretrained`.
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
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
