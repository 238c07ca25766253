"""Process-wide settings: library chatter off, hub download bars on."""

from huggingface_hub.utils import are_progress_bars_disabled
from transformers.utils import logging as hf_logging

from undo import runtime


def test_quiet_keeps_hub_download_bars_and_hides_weight_loading_bars():
    runtime.quiet()
    assert not are_progress_bars_disabled()  # a multi-GB download shows its progress
    assert not hf_logging.is_progress_bar_enabled()  # transformers' own bars stay off
