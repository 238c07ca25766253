"""`undo export RUN_DIR --out DIR`: one model of a finished run as a release folder.

    DIR/  config.json, model.safetensors, generation_config.json, tokenizer files
          README.md       model card: YAML metadata + the run's measured facts (card.py)
          relearning.png  the run's relearning-curve figure
          evidence/summary.json, evidence/relearn.json   the numbers the card quotes
          manifest.json   sizes and hashes of every file (undo.integrity): `undo verify DIR`

The model is by default the UNDO student the run's verdict ranks best among those that
recovered their teacher's retain ability (`choose_model`); any model of the run can be
named instead, and the card then says plainly whether it recovered.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..artifacts import model_folder, read_json
from ..configlib import ConfigError
from ..integrity import MANIFEST, check_file, check_stage, remake, verify, write_manifest
from ..report import views
from ..report.build import summary_path
from ..report.schema import SummaryError, load
from ..report.verdict import MATCH
from .card import model_card

EVIDENCE = "evidence"


class ExportError(ConfigError):
    """A run that cannot be exported as asked (no such model, nothing recovered, ...)."""


@dataclass
class Exported:
    folder: Path
    model: dict[str, Any]  # the summary's entry of the exported model
    dtype: str
    card: str  # README.md's text


def _rank_key(m: dict, budget: int, higher_is_worse: bool) -> tuple:
    """Sort key, best first: the verdict's order (robustness that matched the gold standard
    at the least compute, else the most robust); without a defined robustness (no gold
    standard), the lowest worst-case forget metric after the largest attack budget."""
    r = views.counted_robustness(m, budget)
    compute = m["compute"].get("fraction_of_gold_steps") or m["compute"].get("steps") or 0
    if r is not None:
        return (0, 0 if r >= MATCH else 1, compute if r >= MATCH else -r)
    w = views.worst_case(m, budget)
    if w is not None:
        return (1, 0, w if higher_is_worse else -w)
    return (2, 0, compute)


def choose_model(summary: dict, name: str | None = None) -> dict:
    """The summary entry to export: `name`'s, or the best-ranked recovered UNDO student."""
    models = summary["models"]
    if name is not None:
        for m in models:
            if m["name"] == name:
                return m
        raise ExportError(f"--model {name!r}: no such model in the run; valid: "
                          f"{', '.join(m['name'] for m in models)}")
    undo = [m for m in models if m["kind"] == "undo"]
    ok = [m for m in undo if m.get("recovered") is True]
    if not ok:
        why = (f"none of its UNDO students ({', '.join(m['name'] for m in undo)}) recovered "
               f"the teacher's retain ability within budget") if undo else "it has no UNDO student"
        raise ExportError(f"no model to export by default: {why}; name one with --model "
                          f"(valid: {', '.join(m['name'] for m in models)}); its card will "
                          f"say that it did not recover")
    budget = views.largest_budget(summary)
    return min(ok, key=lambda m: _rank_key(m, budget, summary["metric"]["higher_is_worse"]))


def _in_run(run: Path, recorded: str) -> Path:
    """A path the summary recorded, or the same relative place in `run` (a run folder
    that was moved or copied keeps its layout)."""
    p = Path(recorded)
    if p.exists():
        return p
    for parent in ("stages", "attacks"):
        if parent in p.parts:
            i = len(p.parts) - 1 - p.parts[::-1].index(parent)
            return run.joinpath(*p.parts[i:])
    return run / p.name


