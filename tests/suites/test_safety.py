"""Nothing undo reads can run code; fingerprints of large model folders are sampled."""

from __future__ import annotations

import ast
import contextlib
import pickle
import shutil
from pathlib import Path

import pytest
import torch

import undo
import undo.artifacts as art
from undo import integrity
from undo.benchmarks.arithmetic.benchmark import ItemBatches
from undo.checkpoint import COUNTERS_FILE
from undo.config import OptimConfig
from undo.models import save_model
from undo.objectives import LOSSES
from undo.train import train

SRC = Path(undo.__file__).resolve().parent


def _unsafe_calls(tree: ast.AST) -> list[str]:
    """eval/exec calls, pickle imports, yaml.load, and torch.load without
    weights_only=True."""
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in ("eval", "exec"):
                bad.append(f"{f.id}()")
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                name = f"{f.value.id}.{f.attr}"
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant)
                           and k.value.value is True for k in node.keywords)
                if name == "torch.load" and not safe:
                    bad.append("torch.load without weights_only=True")
                if name in ("yaml.load", "yaml.unsafe_load"):
                    bad.append(name)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            if any(n.split(".")[0] in ("pickle", "dill", "cloudpickle") for n in names):
                bad.append("a pickle import")
    return bad


def test_source_has_no_code_running_loads():
    found = {str(p.relative_to(SRC)): b for p in sorted(SRC.rglob("*.py"))
             if (b := _unsafe_calls(ast.parse(p.read_text())))}
    assert found == {}
    # The scan itself finds what it looks for.
    assert _unsafe_calls(ast.parse("import torch\ntorch.load('x')\neval('1')")) == [
        "torch.load without weights_only=True", "eval()"]


class _Kill(Exception):
    pass


class _Planted:
    """Unpickling this creates a file: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# accelerate loads custom_checkpoint_*.pkl (registered objects) with weights_only=False
# and its other files with weights_only=True; undo registers nothing.
@pytest.mark.parametrize("planted", ["custom_checkpoint_0.pkl", "random_states_0.pkl",
                                     "optimizer.bin"])
def test_resume_never_unpickles_a_planted_checkpoint_file(planted, micro_model, tokenizer,
                                                          bench, tmp_path):
    cfg = OptimConfig(steps=6, batch_size=8, lr=1e-3, checkpoint_every=2)
    batches = ItemBatches(bench.stream(bench.ops), tokenizer, 8, seed=0)

    def kill(step, model):
        if step == 3:
            raise _Kill

    with pytest.raises(_Kill):
        train(micro_model, LOSSES.get("ce")(), batches, cfg, tmp_path, progress=False,
              on_step=kill)
    state = tmp_path / "state"
    assert (state / COUNTERS_FILE).is_file()
    assert not list(state.glob("custom_checkpoint_*"))  # counters are JSON, not a pickle
    marker = tmp_path / "pwned"
    (state / planted).write_bytes(pickle.dumps({"x": _Planted(marker)}))
    # The integrity manifest would refuse the changed file; an attacker who also rewrites
    # the manifest must still not get code run: the loaders never unpickle.
    integrity.write_manifest(state)
    # Refusing the file is fine; running it is not.
    with contextlib.suppress(RuntimeError, pickle.UnpicklingError):
        train(micro_model, LOSSES.get("ce")(), batches, cfg, tmp_path, progress=False)
    assert not marker.exists()


@pytest.fixture
def model_dir(micro_model, tokenizer, tmp_path):
    return save_model(micro_model, tokenizer, tmp_path / "a")


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _data_start(path: Path) -> int:
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


def test_fingerprint_under_the_cap_reads_every_byte(model_dir, tmp_path):
    assert sum(f.stat().st_size for f in model_dir.iterdir()) < art.FULL_HASH_MAX_BYTES
    before = art.fingerprint(model_dir)
    weights = model_dir / "model.safetensors"
    _flip(weights, weights.stat().st_size - 3)  # a byte no sample would hit
    assert art.fingerprint(model_dir) != before


def test_fingerprint_over_the_cap_samples(model_dir, tmp_path, monkeypatch):
    full = art.fingerprint(model_dir)
    monkeypatch.setattr(art, "FULL_HASH_MAX_BYTES", 1024)  # every model is "large" now
    monkeypatch.setattr(art, "SAMPLE_BLOCKS", 4)
    monkeypatch.setattr(art, "SAMPLE_BYTES", 256)
    weights = model_dir / "model.safetensors"
    start, size = _data_start(weights), weights.stat().st_size
    assert size - start > 4 * 256 * 4  # room for bytes between the samples

    fp = art.fingerprint(model_dir)
    assert fp != full  # the two branches never collide
    copy = shutil.copytree(model_dir, tmp_path / "copy")
    assert art.fingerprint(copy) == fp  # content, not place or mtime

    _flip(weights, start)  # inside the first sampled block
    assert art.fingerprint(model_dir) != fp
    _flip(weights, start)
    assert art.fingerprint(model_dir) == fp
    # The trade-off: a byte between samples goes unseen (documented in teacher_cache).
    _flip(weights, start + (size - start) // 6)
    assert art.fingerprint(model_dir) == fp
    # The header (names, dtypes, shapes, offsets) is hashed in full.
    header = bytearray(weights.read_bytes())
    i = header.index(b'"F32"')
    header[i:i + 5] = b'"F16"'
    weights.write_bytes(bytes(header))
    assert art.fingerprint(model_dir) != fp


def test_fingerprint_reads_little_of_a_large_file(tmp_path, monkeypatch):
    """Sampled: a folder of 64 MB is fingerprinted from ~4 MB of reads."""
    from safetensors.torch import save_file

    d = tmp_path / "big"
    d.mkdir()
    save_file({"w": torch.zeros(16 << 20)}, str(d / "model.safetensors"))  # 64 MiB
    (d / "config.json").write_text("{}")
    monkeypatch.setattr(art, "FULL_HASH_MAX_BYTES", 1 << 20)
    read = 0
    real_open = Path.open

    class Counting:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.fh.close()

        def read(self, n=-1):
            nonlocal read
            b = self.fh.read(n)
            read += len(b)
            return b

        def seek(self, *a):
            return self.fh.seek(*a)

    monkeypatch.setattr(Path, "open", lambda self, *a, **k: Counting(real_open(self, *a, **k)))
    art.fingerprint(d)
    assert read <= art.SAMPLE_BLOCKS * art.SAMPLE_BYTES + (1 << 16)
