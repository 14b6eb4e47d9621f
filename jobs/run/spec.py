"""The experiment spec: one typed object, built once from a preset, a TOML file and CLI overrides,
validated once, written to the run folder as `spec.json`, and passed whole to every step.

The words it uses (strategy, phase, ...) are defined in `jobs.words`:
- strategy: `bio` (BIO only), `qa` (QA only, from the untrained model), `stage` (BIO, then QA-in
  on top of the BIO checkpoint), `mix` (BIO and QA-in shuffled into the same batches).
- phase: one training pass with its own checkpoint: `bio`, `stage` (the QA phase of Stage),
  `mix`, `qa`. Strategies `bio` and `stage` share the `bio` phase.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from jobs.errors import SpecError
from jobs.words import DEFAULT_STRATEGIES, PHASE_SETTINGS, STRATEGIES, Strategy, phases_of
from store.fileio import Unreadable, read_regular

DEFAULT_PRESET = "cpu"
# phase -> (the checkpoint it starts from, the example sets it trains on)
PHASES = {
    "bio": ("init", ("bio",)),
    "stage": ("bio", ("qa_in",)),
    "mix": ("init", ("bio", "qa_in")),
    "qa": ("init", ("qa_in",)),
}
# What people.py asks of faker; a locale lacking one cannot make the data.
FAKER_METHODS = ("first_name_female", "first_name_male", "last_name", "city", "state_abbr", "company", "job")


@functools.cache
def _locale_problem(value: str) -> str | None:
    """Why faker cannot make people in locale `value` (None: it can). Asked once a locale per
    process: making a Faker takes milliseconds, and the app validates every run's spec."""
    from faker import Faker  # here, not at the top: the app reads specs and starts faster without faker
    from faker.config import AVAILABLE_LOCALES

    if value not in AVAILABLE_LOCALES:
        return f"faker has no locale {value!r} (e.g. en_US, en_GB, en_CA)"
    fake = Faker(value)
    missing = [m for m in FAKER_METHODS if not hasattr(fake, m)]
    if missing:
        return f"faker's {value} locale cannot make {missing[0]} (people.py needs it); use en_US"
    return None


def augmentations(data: dict[str, Any]) -> list[str]:
    """What a data section (`DataSpec.model_dump`, a report's `setup.data`) does beyond the paper's
    data (one entry per person, fixed templates and order, the name in the first sentence only), in
    words; empty for the paper's data."""
    out = []
    if data.get("bio_entries", 1) > 1:
        out.append(f"{data['bio_entries']} BIO entries per person")
    if data.get("bio_templates", "fixed") == "multi":
        out.append("each sentence's template drawn among paraphrases")
    if data.get("permute"):
        out.append("sentence order shuffled in every entry")
    if data.get("full_name"):
        out.append("the full name in every sentence")
    return out


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataSpec(_Spec):
    people: int = Field(1000, ge=2, description="number of synthetic people")
    qa_in_fraction: float = Field(0.5, gt=0.0, lt=1.0, description="share of people whose QA is trained on")
    pool_size: int = Field(
        100,
        ge=2,
        le=100_000,
        description="distinct values per attribute (blood type always "
        "has 8); faker makes a few hundred jobs and tens of thousands of dates, not millions",
    )
    bio_templates: Literal["fixed", "multi"] = Field(
        "fixed", description="fixed: one template per attribute (the paper); multi: sample among paraphrases"
    )
    bio_entries: int = Field(1, ge=1, description="BIO entries per person (augmentation when > 1)")
    permute: bool = Field(False, description="shuffle sentence order in each BIO entry")
    full_name: bool = Field(
        False,
        description="the full name as the subject of every sentence of a BIO entry "
        "(Allen-Zhu & Li's fullname augmentation); else only the first sentence names the "
        "person and the others say He/She, as the paper",
    )
    locale: str = "en_US"

    @field_validator("locale")
    @classmethod
    def _faker_knows_locale(cls, value: str) -> str:
        problem = _locale_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class ModelSpec(_Spec):
    path: str | None = Field(None, description="local Hugging Face checkpoint; None = built-in Llama from scratch")
    layers: int = Field(4, ge=1)
    hidden: int = Field(128, ge=8)
    heads: int = Field(4, ge=1)
    intermediate: int = Field(512, ge=8)

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ModelSpec:
        if self.path is None and self.hidden % self.heads:
            raise ValueError(f"model.hidden ({self.hidden}) must be a multiple of model.heads ({self.heads})")
        return self


