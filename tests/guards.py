"""Safety nets for tests that hand a verb a file that could hang it or take all memory (a FIFO, a
device node, a crafted size): with the fix in place they are never reached; without it, the test
fails in one line instead of hanging the suite or having the machine's OOM killer end it."""

from __future__ import annotations

import resource
import signal
from contextlib import contextmanager
from pathlib import Path


class Blocked(Exception):
    """The verb ran past the time limit (blocked on a special file?)."""


def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


@contextmanager
def bounded(what: str, seconds: int = 120, memory: int | None = 4 << 30):
    """Run the block in this (main) thread with an alarm after `seconds` (it interrupts a blocked
    system call) and, with `memory`, at most that much more address space than the process has now (a
    read that never ends is a MemoryError, not a machine brought down). Generous: a verb that refuses
    does so in well under a second, and a loaded machine is not a blocked one."""

    def alarm(*_):
        raise Blocked(f"{what}: still running after {seconds} s (blocked on a special file?)")

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    previous = signal.signal(signal.SIGALRM, alarm)
    if memory is not None:
        cap = _vm_size() + memory
        if hard == resource.RLIM_INFINITY or cap < hard:
            resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
