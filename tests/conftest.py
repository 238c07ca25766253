"""Shared fixtures: tiny real models, built from config (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config

from undo.benchmarks.arithmetic.benchmark import Config as DataConfig
from undo.benchmarks.arithmetic.data import ArithmeticData
from undo.benchmarks.text.shipped import python_docs
from undo.config import ModelConfig
from undo.models import build_model
from undo.tokenizers import build_char_tokenizer, train_bpe_tokenizer

# One thread: tiny models gain nothing from a second one, and under load (CI's 2 cores,
# worker processes of the parallel tests) two threads per process thrash (2 OpenMP
# threads under load were ~50x slower than 1 on micro models).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test starts with one thread, whatever an earlier one set (`threads=`)."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer():
    return build_char_tokenizer()


@pytest.fixture(scope="session")
def bench():
    return ArithmeticData(DataConfig(eval_items_per_op=16))


@pytest.fixture
def micro_model(tokenizer):
    return build_model(ModelConfig(preset="micro"), tokenizer, seed=0)


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory) -> Path:
    """A tiny random GPT-2 with a locally trained BPE: a stand-in for a hub model."""
    tok = train_bpe_tokenizer(python_docs()[:200], vocab_size=300)
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=64,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("gpt2") / "model"
    AutoModelForCausalLM.from_config(config).save_pretrained(d)
    tok.save_pretrained(d)
    return d
