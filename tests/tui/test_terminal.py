"""The app in a real pseudo-terminal, as a person types into it (pexpect drives the process, pyte
renders what it draws): what a headless Pilot test cannot see, such as focus moving into a hidden
tab and taking the app back there (Textual issue 4955)."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import PATIENCE_S

pexpect = pytest.importorskip("pexpect")
pyte = pytest.importorskip("pyte")

# What only each tab shows, as the terminal draws it.
SIGNS = {
    "jobs": "Strategy",
    "accuracy": "Figure 1 ·",
    "probes": "Runs (space",
    "store": "index ",
    "report": "no study in this workspace yet",
}
KEYS = {"1": "jobs", "2": "accuracy", "3": "probes", "4": "store", "5": "report"}


class Terminal:
    """factrecall-tui in a pty of `columns` x `lines`, its screen kept by pyte."""

    def __init__(self, workspace: Path, columns: int = 120, lines: int = 36):
        self.screen = pyte.Screen(columns, lines)
        self.stream = pyte.ByteStream(self.screen)
        self.proc = pexpect.spawn(
            sys.executable,
            ["-c", "from factrecall_tui.app import main; main()", str(workspace)],
            dimensions=(lines, columns),
            env={**_env(), "TERM": "xterm-256color"},
        )

    def read(self) -> str:
        """Everything the app has drawn so far, as the screen now shows it."""
        while True:
            try:
                self.stream.feed(self.proc.read_nonblocking(65536, timeout=0.05))
            except (pexpect.TIMEOUT, pexpect.EOF):
                break
        return "\n".join(self.screen.display)

    def tab(self) -> str | None:
        """The tab whose content the screen shows (None while it shows none, or two)."""
        text = self.read()
        shown = [tab for tab, sign in SIGNS.items() if sign in text]
        return shown[0] if len(shown) == 1 else None

    def wait_for(self, tab: str) -> None:
        t0, seen = time.monotonic(), None
        while time.monotonic() - t0 < PATIENCE_S:
            if (seen := self.tab()) == tab:
                return
            time.sleep(0.1)
        raise AssertionError(f"waited {PATIENCE_S:.0f} s for the {tab} tab; the screen shows {seen}")

    def drawn_during(self, seconds: float) -> bytes:
        """Every byte the app sends the terminal in the next `seconds`."""
        out, t0 = b"", time.monotonic()
        while (left := seconds - (time.monotonic() - t0)) > 0:
            try:
                out += self.proc.read_nonblocking(65536, timeout=left)
            except pexpect.TIMEOUT:
                break
        self.stream.feed(out)
        return out

    def quiet(self, seconds: float = 2.0, within: float = PATIENCE_S) -> None:
        """Wait until the app has drawn nothing for `seconds` (its workers done), at most `within`."""
        t0 = time.monotonic()
        while self.drawn_during(seconds) and time.monotonic() - t0 < within:
            pass

    def close(self) -> None:
        self.proc.terminate(force=True)


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV_"))}


@pytest.fixture
def terminal(tiny_run, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(tiny_run, ws / "runs" / tiny_run.name)
    term = Terminal(ws)
    try:
        term.wait_for("jobs")
        yield term
    finally:
        term.close()


def test_a_tab_stays_where_the_keys_put_it(terminal):
    """5 1 3 1 2 1 4 1, as a user typed them: each key shows its tab, and the tab stays while
    nothing is typed (it used to switch back by itself, or keep switching)."""
    for key in "51312141":
        terminal.proc.send(key)
        terminal.wait_for(KEYS[key])
        for _ in range(12):  # 1.2 s with no input: the tab must not move
            time.sleep(0.1)
            assert terminal.tab() in (KEYS[key], None), f"after {key}: the app went to {terminal.tab()}"
        assert terminal.tab() == KEYS[key]


def test_keys_reach_the_tab_that_is_shown(terminal):
    """On Probes, `b` toggles BIO_long/BIO_short there; after going to Jobs and back, the Probes keys
    still act on Probes, and Jobs keys are not taken by a hidden pane."""
    terminal.proc.send("3")
    terminal.wait_for("probes")
    terminal.proc.send("b")
    t0 = time.monotonic()
    while "short (Fig. 4)" not in terminal.read() and time.monotonic() - t0 < PATIENCE_S:
        time.sleep(0.1)
    assert "short (Fig. 4)" in terminal.read()
    terminal.proc.send("1")
    terminal.wait_for("jobs")
    time.sleep(1.0)
    assert terminal.tab() == "jobs"


def test_an_idle_app_draws_nothing(terminal):
    """With nothing typed and nothing changing in the workspace, the app sends the terminal nothing,
    though it scans the workspace every second: a redraw of what the screen already shows is work
    that a key typed then waits for (at 300 runs the Jobs table's scroll bar and the detail's border
    were redrawn every second, and every pane was told the same runs again)."""
    for key in "23451":  # every tab drawn once, then Jobs again
        terminal.proc.send(key)
        terminal.wait_for(KEYS[key])
    terminal.quiet(within=min(PATIENCE_S, 120))  # an app that draws every second never gets quiet
    drawn = terminal.drawn_during(3.5)  # three scans at least
    assert drawn == b"", f"the idle app drew {len(drawn)} bytes: {drawn[:200]!r}"
