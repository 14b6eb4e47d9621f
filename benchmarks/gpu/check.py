"""The GPU check's steps (benchmarks/gpu/check.sh installs, then runs this), each within its share of the time,
every result under --out:

1. env: the GPU, the versions of Python, torch, CUDA and transformers, and any requirement of factrecall the
   machine's packages do not meet;
2. tests: `pytest -m gpu tests/gpu` (bf16 against fp32, packed rows in SDPA, gradient checkpointing and
   torch.compile against the plain step, a cancelled and resumed phase, every family's training, dump and
   patching on the device against the CPU) -> tests.xml;
3. study: the training rate of the `gpu` preset's model (GPT-2 small's shape) measured in a few steps
   (benchmarks/bench_gpu.py), then `reproduce --dry-run --json` at that rate sizes the study: 10,000 people,
   or as many as its plan fits in the study's time; the plan is printed before the study starts, and
   `reproduce --seeds 0 --snapshots 0` (train, evaluate, dump, probe, patch, report) is held against it
   -> study.tar.gz (report, figures, metrics, the plan);
4. bench: bench_gpu.py's table for the 1B and 3B shapes, every runtime setting, MFU against the H200's bf16
   peak, peak memory against the estimate -> bench.json.

summary.md and summary.json say what each step did and measured; check.log holds everything printed. At most
8 files come back from the device machine, so that is all --out holds. --rehearse runs the same steps on the
CPU at tiny sizes (the `tiny` preset, a subset of the tests) in a few minutes: tests/test_gpu_check.py runs it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
H200_BF16_TFLOPS = 790.0  # 8192^3 bf16 products on random data, on the lent H200 (769 to 798 measured)
MINUTES = 8.0  # the whole check, install included (check.sh's installs take seconds)


class Plan:
    """How the check spends its time: each step's share in seconds, the study's sizes and the bench's cases."""

    def __init__(self, rehearse: bool, minutes: float):
        self.rehearse = rehearse
        self.total = minutes * 60
        if rehearse:  # each step's share is only a bound for a stuck step: a loaded CPU runs 10-30x slower
            self.tests = ["-k", "not family or llama"]  # one family: the same code as the others
            self.shares = {"tests": 1800, "rate": 600, "study": 300}
            self.timeout = 1800  # the study's, whatever its plan
            self.bench_reserve = 0
            self.rate_case = ["--device", "cpu", "--cases", "tiny:4", "--steps", "5", "--variants", "plain"]
            self.preset, self.people, self.min_people, self.step_people = "tiny", 16, 8, 2
            self.study_sets = [f"--set=train.{phase}.epochs=3" for phase in ("bio", "qa", "mix")]
            cpu = ["--device", "cpu", "--cases", "tiny:4", "--steps", "5"]
            self.bench = [[*cpu, "--variants", "plain", "checkpointing"]]
        else:
            self.tests = []
            # tests: five families trained on the device and dumped and patched on the CPU too, and a
            # compile; the study: its plan's time (its run may take twice that, leaving the bench's share)
            self.shares = {"tests": 150, "rate": 45, "study": 180}
            self.timeout = None  # twice the study's share, at most what the check has left less the bench's
            self.bench_reserve = 100  # seconds kept for the bench whatever the study does
            self.study_sets = []
            self.rate_case = ["--cases", "gpu:32", "--steps", "12", "--variants", "plain"]
            self.preset, self.people, self.min_people, self.step_people = "gpu", 10000, 200, 100
            every = ["plain", "eager", "checkpointing", "compile", "both"]
            self.bench = [
                ["--cases", "1b:32", "--variants", *every, "--peak-tflops", str(H200_BF16_TFLOPS)],
                ["--cases", "3b:32", "--variants", "plain", "checkpointing", "compile", "--peak-tflops",
                 str(H200_BF16_TFLOPS)],
            ]  # fmt: skip


