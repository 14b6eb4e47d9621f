"""What a `factrecall-jobs` process costs besides its work: start-up (imports) and exit, against the
bare imports measured in the same run.

Every job the queue, the app or Slurm starts is a process of its own, and so is every command a
researcher types. Each one imports torch and transformers (seconds), and Python's exit then walks the
million objects they made. `jobs.cli.entry` (the console script and `python -m jobs.cli`) collects
less often and sets those objects aside before exit.

Three commands, taken in turn (A B C A B C ...) so that a machine's drift hits all three alike:

- entry: `python -m jobs.cli run ...` on a run whose steps are all done (imports, spec, resume check,
  tables; no training);
- main: the same command through `jobs.cli.main` called from `python -c`, i.e. without what `entry` adds;
- imports: `python -c "from transformers import LlamaForCausalLM; import jobs.run.pipeline"` ending
  with `os._exit` (no exit cost at all): the floor.

    python benchmarks/bench_startup.py [--repeats 5]

Prints a markdown table (median seconds of each, and the ratios) to paste into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN = ["run", "--preset", "tiny", "--strategy", "bio", "--no-dump", "--set", "train.bio.epochs=2"]


def commands(workspace: Path) -> dict[str, list[str]]:
    args = ["--workspace", str(workspace), *RUN]
    return {
        "entry": [sys.executable, "-m", "jobs.cli", *args],
        "main": [sys.executable, "-c", "import sys; from jobs.cli import main; sys.exit(main(sys.argv[1:]))", *args],
        "imports": [
            sys.executable,
            "-c",
            "from transformers import LlamaForCausalLM; import jobs.run.pipeline; import os; os._exit(0)",
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp)
        cmds = commands(workspace)
        subprocess.run(cmds["entry"], check=True, capture_output=True)  # the run, trained once; warms the caches
        times: dict[str, list[float]] = {name: [] for name in cmds}
        for _ in range(args.repeats):
            for name, cmd in cmds.items():
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"| process (median of {args.repeats}, taken in turn) | seconds | over the bare imports |")
    print("|---|---|---|")
    for name in cmds:
        print(f"| {name} | {med[name]:.2f} | {med[name] - med['imports']:+.2f} s |")
    print(f"\nentry / main: {med['entry'] / med['main']:.2f}")


if __name__ == "__main__":
    main()
