"""The tests marked `gpu` run on a CUDA GPU (`bash benchmarks/gpu/check.sh` runs them there). Where torch
sees none they skip, in one line of the summary; `check.sh --rehearse` sets FACTRECALL_GPU_REHEARSE=1
and runs them on the CPU instead, so that their code cannot rot between the times a GPU is lent."""

from __future__ import annotations

import os

import pytest
import torch

from tests.jobs.test_families import corpus  # noqa: F401 - the fixture: what the families' checkpoints learn

REHEARSE = "FACTRECALL_GPU_REHEARSE"


def runnable() -> bool:
    return torch.cuda.is_available() or os.environ.get(REHEARSE) == "1"


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The GPU, or in a rehearsal the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
