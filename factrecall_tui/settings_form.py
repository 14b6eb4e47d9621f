"""A form for a settings dataclass (store/settings.py), built from its fields: a field declared there is
a row here with no other edit.

Each field that `setting(..., form=True)` declares is a row: its name (or a label the screen gives)
and a widget chosen by its type (store.settings.kind): a `Literal` is a Select of its values (shown
without the field's `prefix`), a `bool` a check box, anything else (numbers, text, several layers) an
Input whose text is parsed to the field's type and checked by `store.settings.problem`. A screen may
give a field its own choices, which make it a Select too, and change them at run time (`set_choices`):
the Probes pane's attribute and site, plain `str` fields, are chosen from what the chosen stores hold,
never typed. The help text is each row's tooltip. `value` is the settings instance the widgets say
(fields not shown keep the value the form was made with); while a field is invalid it is None and the
form's last line says why, in one line.

Textual-free parsing (`parse`, `shown`) is here too: what a field's text means, and a value as text.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.validation import ValidationResult, Validator
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Label, Select

from factrecall_tui.quiet import Line
from jobs.errors import USER_ERRORS, first_line
from store.settings import choices, info, kind, problem, resolved

S = TypeVar("S")
Option = Any  # a value, or a (label, value) pair
CHECKED, UNCHECKED = "✓", " "  # as factrecall_tui/checklist.py: told apart without colour


def shown_fields(settings_type: type) -> list[dataclasses.Field]:
    """The fields a form shows: those `setting` declared, less `form=False`, in declaration order."""
    return [f for f in dataclasses.fields(settings_type) if info(f) and info(f).get("form", True)]


def shown(value: Any) -> str:
    """A value as an Input shows it: nothing for None, several separated by spaces."""
    if value is None:
        return ""
    if isinstance(value, (tuple, list)):
        return " ".join(map(str, value))
    return str(value)


def parse(field: dataclasses.Field, hint: Any, text: str) -> Any:
    """What `text` means for `field`: None when empty, a tuple for several (commas or spaces between
    them). A word that is not of the field's type stays text, for `problem` to say why."""
    base, _, many = kind(hint)
    allowed, prefix = choices(base), info(field).get("prefix", "")

    def one(word: str) -> Any:
        if allowed is not None:
            return prefix + word if prefix and prefix + word in allowed else word
        for make in {int: (int,), float: (int, float)}.get(base, ()):
            try:
                return float(make(word)) if base is float else make(word)
            except ValueError:
                continue
        return word

    text = text.strip()
    if not text:
        return None
    if many:
        return tuple(one(w) for w in re.split(r"[,\s]+", text) if w)
    return one(text)


def _default_said(field: dataclasses.Field) -> str:
    """What an empty Input means, as the help says it: `(default: all; ...)` -> "all"."""
    found = re.search(r"default: ([^;)]+)", info(field).get("help", ""))
    return found.group(1).strip() if found and field.default is None else ""


class Tick(Checkbox):
    """A check box that holds a ✓ when checked and is empty when not (Textual's draws an X in both)."""

    @property
    def _button(self):  # Textual's ToggleButton draws BUTTON_INNER; this one's follows the value
        self.BUTTON_INNER = CHECKED if self.value else UNCHECKED
        return super()._button


