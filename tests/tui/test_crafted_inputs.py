"""A hostile collaborator's handed-over files, opened in the app: one output sanitizer for the
terminal, nothing from a file parsed as markup, every file read through jobs.run.files' readers.

The workspace holds, each where the app shows it:
- terminal escapes (OSC 0 window title, OSC 52 clipboard, CSI 2J clear screen) in a run's recorded
  error, in its spec's preset and model path (the Jobs detail and table, the Compare view), in a
  store's label_text and answer strings and attributes (the Store preview), in a study's report and
  claims (the Report tab);
- text that Rich/Textual markup would choke on (`[/]`, a pydantic `[type=..., input_value=...]`);
- a spec.json whose values are of the wrong types;
- a study's report.json of every wrong shape, a report.md that is not UTF-8;
- folders whose names factrecall could not have written (skipped);
- FIFOs where the app's settings file and a study's report.md belong (the app must not hang).

Each test is guarded so that, on code without the fix, it fails rather than hangs."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
from rich.text import Text
from textual.app import App
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Header, Input, Log, Static

from factrecall_tui.app import FactrecallApp
from factrecall_tui.compare_view import CompareScreen
from factrecall_tui.jobs_pane import JobsPane
from factrecall_tui.log_view import LogScreen
from factrecall_tui.remembered import FILE_NAME, Remembered
from factrecall_tui.report_view import ReportPane, find_studies
from factrecall_tui.store_view import StorePane
from jobs.run.files import atomic_write_json
from jobs.run.spec import build_spec
from jobs.words import ATTRIBUTES, FORMATS
from tests.helpers import PATIENCE_S
from tests.tui.helpers import settle
from tests.tui.workspace import T0, _done, _events, _metrics

# What the collaborator's files hold.
EVIL = "\x1b]0;PWNED\x07\x1b]52;c;cHduZWQ=\x07\x1b[2JPWNED"
EVIL_SHOWN = "\\x1b]0;PWNED\\x07\\x1b]52;c;cHduZWQ=\\x07\\x1b[2JPWNED"  # as the app must show it
MARKUP_ERROR = "RuntimeError: index [/] out of range"
PYDANTIC_ERROR = "1 validation error for Spec\n  Input should be a valid integer [type=int_parsing, input_value='x']"
INJECTED = (b"\x1b]0;PWNED", b"\x1b]52;", b"\x1b[2JPWNED")  # never in the bytes sent to a terminal
LIMIT_S = min(300.0, PATIENCE_S)  # a session that takes longer is stuck (a FIFO read blocking the UI thread)


def _spec(preset: str = "tiny", strategies: tuple[str, ...] = ("stage", "mix"), seed: int = 0) -> dict:
    return build_spec(preset, strategies=strategies, seed=seed).model_dump(mode="json")


def _write_run(ws: Path, name: str, spec: dict, age: float) -> Path:
    run = ws / "runs" / name
    run.mkdir(parents=True)
    (run / "spec.json").write_text(json.dumps(spec))
    os.utime(run / "spec.json", (T0 - age, T0 - age))
    return run


def _failed(ws: Path, name: str, error: object, age: float) -> Path:
    run = _write_run(ws, name, _spec(strategies=("mix",)), age)
    _events(
        run,
        {"kind": "run", "status": "running", "phases": ["mix"]},
        {"kind": "run", "status": "failed", "error": error},
    )
    _done(run, "data")
    return run


def _crafted_store(run: Path) -> None:
    """A small activation store whose label texts and answers are the collaborator's strings."""
    from store.layout import Layout
    from store.writer import Writer

    people, layers, hidden = 6, 2, 8
    split = np.array(["qa_in"] * 4 + ["qa_out"] * 2)
    label = np.stack([(np.arange(people) + a) % 3 for a in range(len(ATTRIBUTES))])
    texts = [EVIL[:14], "[/]", MARKUP_ERROR[-14:], "ok"]
    label_text = np.vectorize(lambda i: texts[i % len(texts)])(label)
    answer = np.vectorize(lambda i: f"{EVIL} [/] {i}")(label)
    models = ("untrained", "stage", "mix")
    layout = Layout(
        models=models,
        formats=FORMATS,
        attributes=ATTRIBUTES,
        layers=layers,
        hidden=hidden,
        people=np.arange(people),
        split=split,
        label=label + 10,
        label_text=label_text,
        answer=answer,
        dtype="float32",
        source={"fixture": "tests/tui/test_crafted_inputs.py", "note": EVIL + "\x9b2J"},
    )
    meta = {"run": run.name, "created": "2026-11-25T00:00:00+0000", "model_type": "llama", "vocab_size": 64}
    writer = Writer.open_or_create(run / "activations.zarr", layout, meta)
    rng = np.random.default_rng(0)
    for model in models:
        for fmt in FORMATS:
            v = rng.normal(size=(layers, len(ATTRIBUTES), people, hidden)).astype(np.float32)
            for block in range(layout.blocks):
                writer.write(model, fmt, block, v[:, :, writer.people(block)])