class PhaseSpec(_Spec):
    epochs: float | None = Field(None, gt=0, le=100_000)
    steps: int | None = Field(None, gt=0, le=100_000_000)
    lr: float = Field(gt=0)
    batch_size: int = Field(gt=0, description="rows per optimizer step")
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine decays to lr * min_lr_ratio")

    @model_validator(mode="after")
    def _one_length(self) -> PhaseSpec:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("give exactly one of epochs or steps")
        return self


class TrainSpec(_Spec):
    bio: PhaseSpec
    qa: PhaseSpec = Field(description="the QA phase of stage, and the qa strategy")
    mix: PhaseSpec
    packing: bool = Field(True, description="pack shuffled examples into rows of row_len tokens")
    row_len: int = Field(128, ge=16, description="tokens per packed row")
    grad_clip: float = Field(1.0, gt=0)
    checkpoint_every: int = Field(200, ge=1, description="optimizer steps between checkpoints")
    eval_every: int = Field(
        0,
        ge=0,
        description="steps between accuracy samples during training, at most: "
        "a phase shorter than 10 samples is sampled 10 times (0: off)",
    )
    curve_questions: int = Field(300, ge=1, description="QA-out questions scored at each eval_every sample")
    snapshots: int = Field(
        0,
        ge=0,
        le=64,
        description="checkpoints kept along each phase, evenly spaced, the "
        "last at its end: each is evaluated and dumped into trajectory.zarr (0: none)",
    )
    eval_batch_size: int = Field(256, ge=1)
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="compute precision of training, evaluation "
        "and dump: bf16 autocast over fp32 weights and AdamW state, on a "
        "GPU or a CPU with bf16 units (else fp32, said at start-up)",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="recompute each block's activations in the backward "
        "pass: far less memory for about a third more compute (not part of "
        "the run's identity)",
    )
    compile: bool = Field(
        False,
        description="torch.compile the training step (not part of the run's identity; "
        "see benchmarks/RESULTS.md for where it pays)",
    )
    attention: Literal["auto", "sdpa", "eager"] = Field(
        "auto",
        description="attention kernel of the training step: auto is eager for a small model (hidden "
        "size up to 256) on a CPU computing in bf16, where the packed rows' mask sends SDPA to a slow kernel, "
        "and SDPA elsewhere (not part of the run's identity)",
    )


# How a phase is computed, not what it learns: left out of a run's identity and of phase keys, so
# switching one on resumes (or reuses) the same run.
RUNTIME_SETTINGS = ("gradient_checkpointing", "compile", "attention")


# Settings added after runs existed, with the value that means "as before": left out of identities
# and phase keys at that value, so that older runs keep their names and their trained phases.
NEWCOMERS = {"train": {"snapshots": 0, "precision": "fp32"}, "data": {"full_name": False}}


def _drop_unset_newcomers(dumped: dict[str, Any], section: str) -> None:
    """Leave `section`'s newcomers out of `dumped` (that section's settings) at their "as before" value."""
    for key, before in NEWCOMERS[section].items():
        if dumped.get(key, before) == before:
            dumped.pop(key, None)