class SettingsForm(Vertical, Generic[S]):
    """The rows of a settings dataclass's form (see the module docstring).

    - `SettingsForm(ProbeSettings(), choices={"attribute": [...]}, labels={"bio": "BIO"}, prefix="probe-")`:
      the widgets' ids are `prefix` + the field's name with dashes (`probe-train-split`);
    - `value`: the settings the widgets say, or None while `problem` (one line) says why not;
    - `get(name)`, `set(name, value)`, `cycle(name)` (a Select's next option), `options(name)`, `values(name)`,
      `set_choices(name, options)`;
    - posts `SettingsForm.Changed` when a field changes (its widgets' own events stop here).
    """

    DEFAULT_CSS = """
    SettingsForm { height: auto; }
    SettingsForm .settings-row { height: 1; }
    SettingsForm .settings-label { width: 10; color: $text-muted; }
    SettingsForm .settings-row > Select, SettingsForm .settings-row > Input { width: 1fr; }
    SettingsForm .settings-row > Checkbox { width: 1fr; }
    SettingsForm .settings-problem { height: auto; color: $error; display: none; }
    SettingsForm .settings-problem.-shown { display: block; }
    """

    @dataclass
    class Changed(Message):
        form: SettingsForm
        name: str  # the field that changed

        @property
        def control(self) -> SettingsForm:
            return self.form

    def __init__(
        self,
        value: S,
        *,
        choices: Mapping[str, Iterable[Option]] | None = None,
        labels: Mapping[str, str] | None = None,
        option_labels: Mapping[Any, str] | None = None,
        prefix: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._initial = value
        self.settings_type: type = type(value)
        self.hints = resolved(self.settings_type)
        self.fields = {f.name: f for f in shown_fields(self.settings_type)}
        self._choices = {name: tuple(options) for name, options in (choices or {}).items()}
        self._labels = dict(labels or {})
        self._option_labels = dict(option_labels or {})
        self._prefix = prefix
        self.problem: str | None = None  # why `value` is None, in one line

    # -- building -------------------------------------------------------------------------------
    def widget_id(self, name: str) -> str:
        return self._prefix + name.replace("_", "-")

    def label(self, name: str) -> str:
        return self._labels.get(name, name.replace("_", " "))

    def options(self, name: str) -> list[tuple[str, Any]] | None:
        """A Select field's (label, value) options: the screen's choices for it, else its Literal's;
        None for a field that is not a Select."""
        given = self._choices.get(name)
        if given is None:
            base, _, many = kind(self.hints[name])
            given = None if many else choices(base)
        if given is None:
            return None
        prefix = info(self.fields[name]).get("prefix", "")
        return [
            o if isinstance(o, tuple) else (self._option_labels.get(o, str(o).removeprefix(prefix)), o) for o in given
        ]

    def _tip(self, field: dataclasses.Field) -> str:
        why = info(field).get("help", "")
        if self._kind(field.name) == "bool" and field.default is True:  # the help is the CLI's --no-flag's
            return f"unticked: {why}"
        return why

    def _kind(self, name: str) -> str:
        if self.options(name) is not None:
            return "select"
        return "bool" if kind(self.hints[name])[0] is bool else "input"

    def compose(self) -> ComposeResult:
        for name, field in self.fields.items():
            current = getattr(self._initial, name)
            tooltip = self._tip(field)
            with Horizontal(classes="settings-row"):
                yield Label(self.label(name), markup=False, classes="settings-label").with_tooltip(tooltip)
                wid = self.widget_id(name)
                what = self._kind(name)
                if what == "select":
                    options = self.options(name) or []
                    optional = kind(self.hints[name])[1]
                    if not optional and current not in [v for _, v in options] and options:
                        current = options[0][1]
                    yield Select(
                        options,
                        value=Select.NULL if current is None else current,
                        allow_blank=optional,
                        compact=True,
                        id=wid,
                        tooltip=tooltip,
                    )
                elif what == "bool":
                    yield Tick("", value=bool(current), compact=True, id=wid, tooltip=tooltip)
                else:
                    yield Input(
                        shown(current),
                        placeholder=_default_said(field),
                        validators=[_Valid(self, name)],
                        valid_empty=kind(self.hints[name])[1],
                        compact=True,
                        id=wid,
                        tooltip=tooltip,
                    )
        yield Line("", classes="settings-problem")

    # -- reading and writing --------------------------------------------------------------------
    def _widget(self, name: str) -> Widget:
        return self.query_one(f"#{self.widget_id(name)}")

    def get(self, name: str) -> Any:
        """A field's value as its widget says it (text the field cannot take stays text)."""
        widget = self._widget(name)
        if isinstance(widget, Select):
            return None if widget.value is Select.NULL else widget.value
        if isinstance(widget, Checkbox):
            return widget.value
        assert isinstance(widget, Input)
        return parse(self.fields[name], self.hints[name], widget.value)

    def set(self, name: str, value: Any) -> None:
        widget = self._widget(name)
        if isinstance(widget, Select):
            widget.value = Select.NULL if value is None else value
        elif isinstance(widget, Checkbox):
            widget.value = bool(value)
        else:
            assert isinstance(widget, Input)
            widget.value = shown(value)

    def values(self, name: str) -> tuple[Any, ...]:
        """A Select field's values, in order."""
        return tuple(v for _, v in self.options(name) or [])

    def cycle(self, name: str) -> None:
        """A Select field's next option (after the last, the first)."""
        values = self.values(name)
        if values:
            now = self.get(name)
            self.set(name, values[(values.index(now) + 1) % len(values) if now in values else 0])

    def set_choices(self, name: str, options: Iterable[Option]) -> None:
        """A Select field's options anew; its value kept where it is still one, else the value the form
        was made with (if it is one), else the first. Quiet: no Changed for it (the screen changed them,
        and knows)."""
        self._choices[name] = tuple(options)
        select = self._widget(name)
        assert isinstance(select, Select)
        old, first, values = self.get(name), getattr(self._initial, name), self.values(name)
        with self.prevent(Select.Changed):
            select.set_options(self.options(name) or [])
            if values:
                select.value = old if old in values else (first if first in values else values[0])

    @property
    def value(self) -> S | None:
        """The settings the widgets say; None (and `problem` says why) while one is invalid."""
        return self._read()[0]

    def _read(self) -> tuple[S | None, str | None]:
        values = {}
        for name, field in self.fields.items():
            value = self.get(name)
            why = problem(field, self.hints[name], value)
            if why:
                return None, f"{self.label(name)}: {why}"
            values[name] = value
        try:
            return dataclasses.replace(self._initial, **values), None
        except (*USER_ERRORS, ValueError, TypeError) as err:  # a rule across fields (__post_init__)
            return None, first_line(err)

    def _changed(self, name: str | None) -> None:
        _, self.problem = self._read()
        line = self.query_one(".settings-problem", Line)
        line.update(Text(self.problem or ""))
        line.set_class(self.problem is not None, "-shown")
        if name is not None:
            self.post_message(self.Changed(self, name))

    def _name_of(self, widget: Widget) -> str | None:
        return next((n for n in self.fields if widget.id == self.widget_id(n)), None)

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self._changed(self._name_of(event.select))

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        self._changed(self._name_of(event.checkbox))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._changed(self._name_of(event.input))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()


class _Valid(Validator):
    """An Input's check: its text parsed for the field, then `store.settings.problem`."""

    def __init__(self, form: SettingsForm, name: str) -> None:
        super().__init__()
        self.form, self.name = form, name

    def validate(self, value: str) -> ValidationResult:
        field, hint = self.form.fields[self.name], self.form.hints[self.name]
        why = problem(field, hint, parse(field, hint, value))
        return self.failure(why) if why else self.success()
