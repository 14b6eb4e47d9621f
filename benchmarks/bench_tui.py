"""The TUI's start and its workspace scan, each against a baseline measured in the same run:

- first frame: a fresh process that starts `factrecall-tui` on a workspace of N runs, timed to the
  first frame (Textual's auto_pilot starts then) and to every screen filled in (its workers done),
  vs the same for a bare Textual app that shows one line of text (the floor: Python + Textual);
- scan: `Scanner.scan()` over N runs, the first time (every run read) and again (a steady rescan:
  only changed and active runs re-read), vs the least any scan does: read and parse every spec.json;
- torch: whether the first frame imported torch (it must not);
- keys: once every screen is filled in, each key of a researcher's round (the five tabs, twenty rows
  down the Jobs table, `/` and a filter typed, escape, the help and back) timed from the key to the
  screen redrawn (Textual's pilot: the key handled, the app idle, a frame drawn; animations off), vs the same keys
  sent to the bare app (which ignores them: the floor of a key's round trip). Textual's pilot waits
  until the process has been idle for 20 ms, twice: a 40 ms floor, and the widgets' message queues
  it walks scale with the app, so this is a relative measure;
- keys in a terminal: the same round typed into a pseudo-terminal running `factrecall-tui` as a
  person runs it (pexpect), timed from the key's bytes written to the first byte the app draws in
  answer and to the last byte of the redraws it causes, vs a bare Textual app that draws each key's
  name. This is what a person waits for; escape includes the terminal's ESCDELAY (100 ms, the time a
  terminal app waits to tell the escape key from the start of an escape sequence);
- `--busy`: the same while a cpu-preset training job runs in the background and uses both cores.

    python benchmarks/bench_tui.py [--runs 300] [--repeats 5] [--busy]

The workspace is N copies of a finished tiny run's small files (spec, metrics, events, done markers),
made in a temporary folder. Prints a markdown table to paste into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from timing import timed  # noqa: E402 - benchmarks/ is the script's folder

FIRST_FRAME = textwrap.dedent("""
    import asyncio, sys, time
    t0 = time.perf_counter()
    {imports}
    async def pilot(p):
        ready = time.perf_counter() - t0  # Textual calls this once the first frame is drawn
        await asyncio.gather(*(w.wait() for w in p.app.workers), return_exceptions=True)
        await p.pause()
        filled = time.perf_counter() - t0
        latencies = []
        for key in KEYS:
            k0 = time.perf_counter()
            await p.press(key)
            latencies.append(time.perf_counter() - k0)
        print(ready, filled, "torch" in sys.modules, ",".join(f"{{x:.5f}}" for x in latencies))
        p.app.exit()
    KEYS = {keys!r}
    {make}.run(headless=True, size=(110, 32), auto_pilot=pilot)
