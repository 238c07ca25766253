import copy
import json
import time

import pytest
import torch

from undo import integrity
from undo.artifacts import fingerprint
from undo.benchmarks.arithmetic.benchmark import ItemBatches
from undo.config import ModelConfig, OptimConfig
from undo.configlib import ConfigError
from undo.models import build_model, save_model
from undo.objectives import LOSSES
from undo.stages.teacher_cache import CachedBatches, TeacherCache
from undo.train import train


@pytest.fixture
def teacher(tokenizer):
    return build_model(ModelConfig(preset="micro"), tokenizer, seed=1)


@pytest.fixture
def batches(tokenizer, bench):
    return ItemBatches(bench.stream(bench.ops), tokenizer, 16, seed=0)


def _cache(tmp_path, teacher, batches, **kw):
    return TeacherCache(tmp_path / "cache", teacher, batches, key={"teacher": "t"},
                        chunk_steps=3, **kw)


def test_cached_full_logprobs_give_the_online_loss_and_grads(micro_model, teacher, batches,
                                                             tmp_path):
    online = LOSSES.get("distill_kl")(copy.deepcopy(teacher))
    cached = LOSSES.get("distill_kl")()
    cb = CachedBatches(batches, _cache(tmp_path, teacher, batches))
    for step in (0, 4):
        a, _ = online.loss(micro_model, batches(step, 0))
        ga = torch.autograd.grad(a, list(micro_model.parameters()))
        b, _ = cached.loss(micro_model, cb(step, 0))
        gb = torch.autograd.grad(b, list(micro_model.parameters()))
        assert b.item() == pytest.approx(a.item(), rel=1e-5)
        assert all(torch.allclose(x, y, atol=1e-7, rtol=1e-4) for x, y in zip(ga, gb, strict=True))


def test_cached_training_matches_online_training(tokenizer, teacher, batches, tmp_path):
    """A few optimizer steps: the logged losses of the two runs agree."""
    cfg = OptimConfig(steps=8, batch_size=16, lr=3e-3, log_every=1, grad_clip=1.0)
    runs = {}
    for name in ("online", "cached"):
        student = build_model(ModelConfig(preset="micro"), tokenizer, seed=0)
        if name == "online":
            obj, data = LOSSES.get("distill_kl")(copy.deepcopy(teacher)), batches
        else:
            obj = LOSSES.get("distill_kl")()
            data = CachedBatches(batches, _cache(tmp_path, teacher, batches))
        r = train(student, obj, data, cfg, tmp_path / name, progress=False)
        logs = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        runs[name] = ([json.loads(x)["loss"] for x in logs], r)
    (lo, ro), (lc, rc) = runs["online"], runs["cached"]
    assert lc == pytest.approx(lo, rel=1e-4)
    assert ro.tokens == rc.tokens and ro.flops > rc.flops  # online counts the teacher


def test_cache_is_built_once_and_reused(teacher, batches, tmp_path):
    c1 = _cache(tmp_path, teacher, batches)
    c1.fill(7)  # steps 0..6 -> chunks 0, 1, 2 of 3 steps
    assert c1.built_chunks == 3 and c1.build_flops > 0
    c2 = _cache(tmp_path, teacher, batches)
    assert c2.dir == c1.dir
    t = c2.targets(5, 0)
    assert c2.built_chunks == 0 and set(t) == {"teacher_logprobs"}
    assert t["teacher_logprobs"].shape[1] == teacher.config.vocab_size
    # The key separates teachers / modes: a different one lands elsewhere.
    assert _cache(tmp_path, teacher, batches, mode="topk", k=4).dir != c1.dir


def test_topk_cache_rows_and_lower_bound(micro_model, teacher, batches, tmp_path):
    v = teacher.config.vocab_size
    full = LOSSES.get("distill_kl")(copy.deepcopy(teacher)).loss(micro_model, batches(0))[0]
    obj = LOSSES.get("distill_kl")()
    for k in (4, v):
        cb = CachedBatches(batches, _cache(tmp_path, teacher, batches, mode="topk", k=k))
        b = cb(0)
        assert b["teacher_topk_idx"].shape[1] == k
        loss = obj.loss(micro_model, b)[0].item()
        assert loss <= full.item() + 1e-6
        if k == v:
            assert loss == pytest.approx(full.item(), rel=1e-5)


def test_misaligned_cache_is_refused(teacher, batches, tmp_path, tokenizer, bench):
    _cache(tmp_path, teacher, batches).fill(3)
    other = ItemBatches(bench.stream(bench.ops), tokenizer, 8, seed=5)  # not what was cached
    with pytest.raises(RuntimeError, match="rows"):
        CachedBatches(other, _cache(tmp_path, teacher, other))(0)


def test_fingerprint_follows_content(teacher, tokenizer, tmp_path):
    a = save_model(teacher, tokenizer, tmp_path / "a")
    b = save_model(copy.deepcopy(teacher), tokenizer, tmp_path / "b")
    assert fingerprint(a) == fingerprint(b)
    with torch.no_grad():
        teacher.model.norm.weight.add_(1.0)
    c = save_model(teacher, tokenizer, tmp_path / "c")
    assert fingerprint(c) != fingerprint(a)
    with pytest.raises(ConfigError, match="holds no weights"):
        fingerprint(tmp_path)


def test_a_chunk_another_process_is_building_is_waited_for_not_built_again(
        teacher, batches, tmp_path):
    """Two distillations sharing a cache (seeds of a study, 2 workers): a run that needs a
    chunk another process is building waits for its lock and reads that chunk."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    locked, built = ctx.Event(), ctx.Queue()

    def other_run() -> None:
        c = _cache(tmp_path, teacher, batches)
        with c._lock(0):
            locked.set()
            time.sleep(1.0)  # still building when the parent asks for the chunk
            c._build(0)
        built.put(c.built_chunks)

    child = ctx.Process(target=other_run)
    child.start()
    assert locked.wait(30)
    mine = _cache(tmp_path, teacher, batches)
    t = mine.targets(1, 0)  # chunk 0: being built by the child
    child.join(30)
    assert child.exitcode == 0 and built.get(timeout=5) == 1
    assert mine.built_chunks == 0 and mine.rebuilt == {}  # read the child's, intact
    assert torch.equal(t["teacher_logprobs"],
                       _cache(tmp_path / "fresh", teacher, batches).targets(1, 0)["teacher_logprobs"])
    # Its manifest is the child's and holds: the file verifies.
    assert integrity.read_file(mine._path(0))


def test_a_damaged_chunk_is_reported_once_and_rebuilt(teacher, batches, tmp_path, capsys):
    """The chunk is read before and again after taking its lock: the damage is one line on
    stderr (the read under the lock, which rebuilds it), not one per read."""
    want = _cache(tmp_path, teacher, batches).targets(1, 0)["teacher_logprobs"]
    path = _cache(tmp_path, teacher, batches)._path(0)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the tensor data: same size, same header
    path.write_bytes(bytes(data))
    capsys.readouterr()
    mine = _cache(tmp_path, teacher, batches)
    assert torch.equal(mine.targets(1, 0)["teacher_logprobs"], want)
    err = capsys.readouterr().err
    assert err.count("teacher cache chunk damaged") == 1, err
    assert path.name in err and "content differs from its recorded hash" in err
    assert list(mine.rebuilt) == [path.name] and mine.built_chunks == 1
    assert integrity.read_file(path)  # intact again
