"""MaxEnt over all forget positions (the default, as the authors' code) against the answer
positions only: the unlearned teacher's forget and retain metrics side by side.

    undo unlearn unlearn.method_args.positions=answer name=maxent-answer out_dir=runs threads=1
    python experiments/maxent_positions.py [--stage all=RUN/stages/unlearn-maxent-...]
        [--stage answer=runs/maxent-answer/stages/unlearn-maxent-...]
        [--out experiments/results/maxent_positions.json]

Each STAGE is a finished unlearn stage of the same base model (the embedded default study's
`pretrain base`), differing only by `unlearn.method_args.positions`. Read from each
stage's summary.json: the metrics before and after unlearning (no model is loaded).
Students distilled from each teacher are not compared here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from undo.artifacts import environment, read_json, write_json

SHOWN = ("forget/acc", "retain/acc", "forget/ce", "retain/ce", "forget_val/acc",
         "retain_val/acc", "forget_heldout/acc", "retain_heldout/acc")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", action="append", metavar="POSITIONS=STAGE_DIR", required=True)
    ap.add_argument("--out", type=Path, default=Path("experiments/results/maxent_positions.json"))
    a = ap.parse_args()
    out = {}
    for p in a.stage:
        name, sep, path = p.partition("=")
        f = Path(path) / "summary.json"
        if not sep or not f.exists():
            raise SystemExit(f"--stage {p!r}: expected POSITIONS=STAGE_DIR of a finished "
                             f"unlearn stage (STAGE_DIR/summary.json)")
        s = read_json(f)
        key = yaml.safe_load((Path(path) / "config.yaml").read_text())
        out[name] = {"stage": Path(path).name, "base": s.get("base"),
                     "before": {k: s["before"].get(k) for k in SHOWN},
                     "after": {k: s["after"].get(k) for k in SHOWN},
                     "steps": s.get("steps"), "wall_time_s": s.get("wall_time_s"),
                     "unlearn_config": key.get("unlearn")}
        print(name, {k: round(v, 4) for k, v in out[name]["after"].items() if v is not None})
    write_json(a.out, {"teachers": out, "environment": environment()})


if __name__ == "__main__":
    main()
