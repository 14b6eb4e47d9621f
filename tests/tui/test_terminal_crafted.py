"""The app in a real pseudo-terminal over a hostile collaborator's workspace (the escape-laden errors,
presets, model paths, store labels and reports of tests/tui/test_crafted_inputs.py): every byte it
writes to the terminal while each tab, the Compare view and the Log view are visited, the crafted runs
and studies highlighted in turn, holds none of the injected sequences (a window title set by OSC 0, the
clipboard by OSC 52, the screen cleared by CSI 2J), and `q` ends it cleanly."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import PATIENCE_S
from tests.tui.test_crafted_inputs import INJECTED, crafted_workspace

pexpect = pytest.importorskip("pexpect")
pyte = pytest.importorskip("pyte")

DOWN, ESCAPE = "\x1b[B", "\x1b"


class Recorder:
    """`factrecall-tui --workspace WS` in a pty, every byte it writes kept (`raw`), its screen kept by pyte."""

    def __init__(self, workspace: Path, columns: int = 150, lines: int = 45):
        self.screen = pyte.Screen(columns, lines)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()
        tui = shutil.which("factrecall-tui", path=str(Path(sys.executable).parent)) or "factrecall-tui"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV_"))}
        self.proc = pexpect.spawn(
            tui, ["--workspace", str(workspace)], dimensions=(lines, columns), env={**env, "TERM": "xterm-256color"}
        )

    def pump(self, seconds: float = 0.0) -> str:
        """Read what the app writes for `seconds` (at least what is there now); the screen as shown."""
        t0 = time.monotonic()
        while True:
            try:
                data = self.proc.read_nonblocking(65536, timeout=0.05)
            except pexpect.TIMEOUT:
                data = b""
            except pexpect.EOF:
                break
            if data:
                self.raw += data
                self.stream.feed(data)
            elif time.monotonic() - t0 >= seconds:
                break
        return "\n".join(self.screen.display)

    def wait_for(self, sign: str, what: str) -> str:
        t0 = time.monotonic()
        while time.monotonic() - t0 < PATIENCE_S:
            if sign in (text := self.pump(0.1)):
                self.alive()  # the sign in the app's screen, not in a traceback's source lines
                return text
        raise AssertionError(f"waited {PATIENCE_S:.0f} s for {what} ({sign!r}); the screen shows:\n{self.pump()}")

    def key(self, key: str, settle: float = 0.4) -> str:
        self.alive()
        self.proc.send(key)
        return self.pump(settle)

    def alive(self) -> None:
        """The app still runs (a crash ends it, its traceback on the screen)."""
        if not self.proc.isalive():
            raise AssertionError(f"the app ended (a crash?); the screen shows:\n{self.pump()}")


@pytest.fixture
def recorder(tmp_path):
    term = Recorder(crafted_workspace(tmp_path / "ws"))
    try:
        yield term
    finally:
        term.proc.terminate(force=True)


def test_no_injected_sequence_reaches_the_terminal_and_q_ends_the_app(recorder):
    shown = [recorder.wait_for("Strategy", "the Jobs tab")]
    recorder.wait_for("escape-error", "the scan")
    for _ in range(10):  # every run highlighted in turn: its detail drawn
        shown.append(recorder.key(DOWN))
    recorder.key("g")  # nothing bound on Jobs: ignored
    for _ in range(10):
        recorder.key("\x1b[A")  # back up to the newest run
    recorder.key("m")  # Compare: the shown runs (one with the crafted preset: refused in one line)
    shown.append(recorder.wait_for("Compare ·", "the Compare view"))
    shown.append(recorder.pump(1.5))
    recorder.key(ESCAPE, settle=1.0)
    for _ in range(3):
        recorder.key(DOWN)  # escape-error, whose events hold the escapes
    recorder.key("l")
    shown.append(recorder.wait_for("log.txt", "the Log view"))
    shown.append(recorder.pump(1.0))
    recorder.key(ESCAPE, settle=1.0)
    for key, sign in (("2", "Figure 1 ·"), ("3", "Runs (space"), ("4", "index ")):
        recorder.key(key)
        shown.append(recorder.wait_for(sign, f"tab {key}"))
        shown.append(recorder.pump(1.5))
    recorder.key("5")
    shown.append(recorder.wait_for("study-bad-json", "the Report tab"))
    for _ in range(8):  # every study highlighted in turn: its report, or what is damaged, drawn
        shown.append(recorder.key(DOWN, settle=0.6))
    recorder.key("1")
    recorder.wait_for("Strategy", "the Jobs tab again")
    recorder.alive()
    recorder.proc.send("q")
    recorder.proc.expect(pexpect.EOF, timeout=PATIENCE_S)
    recorder.raw += recorder.proc.before or b""
    recorder.proc.close()
    assert recorder.proc.exitstatus == 0, (recorder.proc.exitstatus, recorder.proc.signalstatus)

    raw = bytes(recorder.raw)
    for sequence in INJECTED:
        at = raw.find(sequence)
        assert at < 0, f"{sequence!r} reached the terminal: {raw[max(0, at - 80) : at + 80]!r}"
    assert "PWNED" not in (recorder.screen.title or "") and "PWNED" not in (recorder.screen.icon_name or "")
    everything = "\n".join(shown)
    assert "\\x1b]0;PWNED" in everything  # the crafted text was shown, written out
    assert "[/]" in everything