""")
# A researcher's round: every tab, down the runs, a filter typed and cleared, the help and back.
KEYS = ["2", "3", "4", "5", "1", *["down"] * 20, "slash", *"status:done", "enter", "escape", "question_mark", "escape"]
OURS = {
    "imports": "from pathlib import Path; from factrecall_tui.app import FactrecallApp, collect_less; collect_less()",
    "make": "FactrecallApp(Path(sys.argv[1]), freeze_gc=True)",
}  # as factrecall-tui runs it
BARE = {
    "imports": "from textual.app import App\nfrom textual.widgets import Static\n"
    "class Bare(App):\n    def compose(self):\n        yield Static('hello')",
    "make": "Bare()",
}


def first_frame(kind: dict, workspace: Path) -> tuple[float, float, float, bool, list[float]]:
    """Seconds: (the whole process, first import to first frame, first import to every screen filled
    in from the workspace), whether torch was imported, and each key's seconds to a redrawn screen."""
    t0 = time.perf_counter()
    # Without animations: the pilot waits for them to end, and a tab's underline that slides for 0.2 s
    # after its content is shown is not the key's answer.
    env = {**os.environ, "TEXTUAL_ANIMATIONS": "none"}
    out = subprocess.run(
        [sys.executable, "-c", FIRST_FRAME.format(**kind, keys=KEYS), str(workspace)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
    ).stdout.split()
    return (
        time.perf_counter() - t0,
        float(out[0]),
        float(out[1]),
        out[2] == "True",
        [float(x) for x in out[3].split(",")],
    )


# The same round typed into a real terminal: the bytes a terminal sends for each key.
KEY_BYTES = {"down": "\x1b[B", "slash": "/", "enter": "\r", "escape": "\x1b", "question_mark": "?"}
# In a terminal the floor must answer each key with something drawn, or there is nothing to time.
ECHO = textwrap.dedent("""
    import sys
    from textual.app import App
    from textual.widgets import Static
    class Echo(App):
        def compose(self):
            yield Static('hello', id='echo')
        def on_key(self, event):
            self.query_one('#echo', Static).update(f'key {event.key}')
    Echo().run()
""")
OURS_TERMINAL = "import sys; from factrecall_tui.app import main; main([sys.argv[1]])"


def in_terminal(script: str, workspace: Path, quiet_s: float = 0.4) -> list[tuple[float, float] | None]:
    """The round typed into a pseudo-terminal of 110x32 running `script`, as a person's terminal
    would send it: for each key, seconds from its bytes written to (the first byte the app drew in
    answer, the last byte of the redraws it caused), None where it drew nothing. The redraws count as
    done once the app has sent nothing for `quiet_s` (its rescan every second draws nothing when
    nothing changed)."""
    import pexpect

    def drawn_until_quiet(window: float) -> tuple[float, float] | None:
        first = last = None
        while True:
            try:
                proc.read_nonblocking(1 << 20, timeout=window)
            except pexpect.TIMEOUT:
                return None if first is None else (first, last)
            last = time.perf_counter()
            first = first or last

    env = {**os.environ, "TEXTUAL_ANIMATIONS": "none", "TERM": "xterm-256color"}
    proc = pexpect.spawn(sys.executable, ["-c", script, str(workspace)], dimensions=(32, 110), env=env, cwd=str(ROOT))
    proc.delaybeforesend = None  # pexpect sleeps 50 ms before each send by default: not the app's time
    try:
        proc.read_nonblocking(1, timeout=60)
        drawn_until_quiet(3.0)  # every screen filled in: the workers are done and nothing more is drawn
        keys: list[tuple[float, float] | None] = []
        for key in KEYS:
            k0 = time.perf_counter()
            proc.send(KEY_BYTES.get(key, key))
            drawn = drawn_until_quiet(quiet_s)
            keys.append(None if drawn is None else (drawn[0] - k0, drawn[1] - k0))
        return keys
    finally:
        proc.terminate(force=True)


def make_workspace(root: Path, n: int) -> Path:
    from tests.tui.workspace import fixed_workspace

    ws = fixed_workspace(root / "ws")
    src = ws / "runs" / "cpu-stage+mix-s0"
    for i in range(n - 8):
        dst = ws / "runs" / f"sweep-{i:04d}"
        (dst / "done").mkdir(parents=True)
        for f in ("spec.json", "metrics.json", "events.jsonl"):
            (dst / f).write_bytes((src / f).read_bytes())
        for marker in (src / "done").glob("*.json"):
            (dst / "done" / marker.name).write_bytes(marker.read_bytes())
    return ws


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--busy", action="store_true", help="measure while a cpu-preset job trains in the background")
    args = ap.parse_args()
    from factrecall_tui.runs import Scanner

    with tempfile.TemporaryDirectory() as tmp:
        ws = make_workspace(Path(tmp), args.runs)
        job = None
        if args.busy:  # a real training job on both cores, as a researcher's would be
            job = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "jobs.cli",
                    "--workspace",
                    str(Path(tmp) / "busy"),
                    "run",
                    "--preset",
                    "cpu",
                    "--strategy",
                    "mix",
                    "--no-dump",
                ],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(20)  # past its data and tokenizer steps: training
        first_frame(BARE, ws)  # warm the file cache for both
        ours = [first_frame(OURS, ws) for _ in range(args.repeats)]
        bare = [first_frame(BARE, ws) for _ in range(args.repeats)]
        term_ours = [in_terminal(OURS_TERMINAL, ws) for _ in range(args.repeats)]
        term_echo = [in_terminal(ECHO, ws) for _ in range(args.repeats)]
        specs = lambda: [json.loads(p.read_text()) for p in (ws / "runs").glob("*/spec.json")]  # noqa: E731
        base = timed(specs, args.repeats)[0]
        cold = timed(lambda: Scanner(ws).scan(), args.repeats)[0]
        steady_scanner = Scanner(ws)
        steady_scanner.scan()
        steady = timed(steady_scanner.scan, args.repeats)[0]
        if job is not None:
            busy_held = job.poll() is None  # still training when the measures ended: they were taken under load
            job.terminate()
            job.wait()
            if not busy_held:
                sys.exit(f"the background job ended early (exit {job.returncode}): these are not busy numbers")

    med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
    print(
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, Python {platform.python_version()}, "
        f"{args.runs} runs, median of {args.repeats}"
        + (", with a cpu-preset job training meanwhile" if args.busy else "")
        + ".\n"
    )
    print("| measure | factrecall | baseline | ratio |\n|---|---|---|---|")
    print(
        f"| first frame, whole process: seconds (baseline: a bare Textual app) | {med(ours, 0):.3f} | "
        f"{med(bare, 0):.3f} | {med(ours, 0) / med(bare, 0):.2f}x |"
    )
    print(
        f"| first frame, from the first import: seconds | {med(ours, 1):.3f} | {med(bare, 1):.3f} | "
        f"{med(ours, 1) / med(bare, 1):.2f}x |"
    )
    print(
        f"| every screen filled in from the workspace, from the first import: seconds | {med(ours, 2):.3f} | "
        f"{med(bare, 2):.3f} | {med(ours, 2) / med(bare, 2):.2f}x |"
    )
    print(f"| torch imported | {any(x[3] for x in ours)} | {any(x[3] for x in bare)} | |")
    keys_ours = [k for x in ours for k in x[4]]
    keys_bare = [k for x in bare for k in x[4]]
    q = lambda xs, f: sorted(xs)[min(len(xs) - 1, int(f * len(xs)))]  # noqa: E731
    print(
        f"| a key to a redrawn screen, median: ms ({len(KEYS)} keys × {args.repeats}) | "
        f"{1000 * statistics.median(keys_ours):.1f} | {1000 * statistics.median(keys_bare):.1f} | "
        f"{statistics.median(keys_ours) / statistics.median(keys_bare):.2f}x |"
    )
    print(
        f"| a key to a redrawn screen, 95th percentile: ms | {1000 * q(keys_ours, 0.95):.1f} | "
        f"{1000 * q(keys_bare, 0.95):.1f} | {q(keys_ours, 0.95) / q(keys_bare, 0.95):.2f}x |"
    )
    print(
        f"| a key to a redrawn screen, slowest: ms | {1000 * max(keys_ours):.1f} | {1000 * max(keys_bare):.1f} | "
        f"{max(keys_ours) / max(keys_bare):.2f}x |"
    )
    per_key = {}
    for x in ours:
        for i, seconds in enumerate(x[4]):
            per_key.setdefault((i, KEYS[i]), []).append(seconds)
    slowest = sorted(per_key.items(), key=lambda kv: -statistics.median(kv[1]))[:4]
    print(
        "\nThe slowest keys (median ms): "
        + ", ".join(f"#{i + 1} `{k}` {1000 * statistics.median(v):.0f}" for (i, k), v in slowest)
    )
    print(
        "\nIn a real terminal (a pty; the bare app answers each key by drawing its name), each key's "
        "median over the repeats:\n"
    )
    print("| a key typed into a terminal | factrecall | bare app | ratio |\n|---|---|---|---|")
    notes = []
    for j, what in ((0, "to the first byte drawn in answer"), (1, "to the last byte of its redraws")):
        per_ours = _per_key(term_ours, j)
        per_echo = _per_key(term_echo, j)

        def but_escape(per: dict) -> list[float]:
            return [v for (i, k), v in per.items() if k != "escape"]

        for name, pick, keys in (
            ("median key", statistics.median, lambda per: list(per.values())),
            ("slowest key but escape", max, but_escape),
        ):
            a, b = pick(keys(per_ours)), pick(keys(per_echo))
            print(f"| {what}, {name}: ms | {1000 * a:.0f} | {1000 * b:.0f} | {a / b:.1f}x |")
        over = [
            f"`{k}` {1000 * v:.0f}"
            for (i, k), v in sorted(per_ours.items(), key=lambda kv: -kv[1])
            if v > 0.1 and k != "escape"
        ]
        escape = [f"{1000 * v:.0f}" for (i, k), v in per_ours.items() if k == "escape"]
        notes.append(
            f"{what[0].upper()}{what[1:]}: keys over 100 ms: {', '.join(over) or 'none'}; escape "
            f"{', '.join(escape)} ms (with the terminal's ESCDELAY, 100 ms)."
        )
    print("\n" + "\n".join(notes) + "\n")
    print("| measure | factrecall | baseline | ratio |\n|---|---|---|---|")
    print(
        f"| scan of {args.runs} runs, first: seconds (baseline: parse every spec.json) | {cold:.4f} | "
        f"{base:.4f} | {cold / base:.2f}x |"
    )
    print(
        f"| scan of {args.runs} runs, again (steady rescan): seconds | {steady:.4f} | {base:.4f} | "
        f"{steady / base:.2f}x |"
    )


def _per_key(rounds: list[list[tuple[float, float] | None]], j: int) -> dict[tuple[int, str], float]:
    """Each key of the round (by position): the median over the rounds of its time `j` (0: first byte,
    1: last byte); a key that drew nothing in some round counts from the rounds where it drew."""
    out = {}
    for i, key in enumerate(KEYS):
        times = [r[i][j] for r in rounds if r[i] is not None]
        if times:
            out[(i, key)] = statistics.median(times)
    return out


if __name__ == "__main__":
    main()
