"""The vocabulary, defined once: what the code, the files, the tables, the app and the docs call
things (ARCHITECTURE.md's words). Light on purpose (no torch, no pydantic): anything may import it.

- attribute: the six facts of a person, in BIO order;
- format: how a fact is asked (`bio_long`, `bio_short`, `qa`), from `store.names`;
- strategy: how a model is trained (`bio`, `qa`, `stage`, `mix`); phase: one training pass with its
  own checkpoint (`bio`, `stage` = the QA phase of Stage, `mix`, `qa`);
- model: a run's checkpoint as the tables name it (a phase, `untrained`, or the `majority` baseline);
- step: a unit of a run that marks itself done (`data`, ..., `train-mix`, `eval-mix`, `dump`);
- status: how a run stands, as `status` and the app show it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

from store.names import BIO_FORMATS, FORMATS, PROBE_SPLITS, SPLITS

__all__ = [
    "ATTRIBUTES",
    "ATTRIBUTE_LABELS",
    "BIO_FORMATS",
    "CHAINS",
    "DEFAULT_STRATEGIES",
    "ENDED",
    "EVAL_SETS",
    "FORMATS",
    "FORMAT_LABELS",
    "MODEL_LABELS",
    "PHASE_SETTINGS",
    "PROBE_SPLITS",
    "RUN_STATUSES",
    "RunStatus",
    "SET_LABELS",
    "SPLITS",
    "STRATEGIES",
    "Strategy",
    "phases_of",
    "steps_of",
]

ATTRIBUTES = ("birth_date", "birth_city", "university", "job", "employer", "blood_type")
ATTRIBUTE_LABELS = {
    "birth_date": "Date",
    "birth_city": "City",
    "university": "Univ.",
    "job": "Job",
    "employer": "Employer",
    "blood_type": "Blood",
}
FORMAT_LABELS = {"bio_long": "BIO_long", "bio_short": "BIO_short", "qa": "QA"}

Strategy = Literal["bio", "qa", "stage", "mix"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
DEFAULT_STRATEGIES: tuple[Strategy, ...] = ("stage", "mix")  # the paper's comparison
# strategy -> the phases its model goes through, in order (Stage: the BIO phase, then the QA phase on top)
CHAINS: dict[str, tuple[str, ...]] = {"bio": ("bio",), "stage": ("bio", "stage"), "mix": ("mix",), "qa": ("qa",)}
# phase -> the spec's train.* table that sets it (Stage's QA phase and the qa strategy share train.qa)
PHASE_SETTINGS = {"bio": "bio", "stage": "qa", "qa": "qa", "mix": "mix"}

EVAL_SETS = ("bio", "qa_in", "qa_out")  # exact match on BIO (prompt bio_long), QA in and QA out of training
SET_LABELS = {"bio": "BIO", "qa_in": "QA in", "qa_out": "QA out"}

# metrics key -> how every table, figure and screen names the model, in the paper's row order. The
# `qa` strategy is QA-only (from the untrained model); the paper's own "QA-tuned" row is Stage.
MODEL_LABELS = {
    "majority": "Majority vote",
    "untrained": "Untrained",
    "bio": "BIO-tuned",
    "stage": "Stage-tuned",
    "mix": "Mix-tuned",
    "qa": "QA-only",
}

RunStatus = Literal["new", "queued", "running", "done", "failed", "interrupted", "stopped", "broken"]
RUN_STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
ENDED: tuple[RunStatus, ...] = ("done", "failed", "interrupted")  # how a job says it ended (its last `run` event)


def phases_of(strategies: Iterable[str]) -> list[str]:
    """The phases a run of these strategies trains, each once, in training order."""
    out: list[str] = []
    for strategy in strategies:
        out += [p for p in CHAINS[strategy] if p not in out]
    return out


def steps_of(strategies: Iterable[str], builtin_model: bool = True, snapshots: bool = False) -> list[str]:
    """Every step of such a run, in the order `jobs.run.pipeline.execute` takes them (a test holds the
    two equal): a checkpoint given by path has no `init` step; `dump-trajectory` with train.snapshots.
    The evaluation of each snapshot (`eval-stage@120`) is a step too, named once training has run."""
    steps = ["data", "tokenizer", *(["init"] if builtin_model else []), "eval-untrained"]
    for phase in phases_of(strategies):
        steps += [f"train-{phase}", f"eval-{phase}"]
    return [*steps, "dump", *(["dump-trajectory"] if snapshots else [])]
