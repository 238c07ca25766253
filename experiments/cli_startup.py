"""How fast `undo --help` answers (a new process each time, as a user runs it).

    python experiments/cli_startup.py   -> experiments/results/cli_startup.json

Best and median of 10 runs of `undo --help` and of `undo run --help`, beside a bare
`python -c pass` in the same run (the interpreter's own start-up, for scale).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results" / "cli_startup.json"


def timed(cmd: list[str], n: int = 10) -> dict[str, float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return {"best_s": min(times), "median_s": statistics.median(times)}


def main() -> None:
    result = {
        "python_pass": timed([sys.executable, "-c", "pass"]),
        "undo_help": timed([sys.executable, "-m", "undo.cli", "--help"]),
        "undo_run_help": timed([sys.executable, "-m", "undo.cli", "run", "--help"]),
        "note": "wall time per new process on the 2-core machine (shared with other work)",
    }
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