def _study(
    ws: Path,
    name: str,
    report_json: object | bytes | None = None,
    report_md: str | bytes | None = None,
    plan: object | None = None,
) -> Path:
    folder = ws / "reproduce" / name
    folder.mkdir(parents=True)
    (folder / "plan.json").write_text(
        json.dumps(plan if plan is not None else {"name": name, "runs": ["runs/plain-s0"], "seeds": [0]})
    )
    for file, value in (("report.json", report_json), ("report.md", report_md)):
        if isinstance(value, bytes):
            (folder / file).write_bytes(value)
        elif isinstance(value, str):
            (folder / file).write_text(value)
        elif value is not None:
            (folder / file).write_text(json.dumps(value))
    return folder


def crafted_workspace(ws: Path) -> Path:
    """The collaborator's workspace (no FIFOs: those are the tests' own)."""
    _failed(ws, "markup-error", MARKUP_ERROR, age=90)
    _failed(ws, "pydantic-error", PYDANTIC_ERROR, age=80)
    _failed(ws, "escape-error", f"RuntimeError: {EVIL}", age=70)
    _failed(ws, "error-not-text", {"[/]": [EVIL]}, age=65)
    spec = _spec()
    spec["preset"] = EVIL  # spec.json's preset: the Jobs detail, and the Compare view
    evil_preset = _write_run(ws, "evil-preset", spec, age=60)
    atomic_write_json(evil_preset / "metrics.json", _metrics(0))
    spec = _spec(seed=1)
    spec["model"]["path"] = f"/models/{EVIL}[/]"  # a setting that differs: a Compare column
    evil_model = _write_run(ws, "evil-model", spec, age=55)
    atomic_write_json(evil_model / "metrics.json", _metrics(1))
    _events(evil_model, {"kind": "run", "status": "done"})
    plain = _write_run(ws, "plain-s0", _spec(), age=50)
    atomic_write_json(plain / "metrics.json", _metrics(0))
    _events(plain, {"kind": "run", "status": "done"})
    _crafted_store(plain)
    _write_run(
        ws,
        "wrong-types",
        {
            "preset": 3,
            "strategies": "mix[/]",
            "seed": [EVIL],
            "model": "x",
            "data": {"people": EVIL, "qa_in_fraction": "half"},
            "train": [],
        },
        age=40,
    )
    _write_run(ws, "unknown-strategy", {**_spec(), "strategies": ["nope", 7]}, age=35)
    # A folder whose name factrecall could not have written: not listed at all.
    _write_run(ws, f"bad{EVIL}", _spec(), age=30)
    # Studies.
    _study(ws, "study-list", report_json=[], report_md="# a report\n")
    _study(
        ws,
        "study-no-verdict",
        report_json={"claims": [{"id": 1}, "not a claim", {"id": [EVIL], "verdict": 3}]},
        report_md="# claims without verdicts\n",
    )
    _study(ws, "study-claims-not-list", report_json={"claims": {"id": 1}}, report_md="# claims not a list\n")
    _study(ws, "study-bad-json", report_json=b"{not json", report_md="# report.json not JSON\n")
    _study(ws, "study-not-utf8", report_json={"claims": []}, report_md=b"# \xff\xfe not UTF-8\n")
    _study(
        ws,
        "study-evil",
        report_json={"claims": [{"id": EVIL, "verdict": "reproduces"}]},
        report_md=f"# {EVIL}\n\nindex [/] out of range, [type=int_parsing, input_value='x'] ![{EVIL}](fig.png)\n",
    )
    _study(ws, "study-plan-damaged", plan={"runs": "not a list"})
    _study(ws, f"bad{EVIL}", report_json={"claims": []}, report_md="# not listed\n")
    return ws


