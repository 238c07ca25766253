"""Shared fixtures: tiny real models, built from config (no downloads)."""

from __future__ import annotations

import pytest
import torch

from undo.benchmarks.arithmetic.benchmark import Config as DataConfig
from undo.benchmarks.arithmetic.data import ArithmeticData
from undo.config import ModelConfig
from undo.models import build_model
from undo.tokenizers import build_char_tokenizer

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