class Check:
    def __init__(self, out: Path, plan: Plan):
        self.out, self.plan = out, plan
        self.start = time.monotonic()
        self.log = open(out / "check.log", "a", buffering=1)
        self.summary: dict = {"rehearsal": plan.rehearse, "steps": {}}
        self.work = Path(tempfile.mkdtemp(prefix="factrecall-check-"))

    def left(self) -> float:
        return self.plan.total - (time.monotonic() - self.start)

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.log.write(line + "\n")

    def run(self, argv: list[str], seconds: float, env: dict | None = None) -> tuple[int, float]:
        """A command, its output into check.log (and the terminal), stopped after `seconds`: (exit code, seconds).
        Exit 124 is a command stopped at its time."""
        self.say(f"$ {' '.join(argv)}   (at most {seconds:.0f} s)")
        t0 = time.monotonic()
        with subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", start_new_session=True,
        ) as proc:  # fmt: skip
            try:
                out, _ = proc.communicate(timeout=max(seconds, 1))
                code = proc.returncode
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                out, _ = proc.communicate()
                code = 124
        for line in out.splitlines():
            self.say("  " + line)
        return code, time.monotonic() - t0

    def step(self, name: str, fn) -> None:
        t0 = time.monotonic()
        self.say(f"\n== {name} ({self.left():.0f} s of the check left)")
        try:
            record = fn()
        except Exception as err:  # a step that breaks is written down, and the next one still runs
            record = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        record["seconds"] = round(time.monotonic() - t0, 1)
        self.summary["steps"][name] = record
        self.say(f"== {name}: {'ok' if record.get('ok') else 'FAILED'} in {record['seconds']} s")
        self.write()

    def write(self) -> None:
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=1, default=str))
        (self.out / "summary.md").write_text(summary_markdown(self.summary))

    # -- the steps ------------------------------------------------------------------------------------------
    def env(self) -> dict:
        import torch
        import transformers

        cuda = torch.cuda.is_available()
        record = {
            "ok": cuda or self.plan.rehearse,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "transformers": transformers.__version__,
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "gpu_memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1) if cuda else None,
            "cpu_threads": len(os.sched_getaffinity(0)),
            "unmet": unmet_requirements(),
        }
        if not cuda and not self.plan.rehearse:
            record["error"] = "torch sees no CUDA GPU here: run the check on the GPU machine, or --rehearse"
        for key, value in record.items():
            self.say(f"{key}: {value}")
        return record

    def tests(self) -> dict:
        xml = self.out / "tests.xml"
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/gpu", "-m", "gpu"]
        env = {"FACTRECALL_GPU_REHEARSE": "1"} if self.plan.rehearse else {}
        seconds = min(self.plan.shares["tests"], self.left())
        code, _ = self.run([*argv, *self.plan.tests, f"--junitxml={xml}"], seconds, env)
        counts = junit_counts(xml) if xml.exists() else {}
        return {"ok": code == 0 and counts.get("passed", 0) > 0, "exit": code, **counts}

    def study(self) -> dict:
        cli = shutil.which("factrecall-jobs")
        if cli is None:
            return {"ok": False, "error": "factrecall-jobs is not on PATH: check.sh installs it"}
        # The training rate of the study's model, measured: the dry run plans with it (--tflops).
        rate_json = self.work / "rate.json"
        code, _ = self.run(
            [sys.executable, "benchmarks/bench_gpu.py", *self.plan.rate_case, "--json", str(rate_json)],
            min(self.plan.shares["rate"], self.left()),
        )
        if code != 0 or not rate_json.exists():
            return {"ok": False, "error": f"the rate measurement failed (exit {code}): see check.log"}
        (row,) = json.loads(rate_json.read_text())
        tflops = row["tflops"]
        budget = min(self.plan.shares["study"], self.left() - 30 - self.plan.bench_reserve)
        workspace = self.work / "workspace"
        base = [cli, "--workspace", str(workspace), "reproduce", "--preset", self.plan.preset, "--seeds", "0"]
        base += ["--snapshots", "0", "--name", "check", *self.plan.study_sets]

        def dry_run(people: int, as_json: bool = True) -> dict | None:
            argv = [*base, "--people", str(people), "--dry-run", "--tflops", f"{tflops:.6g}"]
            if not as_json:
                self.run(argv, 120)  # the plan as a user reads it, into the log
                return None
            proc = subprocess.run([*argv, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"the dry run failed: {proc.stderr.strip()[-400:]}")
            return json.loads(proc.stdout)

        full = dry_run(self.plan.people)
        people = fitting_people(full, budget, self.plan.min_people, self.plan.step_people)
        record = {"rate_tflops": tflops, "rate_tokens_per_s": row["tokens_per_s"], "budget_s": round(budget),
                  "plan_full": brief(full)}  # fmt: skip
        if people is None:
            self.say(f"the study does not fit {budget:.0f} s even at {self.plan.min_people} people")
            return {"ok": False, **record, "error": "the study's plan does not fit its time"}
        planned = dry_run(people)
        dry_run(people, as_json=False)
        fits = planned["seconds"] <= budget
        self.say(f"plan: {planned['seconds']:.0f} s for {people:,} people; {budget:.0f} s allowed: "
                 f"{'fits' if fits else 'does NOT fit'}")  # fmt: skip
        record.update(people=people, plan=brief(planned), fits=fits)
        timeout = self.plan.timeout or max(min(self.left() - self.plan.bench_reserve, 2 * budget), 30)
        code, wall = self.run([*base, "--people", str(people)], timeout)
        record.update(exit=code, measured_s=round(wall, 1))
        run = workspace / "runs" / "reproduce-check-s0"
        folder = workspace / "reproduce" / "check"
        if (run / "metrics.json").exists():
            record["measured"] = measured(json.loads((run / "metrics.json").read_text()), planned)
        with tarfile.open(self.out / "study.tar.gz", "w:gz") as tar:
            (self.work / "plan.json").write_text(json.dumps(planned, indent=1))
            tar.add(self.work / "plan.json", arcname="plan.json")
            for path in [*sorted(folder.glob("*.md")), *sorted(folder.glob("*.json")), *sorted(folder.glob("*.png")),
                         run / "metrics.json", run / "spec.json"]:  # fmt: skip
                if path.is_file():
                    tar.add(path, arcname=str(path.relative_to(workspace)))
        record["ok"] = code == 0 and (folder / "report.md").exists()
        return record

    def bench(self) -> dict:
        rows, codes = [], []
        for i, case in enumerate(self.plan.bench):
            if self.left() < 15:
                self.say("no time left for: " + " ".join(case))
                codes.append("skipped")
                continue
            part = self.work / f"bench-{i}.json"
            seconds = self.left() - 5 if i == len(self.plan.bench) - 1 else self.left() * 0.45
            code, _ = self.run([sys.executable, "benchmarks/bench_gpu.py", *case, "--json", str(part)], seconds)
            codes.append(code)
            if part.exists():
                rows += json.loads(part.read_text())
        (self.out / "bench.json").write_text(json.dumps(rows, indent=1))
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from bench_gpu import table

        return {"ok": bool(rows) and all(c == 0 for c in codes), "exits": codes, "rows": rows, "table": table(rows)}


def unmet_requirements() -> list[str]:
    """factrecall's requirements that the installed packages do not meet, in words (none: an empty list)."""
    from packaging.requirements import Requirement

    unmet = []
    for text in metadata.requires("factrecall") or []:
        req = Requirement(text)
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            unmet.append(f"{req.name}: missing")
            continue
        if have not in req.specifier and not req.specifier.contains(have, prereleases=True):
            unmet.append(f"{req.name} {have}: wants {req.specifier}")
    return unmet


def junit_counts(xml: Path) -> dict:
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["failed"] = []
    for case in suite.iter("testcase"):
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if bad is not None:
            counts["failed"].append(f"{case.get('name')}: {bad.get('message', '')[:300]}")
    return counts


def fitting_people(plan: dict, budget: float, least: int, step: int) -> int | None:
    """The most people (at most the plan's, a multiple of `step`) whose study the plan fits in `budget` s:
    training, evaluation, the dump, the interventions and the report's sites grow with the people (the
    sites' few sweeps are counted as growing too: a small overestimate), the probe sweeps are taken as
    fixed (a fit's cost is its iterations over hidden x classes weights)."""
    each = plan["seconds_per_run"]
    grows = each["train"] + each["eval"] + each["dump"] + each["interventions"] + each.get("sites", 0)
    room = budget * 0.9 - each["probes"]
    if room <= 0:
        return None
    people = min(plan["people"], math.floor(plan["people"] * room / grows / step) * step)
    return people if people >= least else None


def brief(plan: dict) -> dict:
    keep = ("people", "parameters", "device", "seconds", "seconds_per_run", "memory", "fits", "rate_from", "threads")
    return {k: plan[k] for k in keep if k in plan} | {
        "phases": {p["phase"]: {"steps": p["steps"], "seconds": p["seconds"]} for p in plan["phases"]}
    }


def measured(metrics: dict, plan: dict) -> dict:
    """Each phase's training seconds and peak GPU memory, beside the plan's."""
    phases = {}
    for p in plan["phases"]:
        got = metrics.get("train", {}).get(p["phase"], {})
        phases[p["phase"]] = {
            "planned_s": round(p["seconds"], 1),
            "measured_s": got.get("train_seconds"),
            "tokens_per_s": got.get("tokens_per_s"),
            "peak_gb": None if got.get("peak_gpu_bytes") is None else round(got["peak_gpu_bytes"] / 1e9, 2),
        }
    return {"phases": phases, "planned_memory_gb": round(plan["memory"]["total"] / 1e9, 2)}


def summary_markdown(s: dict) -> str:
    lines = [f"# The GPU check{' (rehearsal on the CPU)' if s['rehearsal'] else ''}", ""]
    lines += ["| step | result | seconds |", "|---|---|---|"]
    for name, r in s["steps"].items():
        lines.append(f"| {name} | {'ok' if r.get('ok') else 'FAILED: ' + str(r.get('error', 'see check.log'))} "
                     f"| {r['seconds']} |")  # fmt: skip
    env = s["steps"].get("env", {})
    if env:
        lines += ["", f"{env.get('gpu') or 'no GPU'}, Python {env.get('python')}, torch {env.get('torch')} "
                  f"(CUDA {env.get('cuda')}), transformers {env.get('transformers')}, {env.get('cpu_threads')} CPU "
                  f"threads; unmet requirements: {', '.join(env.get('unmet') or []) or 'none'}"]  # fmt: skip
    tests = s["steps"].get("tests", {})
    if "tests" in tests:
        lines += ["", f"Tests marked gpu: {tests['passed']} passed, {tests['failures'] + tests['errors']} failed, "
                  f"{tests['skipped']} skipped."]  # fmt: skip
        lines += [f"- {f}" for f in tests.get("failed", [])]
    study = s["steps"].get("study", {})
    if "plan" in study:
        plan = study["plan"]
        preset, full = "tiny" if s["rehearsal"] else "gpu", study["plan_full"]
        lines += [
            "",
            f"Study: `reproduce --preset {preset}`, {study['people']:,} people (the plan for {full['people']:,} "
            f"said {full['seconds']:.0f} s), planned at the measured {study['rate_tflops']:.3g} TFLOP/s: "
            f"{plan['seconds']:.0f} s of the {study['budget_s']} s allowed; measured {study.get('measured_s')} s "
            f"(exit {study.get('exit')}).",
        ]
        got = study.get("measured", {})
        if got:
            lines += ["", "| phase | planned s | measured s | tokens/s | peak GPU memory |", "|---|---|---|---|---|"]
            for phase, r in got["phases"].items():
                peak = "–" if r["peak_gb"] is None else f"{r['peak_gb']} GB"
                lines.append(f"| {phase} | {r['planned_s']} | {r['measured_s']} | {r['tokens_per_s']} | {peak} |")
            lines.append(f"\nPlanned memory while training: {got['planned_memory_gb']} GB.")
    bench = s["steps"].get("bench", {})
    if bench.get("table"):
        lines += ["", bench["table"]]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="the folder every result is written to")
    ap.add_argument("--rehearse", action="store_true", help="on the CPU, at tiny sizes")
    ap.add_argument("--minutes", type=float, help=f"the check's time (default {MINUTES:g}; a rehearsal's: 120)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    check = Check(args.out, Plan(args.rehearse, args.minutes or (120 if args.rehearse else MINUTES)))
    for name in ("env", "tests", "study", "bench"):
        check.step(name, getattr(check, name))
        if name == "env" and not check.summary["steps"]["env"]["ok"]:
            check.say(check.summary["steps"]["env"]["error"])
            return 2
    shutil.rmtree(check.work, ignore_errors=True)
    failed = [n for n, r in check.summary["steps"].items() if not r.get("ok")]
    check.say(f"\n{'all steps ok' if not failed else 'failed: ' + ', '.join(failed)}; results in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