def plain_workspace(ws: Path) -> Path:
    """One finished run and nothing crafted: for the tests of one crafted file each."""
    run = _write_run(ws, "plain-s0", _spec(), age=50)
    atomic_write_json(run / "metrics.json", _metrics(0))
    _events(run, {"kind": "run", "status": "done"})
    return ws


# -- reading what the app shows -----------------------------------------------------------------------
def screen_text(app: App) -> str:
    """The whole screen as the app would draw it: every widget's lines, line filters applied."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(seg.text for seg in strip if not seg.control) for strip in strips)


def plain(widget) -> str:
    """What a widget shows, before the line filter: its visual, as text."""
    visual = widget.render()
    if isinstance(visual, (Content, Text)):
        return visual.plain
    return str(visual)


def check_screen(app: App, where: str) -> str:
    text = screen_text(app)
    assert "\x1b" not in text and "\x9b" not in text, f"{where}: a raw control character on screen"
    return text


async def visit_everything(app: FactrecallApp, pilot, ws: Path) -> dict[str, str]:
    """Every tab, each crafted run and study highlighted in turn, Compare and Log opened: what the screen
    showed at each stop (asserted free of raw escapes at each)."""
    seen: dict[str, str] = {}
    jobs = app.query_one(JobsPane)
    await settle(pilot, until=lambda: "markup-error" in jobs.runs, what="the scan")
    await settle(pilot)
    for name in list(jobs.runs):
        jobs.focus_run(name)
        await pilot.pause()
        assert app.is_running
        seen[f"jobs {name}"] = check_screen(app, f"jobs {name}") + "\n" + plain(app.query_one("#job-detail", Static))
    for key in "234":
        await pilot.press(key)
        await settle(pilot)
        assert app.is_running
        seen[key] = check_screen(app, f"tab {key}")
    store = app.query_one(StorePane)
    await settle(pilot, until=lambda: store.nodes, what="the crafted store")
    for path in ("", "answer", "label_text", "resid_mid"):  # the root's attributes; strings; labelled rows
        if path in store.nodes:
            store._select(path)
            await settle(pilot)
            seen[f"store {path}"] = check_screen(app, f"store {path}") + "\n" + store.info_text
    await pilot.press("5")
    await settle(pilot)
    report = app.query_one(ReportPane)
    for name in list(report.studies):
        report.open(name)
        await settle(pilot)
        assert app.is_running
        seen[f"report {name}"] = check_screen(app, f"report {name}") + "\n" + plain(app.query_one("#report-status"))
    await pilot.press("1")
    await settle(pilot)
    for what, query in (("compare error", ""), ("compare", "-name:evil-preset")):
        app.query_one("#jobs-filter", Input).value = query  # the runs shown are the runs compared
        await settle(pilot)
        jobs.focus_run("evil-model")
        app.query_one("#jobs-table").focus()
        await pilot.press("m")  # Compare: the runs shown
        await settle(
            pilot,
            until=lambda: (
                isinstance(app.screen, CompareScreen) and "reading" not in plain(app.screen.query_one("#compare-title"))
            ),
            what="Compare",
        )
        await settle(pilot)
        seen[what] = check_screen(app, what) + "\n" + plain(app.screen.query_one("#compare-title"))
        await pilot.press("escape")
        await settle(pilot)
    app.query_one("#jobs-filter", Input).value = ""
    jobs.focus_run("escape-error")
    await pilot.press("l")  # the Log view of a run whose events hold the escapes
    await settle(pilot, until=lambda: isinstance(app.screen, LogScreen), what="the log")
    await pilot.pause(0.5)
    seen["log"] = check_screen(app, "log")
    await pilot.press("escape")
    await pilot.pause()
    assert app.is_running and app.return_code is None
    return seen


def test_crafted_files_are_shown_with_their_escapes_visible_and_never_crash_the_app(tmp_path):
    ws = crafted_workspace(tmp_path / "ws")

    async def session():
        app = FactrecallApp(ws, scan_every=0)
        async with app.run_test(size=(160, 50), notifications=True) as pilot:
            seen = await visit_everything(app, pilot, ws)
            notes = [n.message for n in app._notifications]
            return app, seen, notes

    app, seen, notes = asyncio.run(asyncio.wait_for(session(), LIMIT_S))
    everything = "\n".join(seen.values())
    # The runs factrecall could have written are listed, the others not; each crafted one was shown.
    jobs_names = {k.split(" ", 1)[1] for k in seen if k.startswith("jobs ")}
    assert {
        "markup-error",
        "pydantic-error",
        "escape-error",
        "error-not-text",
        "evil-preset",
        "evil-model",
        "plain-s0",
        "wrong-types",
        "unknown-strategy",
    } == jobs_names
    # [/] and pydantic's brackets are text, not markup.
    assert "index [/] out of range" in seen["jobs markup-error"]
    assert "[type=int_parsing, input_value='x']" in seen["jobs pydantic-error"]
    # Escapes written out, in the detail itself (not only by the net) and on the screen.
    assert "\\x1b]0;PWNED" in seen["jobs escape-error"]
    assert "\\x1b]0;PWNED" in seen["jobs evil-preset"]
    assert "\\x1b]0;PWNED" in seen["jobs evil-model"]  # its model path's name, in the table and the detail
    # The store's labels and answers, its attributes.
    assert "\\x1b]0;PWNED" in seen["store answer"]  # the strings of an array
    assert "\\x1b]0;PWNED" in seen["store resid_mid"] and "[/]" in seen["store resid_mid"]  # its rows' label_text
    assert "\\x9b2J" in seen["store "]  # the root's attributes: a C1 control (JSON keeps it raw)
    # Compare: a preset factrecall could not have written is refused in one line (quoting it, escaped);
    # a model path of the collaborator's is a setting column, its escapes written out.
    assert "invalid setting preset=" in seen["compare error"] and "\\x1b]0;PWNED" in seen["compare error"]
    assert "model.path" in seen["compare"] and "\\x1b]0;PWNED" in seen["compare"] and "[/]" in seen["compare"]
    # Report: every damaged study is listed and says what is wrong; the good parts are shown.
    studies = {k.split(" ", 1)[1] for k in seen if k.startswith("report ")}
    assert studies == {
        "study-list",
        "study-no-verdict",
        "study-claims-not-list",
        "study-bad-json",
        "study-not-utf8",
        "study-evil",
        "study-plan-damaged",
    }, studies  # the folders with another name: skipped
    assert "plan.json is damaged" in seen["report study-plan-damaged"]
    assert "report.json is damaged" in seen["report study-list"]
    assert "report.json is damaged" in seen["report study-no-verdict"]
    assert "report · 1? 2? 3?" in seen["report study-no-verdict"]  # its claims, as far as they can be read
    assert "report.json is damaged" in seen["report study-claims-not-list"]
    assert "report.json is damaged" in seen["report study-bad-json"]
    assert "not UTF-8" in seen["report study-not-utf8"]
    assert "\\x1b]0;PWNED" in seen["report study-evil"] and "index [/] out of range" in seen["report study-evil"]
    assert "\x1b" not in everything and "\x9b" not in everything
    assert not [n for n in notes if "\x1b" in n], notes


class RawScreen(Screen):
    """Widgets handed raw text straight, as no entry point of the app does."""

    def compose(self):
        yield Header()
        yield Static(Content("static " + EVIL), id="raw-static")
        yield DataTable(id="raw-table")
        yield Log(id="raw-log")

    def on_mount(self) -> None:
        table = self.query_one("#raw-table", DataTable)
        table.add_column(Text("col " + EVIL))
        table.add_row(Text("cell " + EVIL))
        self.query_one("#raw-log", Log).write_line("log " + EVIL)


def test_the_line_filter_escapes_whatever_a_widget_draws_raw(tmp_path):
    """The net under every entry point: raw text put straight into a toast (Textual's own notify,
    bypassing the app's), a DataTable's header and cell, a Static, the header's title and a Log reaches
    the screen escaped."""
    ws = tmp_path / "ws"
    ws.mkdir()

    async def session():
        app = FactrecallApp(ws, scan_every=0)
        async with app.run_test(size=(160, 40), notifications=True) as pilot:
            await settle(pilot)
            app.title = "title " + EVIL
            App.notify(app, "toast " + EVIL, title="heading " + EVIL, markup=False, timeout=60)  # unsanitised
            await settle(pilot)
            await pilot.pause(0.2)
            tabs = screen_text(app)
            await app.push_screen(RawScreen())
            await settle(pilot)
            await pilot.pause(0.2)
            return tabs + "\n" + screen_text(app), app.get_line_filters()

    text, filters = asyncio.run(asyncio.wait_for(session(), LIMIT_S))
    assert "\x1b" not in text, [line for line in text.splitlines() if "\x1b" in line][:3]
    for where in ("title ", "static ", "col ", "cell ", "log ", "toast ", "heading "):
        assert f"{where}\\x1b]0;PWNED" in text, (where, [line for line in text.splitlines() if where in line])
    assert any(type(f).__module__ == "factrecall_tui.app" for f in filters)


class Unblocker:
    """Guards a test against a FIFO read that blocks: after `after` seconds it opens the FIFO for writing
    and closes it (a blocked reader then sees an empty file and goes on), and says it had to."""

    def __init__(self, fifo: Path, after: float = 20.0):
        self.fifo, self.after, self.fired = fifo, after, False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        if self._done.wait(self.after):
            return
        while not self._done.is_set():
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no reader (yet): nothing is blocked on it
                time.sleep(0.05)
                continue
            self.fired = True
            os.close(fd)
            time.sleep(0.05)

    def __enter__(self) -> Unblocker:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


def test_a_fifo_for_the_settings_file_neither_hangs_the_app_nor_is_moved_or_written(tmp_path):
    ws = plain_workspace(tmp_path / "ws")
    folder = Path(os.environ["XDG_CONFIG_HOME"]) / "factrecall"
    folder.mkdir(parents=True, exist_ok=True)
    fifo = folder / FILE_NAME
    os.mkfifo(fifo)

    async def session():
        app = FactrecallApp(ws, scan_every=0)
        async with app.run_test(size=(120, 36)) as pilot:
            await settle(pilot)
            app.theme = "nord"  # a setting changed: nothing written over the FIFO
            await settle(pilot)
            return [n.message for n in app._notifications], app.is_running

    with Unblocker(fifo) as guard:
        notes, running = asyncio.run(asyncio.wait_for(session(), LIMIT_S))
    assert not guard.fired, "the app blocked reading the FIFO at tui.json"
    assert running
    assert fifo.is_fifo() and not fifo.with_name(FILE_NAME + ".bad").exists()
    said = [n for n in notes if FILE_NAME in n]
    assert len(said) == 1 and "cannot read" in said[0] and "starting from defaults" in said[0], notes


def test_without_a_home_nothing_is_remembered_and_that_is_said_once(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", "")
    told: list[str] = []
    remembered = Remembered()
    remembered.tell(told.append)
    remembered.set_theme("nord")
    remembered.set_theme("gruvbox")
    assert remembered.text("theme") == "gruvbox"  # kept for the session
    assert len(told) == 1 and "nothing is remembered" in told[0], told
    assert not Path("/.config/factrecall").exists()


def test_a_fifo_for_a_report_is_one_line_in_the_pane(tmp_path):
    ws = plain_workspace(tmp_path / "ws")
    fifo = ws / "reproduce" / "study-fifo" / "report.md"
    _study(ws, "study-fifo", report_json={"claims": []})
    os.mkfifo(fifo)
    fifo_json = ws / "reproduce" / "study-fifo-json"
    _study(ws, "study-fifo-json", report_md="# its report.json is a FIFO\n")
    os.mkfifo(fifo_json / "report.json")

    async def session():
        app = FactrecallApp(ws, scan_every=0)
        async with app.run_test(size=(120, 36)) as pilot:
            await settle(pilot)
            await pilot.press("5")
            await settle(pilot)
            report = app.query_one(ReportPane)
            shown = {}
            for name in ("study-fifo", "study-fifo-json"):
                report.open(name)
                await settle(pilot)
                shown[name] = plain(app.query_one("#report-status"))
            await pilot.press("g")  # the figures of a report that is a FIFO: one notification
            await settle(pilot)
            return shown, [n.message for n in app._notifications], app.is_running

    with Unblocker(fifo) as guard, Unblocker(fifo_json / "report.json") as guard_json:
        shown, notes, running = asyncio.run(asyncio.wait_for(session(), LIMIT_S))
    assert not guard.fired and not guard_json.fired, "the app blocked reading a FIFO"
    assert running
    assert "FIFO" in shown["study-fifo"], shown
    assert "FIFO" in shown["study-fifo-json"], shown
    assert fifo.is_fifo()
    assert {s.name for s in find_studies(ws)} >= {"study-fifo", "study-fifo-json"}


def test_a_link_where_the_workspace_keeps_exports_or_screenshots_is_refused_in_one_notification(tmp_path):
    ws = plain_workspace(tmp_path / "ws")
    outside = tmp_path / "outside"
    for name in ("exports", "screenshots"):
        (outside / name).mkdir(parents=True)
        (ws / name).symlink_to(outside / name)

    async def session():
        app = FactrecallApp(ws, scan_every=0)
        async with app.run_test(size=(120, 36)) as pilot:
            await settle(pilot, until=lambda: app.query_one(JobsPane).runs, what="the scan")
            await pilot.press("e")  # the Jobs table as CSV, into WORKSPACE/exports
            await settle(pilot)
            app.deliver_screenshot()  # into WORKSPACE/screenshots
            await settle(pilot)
            return [n.message for n in app._notifications]

    notes = asyncio.run(asyncio.wait_for(session(), LIMIT_S))
    assert [list((outside / name).iterdir()) for name in ("exports", "screenshots")] == [[], []]
    refused = [n for n in notes if "symbolic link" in n]
    assert len(refused) == 2 and "exports" in refused[0] and "screenshots" in refused[1], notes


def test_runs_and_studies_reached_through_a_link_are_not_read_and_that_is_said_once(tmp_path):
    outside = plain_workspace(tmp_path / "outside")
    _study(outside, "study-outside", report_json={"claims": []}, report_md="# elsewhere\n")
    runs_linked, studies_linked = tmp_path / "ws1", plain_workspace(tmp_path / "ws2")
    runs_linked.mkdir()
    (runs_linked / "runs").symlink_to(outside / "runs")
    (studies_linked / "reproduce").symlink_to(outside / "reproduce")

    async def session(ws: Path):
        app = FactrecallApp(ws, scan_every=0)
        async with app.run_test(size=(120, 36)) as pilot:
            await settle(pilot)
            for _ in range(3):  # scans again and again: said once
                app.rescan()
                await settle(pilot)
            await pilot.press("5")
            await settle(pilot)
            return (
                list(app.query_one(JobsPane).runs),
                list(app.query_one(ReportPane).studies),
                plain(app.query_one("#report-status")),
                [n.message for n in app._notifications],
                app.is_running,
            )

    runs, studies, _, notes, running = asyncio.run(asyncio.wait_for(session(runs_linked), LIMIT_S))
    assert running and runs == [] and studies == []
    said = [n for n in notes if "symbolic link" in n]
    assert len(said) == 1 and str(runs_linked / "runs") in said[0], notes
    runs, studies, report_status, notes, running = asyncio.run(asyncio.wait_for(session(studies_linked), LIMIT_S))
    assert running and runs == ["plain-s0"] and studies == []
    assert "symbolic link" in report_status and str(studies_linked / "reproduce") in report_status, report_status