def export_model(run_dir: str | Path, out: str | Path, *, model: str | None = None,
                 dtype: str | None = None, license: str | None = None) -> Exported:
    """Write the release folder `out` (atomically: a temp folder renamed into place);
    refuses an existing `out`. `dtype`: float32, bfloat16 or float16 (None: as stored)."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    from ..models import DTYPES, load_tokenizer

    if dtype is not None and dtype not in DTYPES:
        raise ExportError(f"--dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    try:
        src_summary = summary_path(run_dir)
        check_file(src_summary, "Run the study again (`undo run CONFIG`): it rebuilds "
                                "summary.json from its stages")
        summary = load(src_summary)
    except SummaryError as e:
        raise ExportError(str(e)) from None
    run = src_summary.parent
    entry = choose_model(summary, model)
    out = Path(out)
    if out.exists():
        raise ExportError(f"--out {out}: already exists; valid: a new folder (delete it to "
                          f"export there again)")
    model_dir = _in_run(run, entry["stage_dir"]) / "model"
    if not (model_dir / "config.json").is_file():
        raise ExportError(f"the model of {entry['name']!r} is missing: no {model_dir}; "
                          f"re-run the study to rebuild it")
    model_folder(model_dir, f"the model of {entry['name']!r}")  # its manifest checked
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        kwargs = {"dtype": DTYPES[dtype]} if dtype else {}
        lm = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
        tok = load_tokenizer(model_dir)
        # The generation config names the tokenizer's special tokens, so `generate` stops
        # at EOS and pads without a warning.
        gen = lm.generation_config if lm.generation_config is not None else \
            GenerationConfig.from_model_config(lm.config)
        for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(gen, k, None) is None:
                setattr(gen, k, getattr(tok, k))
        lm.generation_config = gen
        lm.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        stored = str(lm.dtype).removeprefix("torch.")
        evidence = _copy_evidence(run, src_summary, entry, tmp)
        figure = _relearning_figure(run, summary, tmp)
        card = model_card(summary, entry, stage=read_json(model_dir.parent / "summary.json"),
                          dtype=stored, figure=figure, evidence=evidence, license=license)
        (tmp / "README.md").write_text(card)
        write_manifest(tmp)  # `undo verify DIR` checks the release, as a push does first
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Exported(out, entry, stored, card)


def _copy_evidence(run: Path, src_summary: Path, entry: dict, dest: Path) -> list[str]:
    """summary.json and the model's relearn.json into dest/evidence/; their names."""
    (dest / EVIDENCE).mkdir(parents=True)
    shutil.copy2(src_summary, dest / EVIDENCE / "summary.json")
    names = [f"{EVIDENCE}/summary.json"]
    if entry.get("attack"):
        rel = _in_run(run, entry["attack"]["relearn_json"])
        if not rel.is_file():
            raise ExportError(f"the attack evidence of {entry['name']!r} is missing: no "
                              f"{rel}; re-run the study to rebuild it")
        check_stage(rel.parent)  # the attack folder's manifest
        shutil.copy2(rel, dest / EVIDENCE / "relearn.json")
        names.append(f"{EVIDENCE}/relearn.json")
    return names


def _relearning_figure(run: Path, summary: dict, dest: Path) -> str | None:
    """The run's relearning-curve figure (drawn from the summary if the run has none)."""
    src = run / "plots" / "relearning.png"
    if src.is_file():
        shutil.copy2(src, dest / "relearning.png")
    else:
        from ..report import plots

        (dest / "relearning.png").write_bytes(plots.relearning(summary))
    return "relearning.png"


def push_folder(folder: str | Path, repo_id: str, *, private: bool = False,
                token: str | None = None) -> str:
    """Upload an exported folder to the hub model repository `repo_id` (created if
    missing) with huggingface_hub; returns the commit URL. Any hub failure (offline, no
    token, no permission) is one ExportError saying how to retry."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    m = Path(folder) / MANIFEST
    v = verify(m) if m.is_file() else None
    if v is not None and not v.ok:  # never publish a damaged release
        raise ExportError(f"{folder} is damaged ({'; '.join(v.problems())}); nothing was "
                          f"pushed. {remake(Path(folder))}")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 commit_message="Upload model exported by undo")
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError, ValueError) as e:
        raise ExportError(f"exported to {folder}, but the push to {repo_id} failed: {e}; "
                          f"once that is fixed, push the folder as it is with `hf upload "
                          f"{repo_id} {folder}`") from None
    return str(getattr(info, "commit_url", info))
