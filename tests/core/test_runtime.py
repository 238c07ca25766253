"""Process-wide settings: library chatter off, hub download bars on, pool workers that
end with their parent."""

import os
import subprocess
import sys
import time

from huggingface_hub.utils import are_progress_bars_disabled
from transformers.utils import logging as hf_logging

from undo import runtime


def test_quiet_keeps_hub_download_bars_and_hides_weight_loading_bars():
    runtime.quiet()
    assert not are_progress_bars_disabled()  # a multi-GB download shows its progress
    assert not hf_logging.is_progress_bar_enabled()  # transformers' own bars stay off


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_pool_workers_end_when_their_parent_is_killed(tmp_path):
    # A parent that starts a pool, reports its worker's pid, then is SIGKILLed: the
    # worker must not linger (it used to wait on its queue forever, reparented to init).
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, sys, time\n"
        "from undo.runtime import process_pool\n"
        "pool = process_pool(1)\n"
        "print(pool.submit(os.getpid).result(), flush=True)\n"
        "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    assert _alive(worker)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 20
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(worker), f"pool worker {worker} outlived its killed parent"


def test_bf16_mixed_runs_matmuls_in_bfloat16_and_keeps_float32_weights():
    import pytest
    import torch

    from undo.runtime import compute_precision

    lin = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    with compute_precision("fp32", "cpu"):
        assert lin(x).dtype == torch.float32
    with compute_precision("bf16-mixed", "cpu"):
        y = lin(x)
        loss = y.float().square().sum()
        loss.backward()
    assert y.dtype == torch.bfloat16
    assert lin.weight.dtype == lin.weight.grad.dtype == torch.float32
    assert lin(x).dtype == torch.float32  # the context ends with its block
    with compute_precision("bf16-mixed", "cpu"):  # one context over many optimizer steps
        before = lin(x)
        with torch.no_grad():
            lin.weight.add_(1.0)
        assert not torch.equal(lin(x), before)  # the forward reads the updated weights
    with pytest.raises(ValueError, match="valid: fp32, bf16-mixed"), \
            compute_precision("bf16", "cpu"):
        pass


def test_bf16_is_slow_only_on_a_cpu_without_bfloat16_instructions():
    bf16_is_slow = runtime.bf16_is_slow
    old = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n"
    new = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n"
    assert bf16_is_slow("cpu", old)
    assert not bf16_is_slow("cpu", new)
    assert not bf16_is_slow("cpu", new.replace("avx512_bf16", "amx_bf16"))
    assert not bf16_is_slow("cpu", "processor\t: 0\n")  # no flags line: cannot tell
