"""A `factrecall-jobs` process of its own (the console script, `python -m jobs.cli`, every job the
queue, the app or Slurm starts) goes through `jobs.cli.entry`, which sets Python's collector aside
before exit: without it, exiting after torch and transformers were imported took about 1.5 s a
process (benchmarks/bench_startup.py)."""

import subprocess
import sys
from importlib.metadata import entry_points

WATCH = (
    "import atexit, gc, sys; "
    "atexit.register(lambda: print('frozen', gc.get_freeze_count(), 'threshold', gc.get_threshold()[0]))"
)


def _exits(code: str, *argv: str) -> tuple[int, int, int]:
    """(objects frozen, the collector's first threshold, exit code) as the process ended."""
    out = subprocess.run([sys.executable, "-c", f"{WATCH}; {code}", *argv], capture_output=True, text=True)
    words = out.stdout.split()
    return int(words[words.index("frozen") + 1]), int(words[words.index("threshold") + 1]), out.returncode


def test_the_command_line_sets_the_collector_aside_before_it_exits(tmp_path):
    (script,) = entry_points(group="console_scripts", name="factrecall-jobs")
    assert script.value == "jobs.cli:entry"
    # What `python -m jobs.cli` runs (a command refused), and what the console script calls.
    frozen, threshold, rc = _exits(
        "import runpy; runpy.run_module('jobs.cli', run_name='__main__')",
        "--workspace",
        str(tmp_path),
        "run",
        "--preset",
        "tiny",
        "--people",
        "-5",
    )
    assert rc == 2 and frozen > 0 and threshold == 10_000
    frozen, threshold, rc = _exits("from jobs.cli import entry; sys.argv[1:] = ['presets']; entry()")
    assert rc == 0 and frozen > 10_000 and threshold == 10_000
    # `main`, called in a test's or a script's own process, leaves the collector as it found it.
    frozen, threshold, rc = _exits("from jobs.cli import main; sys.exit(main(['presets']))")
    assert rc == 0 and frozen == 0 and threshold == 700
