"""`factrecall-jobs`'s parser: the top-level flags, then each verb of jobs/options.py with the flags its
dataclass declares (jobs/flags.py). Light on purpose: `--help` and a mistyped flag answer without
loading a model library."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from jobs import flags
from jobs.options import MODEL_VERBS, MODELS, VERBS
from jobs.shown import SafeConsole, markup
from store.settings import setting

err_console = SafeConsole(stderr=True)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        err_console.print(
            f"[red]error:[/red] {markup(message)} (see {self.prog} --help)", highlight=False, soft_wrap=True
        )
        raise SystemExit(2)


@dataclass(frozen=True)
class TopFlags:
    """The flags every verb takes, before it."""

    workspace: str = setting("workspace", "folder holding runs/ (default: ./workspace, or $FACTRECALL_WORKSPACE)")
    threads: int | None = setting(
        None,
        "CPU threads for torch, here and in the jobs this starts (sets $OMP_NUM_THREADS; default: "
        "$OMP_NUM_THREADS if set, else every CPU this process may use)",
        low=1,
        high=4096,
    )


def parser() -> argparse.ArgumentParser:
    top = Parser(prog="factrecall-jobs", description="Headless factrecall jobs: data, training, evaluation.")
    flags.add(top, TopFlags)
    top.set_defaults(workspace=os.environ.get("FACTRECALL_WORKSPACE", "workspace"))
    sub = top.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, verb in VERBS.items():
        flags.add(sub.add_parser(name, help=verb.help), verb.options)
    models = sub.add_parser("models", help=MODELS)
    verbs = models.add_subparsers(dest="models_command", metavar="{import,list}", parser_class=Parser)
    verbs.required = True
    for name, verb in MODEL_VERBS.items():
        flags.add(verbs.add_parser(name, help=verb.help), verb.options)
    return top
