"""Settings, each declared once: a frozen dataclass whose fields carry their type (a `Literal` for a
choice), default, bounds and help text. Everything else reads them from here: the CLI's flags
(jobs/flags.py makes each verb's from these fields), the app's forms (factrecall_tui/settings_form.py),
the validation below, and the cache keys (store/cache.py hashes a settings object as a whole).

Adding an option to `probe` is one field in `ProbeSettings`: it is a `--flag` with its help, a field
of the Probes pane's form, validated, and part of every cached sweep's key.

Light on purpose (no numpy, torch or zarr): `--help` and the app's first frame import it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from store.errors import StoreError
from store.names import (
    DEFAULT_SITE,
    BioFormat,
    Classes,
    Compressor,
    Dtype,
    PatchSplit,
    ProbeBackend,
    ProbeSplit,
    parse_site,
    parse_sites,
)


def setting(
    default: Any,
    help: str,
    *,
    low: float | None = None,
    high: float | None = None,
    above: float | None = None,
    below: float | None = None,
    flag: str | None = None,
    metavar: str | None = None,
    prefix: str = "",
    form: bool = True,
    alias: str | None = None,
    repeat: bool = False,
    empty: bool = False,
) -> Any:
    """A settings field. `low`/`high`: inclusive bounds, `above`/`below`: exclusive bounds (each also
    checked on construction). `flag`: the CLI's name when it is not `--field-name` (a True boolean is
    `--no-field-name`). `prefix`: a choice's flag value leaves it out (`--bio long` for "bio_long").
    `form=False`: not shown in the app's forms (an expert's setting: the CLI and config only).
    `alias`: a second name of the flag; `repeat`: a tuple given one value per flag (`--set A --set B`);
    `empty`: a positional tuple that may be left out (the verb then picks)."""
    meta = {"help": help, "low": low, "high": high, "above": above, "below": below, "flag": flag, "metavar": metavar}
    meta |= {"prefix": prefix, "form": form, "alias": alias, "repeat": repeat, "empty": empty}
    return dataclasses.field(default=default, metadata={"setting": meta})


def info(field: dataclasses.Field) -> dict:
    """What `setting` declared of a field ({} for a plain field)."""
    return field.metadata.get("setting", {})


def resolved(cls: type) -> dict[str, Any]:
    """Each field's type, resolved (this module's `from __future__ import annotations` makes them text)."""
    return typing.get_type_hints(cls)


def kind(hint: Any) -> tuple[Any, bool, bool]:
    """(base type, optional, many) of a field's type: `int | None` -> (int, True, False); `tuple[int,
    ...] | None` -> (int, True, True); a Literal stays a Literal."""
    optional, many = False, False
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        optional = True
        (hint,) = [a for a in args if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        many, hint = True, typing.get_args(hint)[0]
    return hint, optional, many


def choices(hint: Any) -> tuple | None:
    """A Literal's values, else None."""
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else None


def flag_name(field: dataclasses.Field) -> str:
    """The field's CLI flag: declared, else `--name` (`--no-name` for a boolean that defaults to True)."""
    declared = info(field).get("flag")
    if declared:
        return declared
    name = field.name.replace("_", "-")
    return f"--no-{name}" if field.default is True else f"--{name}"


def problem(field: dataclasses.Field, hint: Any, value: Any) -> str | None:
    """Why `value` is not a valid value of `field`, else None."""
    base, optional, many = kind(hint)
    if value is None:
        return None if optional else "must be given"
    values = value if many else (value,)
    if many and not isinstance(value, (tuple, list)):
        return "must be a tuple"
    meta = info(field)
    for v in values:
        allowed = choices(base)
        if allowed is not None:
            if v not in allowed:
                prefix = meta.get("prefix", "")
                return f"{v!r}: use one of {', '.join(a.removeprefix(prefix) for a in allowed)}"
            continue
        if base is bool:
            if not isinstance(v, bool):
                return f"{v!r}: use true or false"
            continue
        if base in (int, float):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (base is int and not isinstance(v, int)):
                return f"{v!r}: give a {'whole ' if base is int else ''}number"
            if not math.isfinite(v):
                return f"{v} is out of range: give a finite number"
            low, high, above, below = (meta.get(k) for k in ("low", "high", "above", "below"))
            if (
                (low is not None and v < low)
                or (high is not None and v > high)
                or (above is not None and v <= above)
                or (below is not None and v >= below)
            ):
                return f"{_number(v)} is out of range: " + bounds(meta)
        elif base is str and not isinstance(v, str):
            return f"{v!r}: give text"
    return None


def bounds(meta: dict) -> str:
    """A field's range in words: 'give 1 or more', 'give 0 to 64', 'give a number above 0'."""
    low, high, above, below = (_number(meta.get(k)) for k in ("low", "high", "above", "below"))
    if above is not None and below is not None:
        return f"give a number between {above} and {below}"
    if above is not None:
        return f"give a number above {above}"
    if low is not None and high is not None:
        return f"give {low} to {high}"
    return f"give {low} or more" if low is not None else f"give {high} or less"


def _number(x: float | None) -> str | None:
    return None if x is None else str(int(x)) if float(x).is_integer() else f"{x:g}"


def check(settings: Any, error: type[Exception] = StoreError) -> None:
    """Validate every field of a settings object against its declaration: one `error` naming the
    flag, the value and what to give instead."""
    hints = resolved(type(settings))
    for field in dataclasses.fields(settings):
        if "setting" not in field.metadata:
            continue
        why = problem(field, hints[field.name], getattr(settings, field.name))
        if why:
            raise error(f"{flag_name(field).replace('--no-', '--')} {why}")


# -- the settings a probe sweep and a patching sweep are made with ------------------------------------


@dataclass(frozen=True)
class ProbeSettings:
    """Everything besides the store and model that shapes a probe sweep's numbers (store.probes)."""

    attribute: str = setting("job", "attribute to probe (default: job, as the paper's figures)")
    bio: BioFormat = setting("bio_long", "BIO_long (Figure 3) or BIO_short (Figure 4)", prefix="bio_")
    train_split: ProbeSplit = setting("qa_in", "people the probes learn from")
    test_split: ProbeSplit = setting("qa_out", "people they are scored on")
    classes: Classes = setting(
        "observed", "observed: the attribute's first tokens that occur (default); vocab: every token"
    )
    backend: ProbeBackend = setting(
        "lbfgs", "lbfgs: logistic regression in torch (default); ridge: closed form; sklearn: the reference"
    )
    # A penalty on mean cross-entropy: l2/2 * |W|^2 (sklearn's C = 1 / (l2 * n)).
    l2: float = setting(1e-3, "L2 penalty on the mean loss (default 1e-3)", above=0)
    max_iter: int = setting(200, "L-BFGS iterations at most (default 200)", low=1, form=False)
    layers: tuple[int, ...] | None = setting(
        None, "probe these layers only (default: all; -1 is the last)", metavar="LAYER"
    )
    controls: bool = setting(True, "skip the control task's probes (half the fits; no selectivity)")
    site: str = setting(
        DEFAULT_SITE, "where vectors are read: HOOK@POSITION (default resid_mid@last; docs/sites.md)", metavar="SITE"
    )

    def __post_init__(self) -> None:
        check(self)
        _site_field(self)


@dataclass(frozen=True)
class PatchSettings:
    """Everything besides the store and model that shapes a patching sweep's numbers (store.interventions)."""

    attribute: str = setting("job", "attribute whose answer is decoded (default: job)")
    split: PatchSplit = setting("qa_out", "people patched (default: qa_out)")
    layers: tuple[int, ...] | None = setting(
        None, "patch these layers only (default: all; -1 is the last)", metavar="LAYER"
    )
    people: int | None = setting(
        None, "at most this many of them, the same sample each time (default: all; a donor is another one)", low=2
    )
    seed: int = setting(0, "for the donors, the random vectors and the sample", low=0)
    erase: bool = setting(True, "skip the LEACE erasure columns")
    site: str = setting(
        DEFAULT_SITE, "where vectors are put in: HOOK@POSITION (default resid_mid@last; docs/sites.md)", metavar="SITE"
    )

    def __post_init__(self) -> None:
        check(self)
        _site_field(self)


@dataclass(frozen=True)
class DumpOptions:
    """What a dump writes and how (jobs.run.dump), from `dump`'s flags or the pipeline's defaults.
    Settings left at None are the existing store's (a resume needs no flags repeated), else the
    defaults: float16, uncompressed, chunks of up to 4 MiB, train.eval_batch_size prompts a batch."""

    models: tuple[str, ...] | None = setting(None, "models to dump (default: untrained and every trained phase)")
    url: str | None = setting(None, "store path or fsspec URL (default: RUN/activations.zarr)", flag="--out")
    trajectory: bool = setting(
        False, "the snapshots kept along training (train.snapshots) instead, into RUN/trajectory.zarr"
    )
    dtype: Dtype | None = setting(
        None,
        "stored precision (default: the existing store's, else float16: half the disk, about 3 significant digits)",
    )
    compressor: Compressor | None = setting(
        None,
        "chunk compression (default: the existing store's, else none: see benchmarks/RESULTS.md for what zstd "
        "saves and costs)",
    )
    chunk_people: int | None = setting(
        None, "people per chunk (default: the existing store's, else as many as fit 4 MiB)", low=1
    )
    batch_size: int | None = setting(None, "prompts per forward pass (default: train.eval_batch_size)", low=1)
    sites: tuple[str, ...] | None = setting(
        None,
        "sites to dump in one pass, HOOK@POSITION, space- or comma-separated (default: the existing store's, "
        "else resid_mid@last; docs/sites.md)",
        metavar="SITE",
    )

    def __post_init__(self) -> None:
        check(self)
        if self.sites is not None:
            try:
                object.__setattr__(self, "sites", parse_sites(self.sites))
            except ValueError as err:
                raise StoreError(f"--sites: {err}") from None


def _site_field(settings) -> None:
    """A settings object's `site`, as its full name (`mlp_out` is `mlp_out@last`); one line if unknown."""
    try:
        object.__setattr__(settings, "site", parse_site(settings.site))
    except ValueError as err:
        raise StoreError(f"--site: {err}") from None