class ExperimentSpec(_Spec):
    preset: str
    strategies: tuple[Strategy, ...] = DEFAULT_STRATEGIES
    seed: int = Field(0, ge=0, le=2**32 - 1, description="numpy and torch take seeds below 2**32")
    data: DataSpec
    model: ModelSpec
    train: TrainSpec
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N; not part of the run's identity")

    @field_validator("preset")
    @classmethod
    def _preset_is_a_name(cls, value: str) -> str:
        if not is_name(value):  # read back from a spec.json: a name, as when it was written
            raise ValueError(
                "a preset is named with letters, digits and . _ + = - (a spec.json that says otherwise "
                "was not written by factrecall)"
            )
        return value

    @model_validator(mode="after")
    def _strategies_known(self) -> ExperimentSpec:
        if not self.strategies:
            raise ValueError("give at least one strategy")
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError(f"strategies repeat: {list(self.strategies)}")
        return self

    def phases(self) -> list[Phase]:
        """Training phases in order, each once: `stage` after `bio`, which it starts from."""
        return [
            Phase(name, *PHASES[name], getattr(self.train, PHASE_SETTINGS[name])) for name in phases_of(self.strategies)
        ]

    def identity(self) -> dict[str, Any]:
        """What makes two runs the same experiment: everything but the device and RUNTIME_SETTINGS."""
        ident = self.model_dump(mode="json", exclude={"device": True, "train": set(RUNTIME_SETTINGS)})
        for section in NEWCOMERS:
            _drop_unset_newcomers(ident[section], section)
        return ident

    def config_hash(self) -> str:
        """Short hash of the identity without the seed: runs of one configuration share it."""
        ident = self.identity()
        ident.pop("seed")
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:6]

    def phase_key(self, name: str) -> str:
        """Hash of everything that decides phase `name`'s trained weights and logged curve: the seed,
        data, model, the training settings all phases share, and every phase from init to this one
        (for `stage`, the `bio` phase too). Runs with equal keys train that phase identically."""
        by_name = {p.name: p for p in self.phases()}
        chain, phase = [], by_name[name]
        while True:
            chain.append(
                {"name": phase.name, "sets": list(phase.sets), "settings": phase.settings.model_dump(mode="json")}
            )
            if phase.start == "init":
                break
            phase = by_name[phase.start]
        shared = self.train.model_dump(
            mode="json", exclude={"bio", "qa", "mix", "checkpoint_every", "eval_batch_size", *RUNTIME_SETTINGS}
        )
        _drop_unset_newcomers(shared, "train")
        data = self.data.model_dump(mode="json")
        _drop_unset_newcomers(data, "data")
        ident = {
            "seed": self.seed,
            "data": data,
            "model": self.model.model_dump(mode="json"),
            "train": shared,
            "chain": chain[::-1],
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    def default_name(self) -> str:
        """`cpu-stage+mix-s0`; a suffix of the config hash when settings differ from the preset's."""
        base = f"{self.preset}-{'+'.join(self.strategies)}-s{self.seed}"
        try:
            stock = build_spec(self.preset, strategies=self.strategies, seed=self.seed)
        except SpecError:
            stock = None
        if stock is None or stock.identity() != self.identity():
            base += f"-{self.config_hash()}"
        return base


class Phase:
    """One training pass: its name, the checkpoint it starts from, and the example sets it trains on."""

    def __init__(self, name: str, start: str, sets: tuple[str, ...], settings: PhaseSpec):
        self.name, self.start, self.sets, self.settings = name, start, sets, settings

    def __repr__(self) -> str:
        return f"Phase({self.name!r} from {self.start!r} on {'+'.join(self.sets)})"


def preset_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".toml") for p in resources.files("jobs.presets").iterdir() if p.name.endswith(".toml")
    )


def load_preset(name: str) -> dict[str, Any]:
    if name not in preset_names():
        raise SpecError(f"unknown preset {name!r}: choose one of {', '.join(preset_names())}")
    return tomllib.loads(resources.files("jobs.presets").joinpath(f"{name}.toml").read_text())


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_assignment(text: str) -> dict[str, Any]:
    """`train.mix.epochs=30` -> {"train": {"mix": {"epochs": 30}}}; the value is read as TOML, else a string."""
    if "=" not in text:
        raise SpecError(f"--set {text!r}: write it as key=value, e.g. --set train.mix.epochs=30")
    key, raw = (part.strip() for part in text.split("=", 1))
    if not key:
        raise SpecError(f"--set {text!r}: the key before '=' is empty")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    node: dict[str, Any] = {}
    cur = node
    parts = key.split(".")
    for part in parts[:-1]:
        cur[part] = {}
        cur = cur[part]
    cur[parts[-1]] = value
    return node


