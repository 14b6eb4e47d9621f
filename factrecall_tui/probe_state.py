"""The Probes pane's one state machine, without Textual: what the pane is doing, which fit's messages
still count, and whether store.probes is loaded; and the count of fit threads still running.

    IDLE ──f──► FITTING ──finished──► SHOWING ──f──► FITTING
      ▲            │ esc, failure                       │ esc, failure: back to SHOWING
      └────────────┘ (nothing shown yet)                ▼

A cache lookup's answer may be shown in any phase (FITTING stays FITTING: the fit still runs). Each
fit has a serial number; a message of another serial, or one that comes after the fit was cancelled,
changes nothing. The thread count (`Threads`) is apart from the phase: a cancelled fit leaves the
pane free at once, while its thread stops at its next layer.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum

from factrecall_tui.probe_fit import ProbeRequest


class Phase(Enum):
    IDLE = "idle"  # nothing shown yet, no fit running
    FITTING = "fitting"  # a fit runs: its progress shows, esc cancels it
    SHOWING = "showing"  # a result is shown (of the controls' settings, or of earlier ones: said above it)


@dataclass
class FitState:
    phase: Phase = Phase.IDLE
    serial: int = 0  # the last fit started: only its messages count
    fitting: ProbeRequest | None = None  # what that fit computes, while FITTING
    shown: ProbeRequest | None = None  # what the shown result is of
    # Whether a fit has ended here, so store.probes (torch) is loaded: only then does a change of
    # settings look up the store's cache, which needs it. The app does not pay for torch until the
    # researcher probes.
    probes_loaded: bool = False

    @property
    def busy(self) -> bool:
        return self.phase is Phase.FITTING

    def start(self, request: ProbeRequest) -> int:
        """f: a new fit, whose serial number its messages carry (any earlier fit's stop counting)."""
        self.serial += 1
        self.phase, self.fitting = Phase.FITTING, request
        return self.serial

    def counts(self, serial: int | None) -> bool:
        """Whether a fit's message is of the fit running now."""
        return serial is not None and serial == self.serial and self.busy

    def stop(self) -> bool:
        """The fit ends (cancelled, failed or finished): SHOWING where a result is shown, else IDLE.
        Whether a fit was running."""
        was = self.busy
        self.phase, self.fitting = (Phase.SHOWING if self.shown is not None else Phase.IDLE), None
        return was

    def show(self, request: ProbeRequest) -> None:
        """A result is shown: a fit's (after `stop`) or the cache's (the phase stays if a fit runs)."""
        self.shown = request
        if not self.busy:
            self.phase = Phase.SHOWING


class Threads:
    """The fit threads still running (a cancelled one too, until it stops): `idle` is set when none."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()
        self.idle = threading.Event()
        self.idle.set()

    @contextmanager
    def running(self) -> Iterator[None]:
        with self._lock:
            self._count += 1
            self.idle.clear()
        try:
            yield
        finally:
            with self._lock:
                self._count -= 1
                if self._count == 0:
                    self.idle.set()
