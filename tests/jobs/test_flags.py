"""Each setting is declared once, as a field of a settings dataclass, and the CLI's flags, their help,
defaults and checks are made from it (jobs/flags.py, jobs/options.py)."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

from jobs import flags
from jobs.arguments import Parser, parser
from jobs.launch.plan import RunRequest
from jobs.launch.slurm_options import SlurmOptions
from jobs.options import MODEL_VERBS, VERBS, PatchCommand, ProbeCommand
from store.errors import StoreError
from store.settings import DumpOptions, PatchSettings, ProbeSettings, check, flag_name, setting

MINIMAL = {"runs": ["r"], "run": "r", "file": "f.gguf"}  # what a verb's positional arguments need


def _parse(verb: str, *extra: str):
    cls = VERBS[verb].options
    positional = [
        value
        for f in dataclasses.fields(cls)
        if "setting" in f.metadata and not flag_name(f).startswith("-") and f.name in MINIMAL
        for value in (MINIMAL[f.name] if isinstance(MINIMAL[f.name], list) else [MINIMAL[f.name]])
    ]
    extra = list(extra) + (["--hdf5", "x.h5"] if verb == "export" else [])
    return flags.build(cls, parser().parse_args([verb, *positional, *extra]))


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_verb_builds_its_typed_options_and_the_defaults_are_the_declared_ones(verb):
    built = _parse(verb)
    assert isinstance(built, VERBS[verb].options)
    for field in dataclasses.fields(built):
        value = getattr(built, field.name)
        if "nested" in field.metadata:  # a nested setting left alone is the dataclass's own default
            meta = field.metadata["nested"]
            for inner in dataclasses.fields(value):
                if inner.name not in meta["skip"]:
                    assert getattr(value, inner.name) == meta["defaults"].get(inner.name, inner.default), inner.name
        elif field.name not in MINIMAL and field.name != "hdf5":
            assert value == field.default, field.name


@pytest.mark.parametrize(
    ("verb", "cls", "skip"),
    [
        ("probe", ProbeSettings, ()),
        ("patch", PatchSettings, ()),
        ("dump", DumpOptions, ()),
        ("submit", SlurmOptions, ()),
        ("submit", RunRequest, ()),
        ("run", RunRequest, ("per_strategy",)),
    ],
)
def test_every_field_of_a_settings_dataclass_is_a_flag_of_its_verb_with_its_help(verb, cls, skip, capsys):
    with pytest.raises(SystemExit):
        parser().parse_args([verb, "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        assert flag_name(field) in shown, field.name
        assert " ".join(field.metadata["setting"]["help"].split())[:40] in shown, field.name


def test_flags_become_the_settings_the_library_takes():
    built = _parse(
        "probe",
        "--bio",
        "short",
        "--classes",
        "vocab",
        "--l2",
        "0.5",
        "--layers",
        "0",
        "-1",
        "--no-controls",
        "--max-iter",
        "7",
        "--no-cache",
        "--csv",
        "t.csv",
        "--models",
        "mix",
    )
    assert built.settings == ProbeSettings(
        bio="bio_short", classes="vocab", l2=0.5, layers=(0, -1), controls=False, max_iter=7
    )
    assert built.models == ("mix",) and built.written.cache is False and built.written.csv == "t.csv"
    patched = _parse("patch", "--people", "5", "--no-erase", "--seed", "3", "--split", "qa_in", "--batch-size", "8")
    assert patched.settings == PatchSettings(people=5, erase=False, seed=3, split="qa_in")
    assert patched.batch_size == 8
    request = _parse(
        "submit",
        "--seed",
        "4",
        "5",
        "--set",
        "a.b=1",
        "--set",
        "c.d=2",
        "--strategy",
        "mix",
        "--setup",
        "module load x",
        "--setup",
        "true",
        "--array-parallelism",
        "2",
    ).request
    assert request.seeds == (4, 5) and request.overrides == ("a.b=1", "c.d=2") and request.strategies == ("mix",)
    slurm = _parse("submit", "--setup", "module load x", "--setup", "true", "--array-parallelism", "2").slurm
    assert slurm.setup == ("module load x", "true") and slurm.parallelism == 2
    assert _parse("reproduce").request.seeds == (0, 1, 2)  # its own default, declared with the verb
    dumped = _parse("dump", "--out", "s.zarr", "--dtype", "float32", "--chunk-people", "3").options
    assert dumped == DumpOptions(url="s.zarr", dtype="float32", chunk_people=3)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["probe", "r", "--l2", "0"], "--l2: 0 is out of range: give a number above 0"),
        (["probe", "r", "--max-iter", "0"], "--max-iter: 0 is out of range: give 1 or more"),
        (["probe", "r", "--bio", "middle"], "--bio: invalid choice: 'middle'"),
        (["patch", "r", "--people", "1"], "--people: 1 is out of range: give 2 or more"),
        (["run", "--qa-in-fraction", "1"], "--qa-in-fraction: 1 is out of range: give a number between 0 and 1"),
        (["run", "--seeds", "-1"], "--seeds/--seed: -1 is out of range: give 0 to 4294967295"),
        (["dump", "r", "--chunk-people", "x"], "--chunk-people: 'x' is not a whole number"),
        (["reproduce", "--snapshots", "65"], "--snapshots: 65 is out of range: give 0 to 64"),
    ],
)
def test_a_value_out_of_its_declared_range_is_one_line_naming_the_flag(argv, says, capsys):
    with pytest.raises(SystemExit) as stop:
        parser().parse_args(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and says in " ".join(err.split()) and len(err.strip().splitlines()) == 1


def test_the_library_refuses_what_the_flags_refuse_in_the_same_words():
    for make, says in [
        (lambda: ProbeSettings(l2=0), "--l2 0 is out of range: give a number above 0"),
        (lambda: ProbeSettings(bio="long"), "--bio 'long': use one of long, short"),
        (lambda: PatchSettings(split="all"), "--split 'all': use one of qa_out, qa_in"),
        (lambda: DumpOptions(dtype="int8"), "--dtype 'int8': use one of float16, float32"),
        (lambda: ProbeSettings(layers=(0, "1")), "--layers '1': give a whole number"),
        (lambda: ProbeSettings(controls="no"), "--controls 'no': use true or false"),
    ]:
        with pytest.raises(StoreError, match="^" + says.replace("(", r"\(").replace(")", r"\)")):
            make()


def test_a_field_added_to_a_settings_dataclass_is_a_flag_with_its_help_and_its_check(capsys):
    """What adding an option is: one field. Its flag, help, range and default come with it."""

    @dataclasses.dataclass(frozen=True)
    class Widened(ProbeSettings):
        temperature: float = setting(1.0, "softmax temperature of the probe", above=0)
        norm: Literal["none", "layer"] = setting("none", "normalise the vectors first")

        def __post_init__(self) -> None:
            check(self)

    top = Parser(prog="t")
    flags.add(top, Widened)
    assert flags.build(Widened, top.parse_args([])) == Widened()
    assert flags.build(Widened, top.parse_args(["--temperature", "2", "--norm", "layer", "--bio", "short"])) == Widened(
        temperature=2.0, norm="layer", bio="bio_short"
    )
    top.print_help()
    assert "softmax temperature of the probe" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        top.parse_args(["--temperature", "-1"])
    assert "--temperature: -1 is out of range: give a number above 0" in capsys.readouterr().err


def test_the_verbs_are_declared_once():
    assert set(VERBS) | {"models"} == set(parser()._subparsers._group_actions[0].choices)
    assert set(MODEL_VERBS) == {"import", "list"}
    assert {f.name for f in dataclasses.fields(ProbeCommand)} >= {"settings", "written"}
    assert {f.name for f in dataclasses.fields(PatchCommand)} >= {"settings", "written", "device"}
