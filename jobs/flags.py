"""A verb's flags, made from the settings dataclasses that declare them (store/settings.py's `setting`):
each field becomes one argparse argument with its type, choices, bounds, default and help, and
`build` turns the parsed arguments back into the dataclass. A field whose type is itself a settings
dataclass (`nested`) contributes its fields' flags, flat, as `--attribute` rather than
`--settings.attribute`.

Written here, on argparse, rather than with tyro, simple-parsing, cyclopts or typer: the CLI keeps
its conventions (one-line errors through jobs.arguments.Parser, `--no-controls` for a True boolean,
`--bio long` for a prefixed choice, a range error naming the flag), and `--help` stays light (tyro
alone imports in ~70 ms here, and prints errors as a panel). Everything here reads only a field's
declaration: adding a field adds its flag.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from store.settings import choices, flag_name, info, kind, problem, resolved


def nested(
    cls: type,
    *,
    skip: tuple[str, ...] = (),
    helps: dict | None = None,
    defaults: dict | None = None,
    group: str | None = None,
) -> Any:
    """A field holding a settings dataclass: its fields' flags appear in the verb, flat, without the
    `skip`ped ones; `helps` and `defaults` change a flag's help or default for this verb only;
    `group`: the title they are listed under in `--help`."""
    meta = {"skip": skip, "helps": helps or {}, "defaults": defaults or {}, "group": group}
    return dataclasses.field(default_factory=cls, metadata={"nested": meta})


def _argument_type(field: dataclasses.Field, hint: Any):
    """An argparse type for one value of the field: parsed, then checked against its declaration."""
    base, _, _ = kind(hint)
    prefix = info(field).get("prefix", "")

    def parse(text: str):
        if choices(base) is not None:
            value = prefix + text
        elif base is int:
            try:
                value = int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        elif base is float:
            try:
                value = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        else:
            value = text
        why = problem(field, base, value)
        if why:
            raise argparse.ArgumentTypeError(why)
        return value

    return parse


def _fields(cls: type, skip=(), helps=None, defaults=None, group=None):
    """(field, hint, help, default, group) of every flag-bearing field of `cls`, nested ones flattened."""
    hints = resolved(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        if "nested" in field.metadata:
            meta = field.metadata["nested"]
            yield from _fields(hints[field.name], meta["skip"], meta["helps"], meta["defaults"], meta["group"])
        elif "setting" in field.metadata:
            text = (helps or {}).get(field.name, info(field)["help"])
            default = (defaults or {}).get(field.name, field.default)
            yield field, hints[field.name], text, default, group


def add(parser: argparse.ArgumentParser, cls: type) -> None:
    """One argument per field of `cls` (its nested settings' too)."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for field, hint, text, default, group in _fields(cls):
        into = parser if group is None else groups.setdefault(group, parser.add_argument_group(group))
        base, optional, many = kind(hint)
        meta = info(field)
        name = flag_name(field)
        text = text.replace("%", "%%")
        if base is bool and not many:
            into.add_argument(name, dest=field.name, action="store_false" if default else "store_true", help=text)
            continue
        options: dict[str, Any] = {"dest": field.name, "help": text, "default": default}
        if meta.get("repeat"):  # argparse appends to its default: None, and the field's own when left out
            options["action"] = "append"
            options["default"] = None
        elif many:
            options["nargs"] = "+"
        allowed = choices(base)
        if allowed is not None:
            options["choices"] = [a.removeprefix(meta.get("prefix", "")) for a in allowed]
            options["metavar"] = meta.get("metavar")
            options["type"] = str
            if default is not None and not many:
                options["default"] = default.removeprefix(meta.get("prefix", ""))
        else:
            options["type"] = _argument_type(field, hint)
            if meta.get("metavar"):
                options["metavar"] = meta["metavar"]
        if not name.startswith("-"):  # a positional argument: RUN ...
            options.pop("dest")
            options.pop("default")
            if not optional and many:
                options["nargs"] = "*" if meta.get("empty") else "+"
            into.add_argument(field.name, **options)
            continue
        into.add_argument(*(name, meta["alias"]) if meta.get("alias") else (name,), **options)


def build(cls: type, args: argparse.Namespace):
    """`cls` from parsed arguments (nested settings built from theirs): checked as it is made."""
    return cls(**_given(cls, args))


def _given(cls: type, args: argparse.Namespace, skip=()) -> dict:
    """The fields of `cls` the arguments hold (a nested one built from its own); a repeatable flag not
    given is left to the field's default."""
    hints = resolved(cls)
    values = {}
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        if "nested" in field.metadata:
            values[field.name] = hints[field.name](**_given(hints[field.name], args, field.metadata["nested"]["skip"]))
        elif field.name in vars(args):
            value = _value(field, hints[field.name], args)
            if value is not None or kind(hints[field.name])[1]:
                values[field.name] = value
    return values


def _value(field: dataclasses.Field, hint: Any, args: argparse.Namespace):
    value = getattr(args, field.name)
    base, _, many = kind(hint)
    prefix = info(field).get("prefix", "")
    if value is None:
        return None
    if many:
        return tuple((prefix + v) if prefix and not v.startswith(prefix) else v for v in value)
    if prefix and isinstance(value, str) and not value.startswith(prefix):
        return prefix + value
    if base is Path:
        return Path(value)
    return value


def names(cls: type) -> list[str]:
    """Every flag a settings class makes (for tests and the docs)."""
    return [flag_name(f) for f, *_ in _fields(cls)]
