"""What `submit --executor slurm` asks Slurm for, per array task (`SlurmOptions`: each option an
`#SBATCH` line, its form checked before anything is written), and that request checked against what
`sinfo` says of the cluster's partitions (`fit_to_cluster`), since sbatch accepts a request no node can
meet. `_slurm` runs a Slurm command here and for `jobs.launch.slurm` (squeue, sacct, scancel).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from jobs.errors import FactrecallError
from store.settings import setting


def minutes(text: str) -> int:
    """Slurm's time formats: MINUTES, HH:MM:SS, MM:SS, D-HH[:MM[:SS]]."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise FactrecallError(f"--time {text!r}: give minutes (90), HH:MM:SS (24:00:00) or D-HH:MM:SS (2-00:00:00)")
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if days is None and b is None:
        total = a  # plain minutes
    elif days is None and c is None:
        total = a + (b or 0) / 60  # MM:SS
    else:
        total = (days or 0) * 1440 + a * 60 + (b or 0) + (c or 0) / 60
    if total < 1:
        raise FactrecallError(f"--time {text!r} is under a minute")
    return max(1, round(total))


@dataclass
class SlurmOptions:
    """What `#SBATCH` asks for, per array task (one run each)."""

    partition: str | None = setting(None, "partition (default: the cluster's)")
    gpus: int | None = setting(None, "GPUs (default: 1 where the partition has GPUs, per sinfo, else 0)", low=0)
    cpus: int | None = setting(None, "CPUs (default: the cluster's; checked against its nodes)", low=1)
    time: str = setting(
        "24:00:00",
        "time limit, as Slurm writes it (default 24:00:00); at the limit the job saves a checkpoint and is "
        "requeued, and resumes",
    )
    mem: str | None = setting(None, "memory, e.g. 64G (default: the cluster's)")
    account: str | None = setting(None, "account to charge")
    qos: str | None = setting(None, "quality of service")
    constraint: str | None = setting(None, "node features, e.g. a100")
    parallelism: int | None = setting(
        None, "tasks of the array at once (default: all)", low=1, flag="--array-parallelism"
    )
    setup: tuple[str, ...] = setting(
        (),
        "shell line run before the job, e.g. 'module load cuda' or 'source ~/factrecall/.venv/bin/activate' "
        "(repeatable)",
        repeat=True,
        metavar="LINE",
    )

    def parameters(self) -> dict:
        """For submitit's AutoExecutor.update_parameters (slurm_* keys apply on Slurm only)."""
        # Each option becomes an `#SBATCH` line (each setup line a line of the script): a newline or any
        # other control character would end the directive and run the rest as a shell command.
        for flag, value in (
            ("partition", self.partition),
            ("account", self.account),
            ("qos", self.qos),
            ("constraint", self.constraint),
            ("mem", self.mem),
            ("time", self.time),
            *(("setup", line) for line in self.setup),
        ):
            if value is not None and re.search(r"[\x00-\x1f\x7f]", value):
                raise FactrecallError(
                    f"--{flag} {value!r} holds a control character (a newline?); give one line of plain text"
                )
            if flag in ("partition", "account", "qos", "mem", "time") and value is not None and re.search(r"\s", value):
                raise FactrecallError(f"--{flag} {value!r}: Slurm names hold no spaces")
        if self.mem is not None and not re.fullmatch(r"\d+[KMGT]?", self.mem):
            raise FactrecallError(f"--mem {self.mem!r}: give Slurm's form, e.g. 64G or 500M")
        params = {
            "name": "factrecall",
            "timeout_min": minutes(self.time),
            "gpus_per_node": 1 if self.gpus is None else self.gpus,
            "tasks_per_node": 1,
            "nodes": 1,
            "slurm_signal_delay_s": 120,
        }
        if self.cpus:
            params["cpus_per_task"] = self.cpus
        extra = {
            "slurm_partition": self.partition,
            "slurm_mem": self.mem,
            "slurm_account": self.account,
            "slurm_qos": self.qos,
            "slurm_constraint": self.constraint,
            "slurm_array_parallelism": self.parallelism,
            "slurm_setup": list(self.setup) or None,
        }
        params.update({k: v for k, v in extra.items() if v is not None})
        return params


def _slurm(*args: str) -> subprocess.CompletedProcess | None:
    """A Slurm command's answer (its output kept from the terminal), None where it cannot run."""
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None


def partitions() -> dict[str, dict] | None:
    """What `sinfo` says of the cluster's partitions: name -> {"default", "gpus" (the most a node
    has), "cpus" (the most a node has; None when sinfo cannot say)}; None where sinfo does not answer."""
    out = _slurm("sinfo", "-h", "-o", "%P|%G|%c")
    if out is None or out.returncode != 0:
        return None
    found: dict[str, dict] = {}
    for line in out.stdout.splitlines():
        name, gres, cpus = (line.split("|") + ["", ""])[:3]
        if not name.strip():
            continue
        part = found.setdefault(name.strip().rstrip("*"), {"default": name.strip().endswith("*"), "gpus": 0, "cpus": 0})
        gpus = [int(n) for n in re.findall(r"gpu(?::[^:(,]+)?:(\d+)", gres)]
        part["gpus"] = max(part["gpus"], *gpus) if gpus else part["gpus"]
        count = re.match(r"\d+", cpus.strip())
        part["cpus"] = (
            None if part["cpus"] is None or not count or "+" in cpus else max(part["cpus"], int(count.group()))
        )
    return found


def fit_to_cluster(options: SlurmOptions) -> list[str]:
    """Check `options` against what sinfo says of the partition before anything is submitted (sbatch
    accepts a request no node can meet, and Slurm then holds the job for ever without a word): a
    partition that does not exist, GPUs where it has none, more GPUs or CPUs than any of its nodes
    has, each refused in one line. `--gpus` not given becomes 1 where the partition has GPUs and 0
    where it has none. Returns what was decided, in words. Where sinfo does not answer, nothing is
    checked and `--gpus` not given is 1."""
    found = partitions()
    if found is None:
        options.gpus = 1 if options.gpus is None else options.gpus
        return []
    name = options.partition or next((p for p, v in found.items() if v["default"]), None)
    if name is None:
        options.gpus = 1 if options.gpus is None else options.gpus
        return []
    if name not in found:
        raise FactrecallError(
            f"--partition {name}: no such partition on this cluster (sinfo lists {', '.join(found) or 'none'})"
        )
    part, notes = found[name], []
    if options.gpus is None:
        options.gpus = 1 if part["gpus"] else 0
        notes.append(
            f"partition {name} has {'GPUs' if part['gpus'] else 'no GPUs'}: each job asks for "
            f"{options.gpus} (--gpus N to ask for others)"
        )
    elif options.gpus > part["gpus"]:
        raise FactrecallError(
            f"--gpus {options.gpus}: "
            + (
                f"partition {name} has no GPUs (sinfo); give --gpus 0, or a partition with GPUs"
                if not part["gpus"]
                else f"no node of partition {name} has more than "
                f"{part['gpus']} (sinfo); Slurm would hold the jobs for ever"
            )
        )
    if options.cpus and part["cpus"] and options.cpus > part["cpus"]:
        raise FactrecallError(
            f"--cpus {options.cpus}: no node of partition {name} has more than {part['cpus']} CPUs "
            "(sinfo); Slurm would hold the jobs for ever: ask for at most that"
        )
    return notes