def _one_length_per_phase(layer: dict[str, Any]) -> dict[str, Any]:
    """A phase is measured in epochs or in steps: a layer that sets one clears the other below it."""
    train = layer.get("train")
    if isinstance(train, dict):
        for phase in train.values():
            if isinstance(phase, dict) and ("epochs" in phase) != ("steps" in phase):
                phase.setdefault("steps" if "epochs" in phase else "epochs", None)
    return layer


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    value = first.get("input")
    shown = f"{where}={value!r}" if where and not isinstance(value, dict) else (where or "spec")
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"invalid setting {shown}: {first['msg']}{more}"


def build_spec(
    preset: str = DEFAULT_PRESET,
    *,
    strategies: tuple[str, ...] | list[str] | None = None,
    seed: int = 0,
    config: dict[str, Any] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    **top: Any,
) -> ExperimentSpec:
    """Preset, then a config mapping (e.g. a TOML file), then `key=value` overrides, then keyword
    settings (`device=...`, or nested dicts like `data={"people": 50}`), validated once."""
    raw = load_preset(preset)
    layers = [("the config file", config or {})] + [(f"--set {a}", parse_assignment(a)) for a in overrides]
    for where, layer in layers:
        # The seed and the preset are the request's (one run per seed): a second place to set them
        # would be silently overruled, so it is refused.
        if "seed" in layer:
            raise SpecError(f"{where}: the seed is not a setting; give it with --seed N (or --seeds 0 1 2)")
        if "preset" in layer:
            raise SpecError(f"{where}: the preset is not a setting; give it with --preset NAME")
        raw = _merge(raw, _one_length_per_phase(layer))
    for key, value in top.items():
        if value is not None:
            raw = _merge(raw, {key: value})
    raw.update(preset=preset, seed=seed)
    if strategies:
        unknown = [s for s in strategies if s not in STRATEGIES]
        if unknown:
            raise SpecError(f"unknown strategy {unknown[0]!r}: choose from {', '.join(STRATEGIES)}")
        raw["strategies"] = tuple(strategies)
    try:
        return ExperimentSpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(_one_line(err)) from None


_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,127}")


def is_name(name: object) -> bool:
    """Whether `name` is one factrecall could have given a run, study, preset or model (`check_run_name`):
    what a name read back from a file must be before it is used or shown."""
    return isinstance(name, str) and _RUN_NAME.fullmatch(name) is not None and ".." not in name


def check_run_name(name: str) -> str:
    """A run's folder name: letters, digits and . _ + = -, starting with a letter or digit, never
    `..`: a name cannot reach outside WORKSPACE/runs."""
    if not is_name(name):
        raise SpecError(
            f"run name {name!r}: use letters, digits and . _ + = - (starting with a letter or digit, "
            "at most 128, no '..'), e.g. --name my-sweep"
        )
    return name


MAX_CONFIG_BYTES = 1 << 20  # a settings file is a page of TOML; anything larger is not one


def load_config_file(path: Path) -> dict[str, Any]:
    """A TOML settings file, laid out like jobs/presets/*.toml: a regular file of at most 1 MiB of
    UTF-8 TOML (a folder, a FIFO, a device such as /dev/zero, or binary data is refused in one line)."""
    try:
        text = read_regular(path, MAX_CONFIG_BYTES).decode("utf-8")
        return tomllib.loads(text)
    except Unreadable as err:
        why = "does not exist" if err.missing else err.why
        raise SpecError(f"config file {path} {why}; give a TOML file laid out like jobs/presets/*.toml") from None
    except UnicodeDecodeError:
        raise SpecError(f"config file {path} is not UTF-8 text; give a TOML file") from None
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"config file {path} is not valid TOML: {err}") from None


def spec_from_json(text: str, where: str) -> ExperimentSpec:
    try:
        return ExperimentSpec.model_validate_json(text)
    except ValidationError as err:
        raise SpecError(f"{where}: {_one_line(err)}") from None
