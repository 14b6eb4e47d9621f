"""`factrecall-jobs`: headless jobs.

    factrecall-jobs run                          # the paper's comparison (Stage and Mix) on the cpu preset
    factrecall-jobs run --strategy mix --seed 0  # one strategy (bio, qa, stage, mix)
    factrecall-jobs run --seeds 0 1 2            # three runs, reported as mean ± std
    factrecall-jobs reproduce                    # the paper's whole study, 3 seeds, and its report
    factrecall-jobs submit --seeds 0 1 2         # the same, queued to a background worker (survives the shell)
    factrecall-jobs submit --executor slurm --seeds 0 1 2 --partition gpu   # to Slurm, one array job
    factrecall-jobs status                       # what is queued and running; `cancel RUN` stops one
    factrecall-jobs archive RUN                  # into WORKSPACE/archive/ (`delete RUN --yes`: for good)
    factrecall-jobs resume RUN                   # continue a killed run (re-running the same `run` does too)
    factrecall-jobs show RUN [RUN ...]           # Figure 1 and Figure 5 for runs, side by side
    factrecall-jobs plot RUN [RUN ...]           # accuracy over training, as a PNG
    factrecall-jobs compare [RUN ...]            # a sweep: one row per run and model, differing settings as columns
    factrecall-jobs dump RUN                     # the activation store (run does it after evaluation)
    factrecall-jobs export RUN --hdf5 FILE       # the store as one HDF5 file
    factrecall-jobs probe RUN [RUN ...]          # probes per layer: Acc, delta_rep, delta_mech (Figures 3, 4)
    factrecall-jobs patch RUN [RUN ...]          # interventions: hBIO patched into the QA pass, controls, erasure
    factrecall-jobs presets                      # what each preset sets

Each verb and its flags are declared once, in jobs/options.py (a dataclass per verb, nesting the
settings it shares with the library and the app); jobs/arguments.py makes the parser from them, and
jobs/commands/ holds one `cmd_*` per verb, which receives the verb's typed options. Here is `main`,
the one place where a user error becomes one line and an exit code.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import signal
import sys
import threading

from jobs import flags
from jobs.arguments import err_console, parser
from jobs.commands import analysis, manage, runs
from jobs.commands.common import console, workspace_of
from jobs.errors import USER_ERRORS
from jobs.launch.procs import TERM_STOPS
from jobs.options import MODEL_VERBS, VERBS
from jobs.run.files import homeless_libraries
from jobs.shown import markup, safe_streams

__all__ = ["COMMANDS", "console", "entry", "main"]

# verb -> what runs it (`status` and `queue` are one verb under two names; `models import|list` two)
COMMANDS = {
    "run": runs.cmd_run,
    "reproduce": runs.cmd_reproduce,
    "submit": runs.cmd_submit,
    "resume": runs.cmd_resume,
    "status": manage.cmd_queue,
    "queue": manage.cmd_queue,
    "cancel": manage.cmd_cancel,
    "archive": manage.cmd_archive,
    "delete": manage.cmd_delete,
    "worker": manage.cmd_worker,
    "show": manage.cmd_show,
    "plot": manage.cmd_plot,
    "compare": manage.cmd_compare,
    "presets": manage.cmd_presets,
    "import": manage.cmd_import,
    "list": manage.cmd_list,
    "dump": analysis.cmd_dump,
    "export": analysis.cmd_export,
    "probe": analysis.cmd_probe,
    "patch": analysis.cmd_patch,
}


def _dispatch(args) -> None:
    """The verb's typed options from its flags (checked as they are made), then its command."""
    verb = args.models_command if args.command == "models" else args.command
    declared = (MODEL_VERBS if args.command == "models" else VERBS)[verb]
    COMMANDS[verb](flags.build(declared.options, args), workspace_of(args.workspace))


def _disk_full(err: BaseException) -> bool:
    """ENOSPC, also as libraries report it in their own exception types (safetensors: "No space left
    on device (os error 28)")."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    return any(
        "No space left on device" in str(e) or "os error 28" in str(e)
        for e in (err, err.__cause__, err.__context__)
        if e is not None
    )


# The verbs that write into run folders (a full disk there keeps finished steps and checkpoints).
RUN_WRITERS = ("run", "reproduce", "resume", "dump", "worker", "submit", "probe", "patch")


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # Started from a script's background job, a process inherits SIGINT ignored; `cancel` (and
        # Ctrl-C) must still stop a job, so Python's own handler is put back.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if threading.current_thread() is threading.main_thread() and os.environ.get(TERM_STOPS) == "1":
        # A Slurm task's child: Slurm's SIGTERM (scancel, a time limit, preemption; SIGKILL follows
        # KillWait later) stops it as Ctrl-C does, so it saves what it can rather than dying mid-step.
        signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    safe_streams()
    homeless_libraries()
    try:
        args = parser().parse_args(argv)
    except SystemExit as stop:  # --help, or a flag refused in one line (jobs.arguments.Parser.error)
        return stop.code if isinstance(stop.code, int) else 2
    logging.raiseExceptions = False  # a log line that cannot be written (a full disk) is not a traceback
    if args.threads is not None:  # before torch is imported, and inherited by every job started from here
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    try:
        _dispatch(args)
    except USER_ERRORS as err:
        err_console.print(f"[red]error:[/red] {markup(str(err))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print(
            "interrupted: finished steps and the last checkpoint are kept; "
            "run the same command again (or `factrecall-jobs resume RUN`) to continue",
            soft_wrap=True,
        )
        return 130
    except Exception as err:
        if _disk_full(err):
            in_runs = args.command in RUN_WRITERS
            where = (
                getattr(err, "filename", None)
                or getattr(args, "hdf5", None)
                or getattr(args, "out", None)
                or ("the run folder" if in_runs else f"in {args.workspace}")
            )
            err_console.print(
                f"[red]error:[/red] disk full writing {markup(str(where))}; free space and run the same command "
                "again" + (": finished steps and the last checkpoint are kept" if in_runs else ""),
                soft_wrap=True,
            )
            return 1
        if not isinstance(err, OSError):
            raise
        if err.errno in (errno.EACCES, errno.EROFS, errno.EPERM, errno.ENOTDIR, errno.EEXIST):
            err_console.print(
                f"[red]error:[/red] cannot write {markup(str(err.filename))}: {err.strerror}; "
                "choose a writable --workspace",
                soft_wrap=True,
            )
            return 2  # a usage error: the command names a place it cannot write
        raise
    return 0


def entry() -> None:
    """`factrecall-jobs` as a process of its own (the console script, `python -m jobs.cli`, and every job
    the queue, the app or Slurm starts). torch and transformers leave about a million objects that
    Python's collector walks whenever its oldest generation fills, and once more at exit: collecting
    less often and setting them all aside before the interpreter ends took a command with nothing to do
    from 1.4 s more than its bare imports to none (benchmarks/bench_startup.py). Not done by `main`,
    which tests and scripts call in their own process."""
    gc.set_threshold(10_000, 20, 20)
    try:
        code = main()
    finally:
        gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
