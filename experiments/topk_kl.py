"""How far is the top-k cached KL from the exact KL? (teacher cache, `topk` mode)

    python experiments/topk_kl.py TEACHER_DIR [--alpha 0.6] [--batches 20] [--ks 1 2 4 8 16]
        [--distilled STUDENT_DIR] [--out experiments/results/topk_kl.json]

For a real teacher and students (its noised copy, as in UNDO, a random init, as in
Unlearn-and-Distill, and optionally one already distilled) on the distillation data, compares per batch the exact forward KL
with the (k+1)-bucket KL the `topk` cache gives (never larger: data-processing
inequality), and the cosine similarity of their gradients with respect to the logits.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from undo.artifacts import model_folder, write_json
from undo.benchmarks.arithmetic.benchmark import Config as DataConfig
from undo.benchmarks.arithmetic.benchmark import ItemBatches
from undo.benchmarks.arithmetic.data import ArithmeticData
from undo.config import NoiseConfig
from undo.models import load_model, load_tokenizer, reinit_like
from undo.objectives.distill_kl import forward_kl, forward_logits, next_token_mask, topk_kl
from undo.stages.noise import noised_copy


def compare(teacher: torch.nn.Module, student: torch.nn.Module, batches: ItemBatches, n: int,
            ks: list[int]) -> dict:
    rows: dict[str, list[float]] = {"exact": []}
    for k in ks:
        rows[f"top{k}"], rows[f"top{k}_grad_cos"] = [], []
    for step in range(n):
        b = batches(step, 0)
        ids, am = b["input_ids"], b["attention_mask"]
        mask = next_token_mask(am)
        with torch.no_grad():
            t = forward_logits(teacher, ids, am)
            s0 = forward_logits(student, ids, am)
        s = s0.clone().requires_grad_()
        exact = forward_kl(s, t, mask)
        (g_exact,) = torch.autograd.grad(exact, s)
        rows["exact"].append(exact.item())
        lt = F.log_softmax(t[mask].float(), dim=-1)
        for k in ks:
            top, idx = lt.topk(k, dim=-1)
            rest = torch.logsumexp(lt.scatter(1, idx, float("-inf")), dim=-1)
            s = s0.clone().requires_grad_()
            approx = topk_kl(s, idx, top, rest, mask)
            (g,) = torch.autograd.grad(approx, s)
            rows[f"top{k}"].append(approx.item())
            rows[f"top{k}_grad_cos"].append(
                F.cosine_similarity(g.flatten(), g_exact.flatten(), dim=0).item())
    exact_mean = statistics.mean(rows["exact"])
    out: dict = {"exact_kl": exact_mean, "by_k": {}}
    for k in ks:
        m = statistics.mean(rows[f"top{k}"])
        out["by_k"][k] = {"kl": m, "abs_diff": exact_mean - m,
                          "rel_diff": (exact_mean - m) / exact_mean if exact_mean else 0.0,
                          "grad_cosine": statistics.mean(rows[f"top{k}_grad_cos"])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("teacher")
    ap.add_argument("--alpha", type=float, default=0.6)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--distilled", default=None,
                    help="also a student already distilled from this teacher (near the end)")
    ap.add_argument("--out", default="experiments/results/topk_kl.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    path = model_folder(args.teacher, "teacher")
    teacher, tok = load_model(path).eval(), load_tokenizer(path)
    bench = ArithmeticData(DataConfig())
    batches = ItemBatches(bench.stream(bench.ops), tok, 128, seed=0)
    students = {
        f"noised_alpha_{args.alpha:g}": noised_copy(teacher, NoiseConfig(beta=0.1), 0,
                                                    alpha=args.alpha)[0].eval(),
        "random_init": reinit_like(teacher, 0).eval(),
    }
    if args.distilled:
        students["distilled"] = load_model(model_folder(args.distilled, "--distilled")).eval()
    result = {"teacher": str(path), "vocab": teacher.config.vocab_size,
              "batches": args.batches, "batch_size": 128, "ks": args.ks,
              "students": {name: compare(teacher, s, batches, args.batches, args.ks)
                           for name, s in students.items()}}
    for name, r in result["students"].items():
        print(f"{name}: exact KL {r['exact_kl']:.4f}; " + ", ".join(
            f"k={k}: {v['kl']:.4f} ({v['rel_diff']:.1%} lower, grad cos {v['grad_cosine']:.3f})"
            for k, v in r["by_k"].items()))
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
