"""`factrecall-jobs reproduce` end to end on a miniature study (the tiny preset, two seeds, two
snapshots a phase): the runs, the probes, the report built from them, a second invocation that
recomputes nothing, the dry run's plan against what the study really trained, the paper preset's
dry run on a local checkpoint, and the report in the TUI."""

import asyncio
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs.launch.plan import RunRequest
from jobs.run.corpus import bio_entries, prompts
from jobs.run.people import generate_people
from jobs.study.dryrun import plan
from jobs.study.plan import plan_study
from jobs.study.report import judge
from jobs.words import steps_of
from tests.helpers import metrics, run_cli
from tests.jobs.test_hf_checkpoint import _save_checkpoint
from tests.jobs.test_pipeline import steps_taken

SEEDS = ("0", "1")
# No accuracy samples while training (train.eval_every=0): the report reads none of them, and they
# were a fifth of this study's time. Snapshots, which the report's trajectory reads, stay on.
STUDY = ("reproduce", "--preset", "tiny", "--seeds", *SEEDS, "--snapshots", "2", "--set", "train.eval_every=0")


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    workspace = tmp_path_factory.mktemp("study")
    assert run_cli("--workspace", workspace, *STUDY) == 0
    return workspace


def _runs(workspace: Path) -> list[Path]:
    return [workspace / "runs" / f"reproduce-tiny-s{seed}" for seed in SEEDS]


def test_the_report_is_built_from_the_runs(study):
    folder = study / "reproduce" / "tiny"
    data = json.loads((folder / "report.json").read_text())
    runs = _runs(study)
    assert [r["path"] for r in data["runs"]] == ["runs/reproduce-tiny-s0", "runs/reproduce-tiny-s1"]
    m = [metrics(r) for r in runs]
    # Exact match, per seed, straight from each run's metrics.json: Figures 1 and 5 for every model.
    for model in ("majority", "untrained", "bio", "stage", "mix"):
        for s in ("bio", "qa_in", "qa_out"):
            assert data["accuracy"][model][s]["avg"]["values"] == [x[model][s]["avg"] for x in m]
    assert data["accuracy"]["mix"]["qa_out"]["job"]["values"] == [x["mix"]["qa_out"]["job"] for x in m]
    # Each verdict is the rule applied to those numbers, computed again here.
    assert [c["verdict"] for c in data["claims"]] == [c.verdict for c in judge(data)]
    gap = sum(x["mix"]["qa_out"]["avg"] - x["stage"]["qa_out"]["avg"] for x in m) / 2
    assert data["claims"][0]["numbers"]["gap"] == pytest.approx(gap)
    # The probe numbers are the CLI's: `factrecall-jobs probe` on the same runs prints the same sweep.
    csv = study / "job.csv"
    assert (
        run_cli(
            "--workspace",
            study,
            "probe",
            *(r.name for r in runs),
            "--attribute",
            "job",
            "--bio",
            "long",
            "--csv",
            csv,
            "--out",
            study / "job.png",
        )
        == 0
    )
    df = pd.read_csv(csv)
    for model in ("stage", "mix"):
        for row in data["probes"]["bio_long"]["job"][model]:
            want = df[(df.model == model) & (df.layer == row["layer"])]["delta_rep"].tolist()
            assert row["delta_rep"]["values"] == pytest.approx(want)
    # Over training: Stage is untrained, 1 BIO snapshot, the BIO model, 1 QA snapshot, Stage; Mix is
    # untrained, 1 snapshot, Mix. Each point's accuracy is that checkpoint's own evaluation.
    traj = data["trajectory"]
    assert [p["phase"] for p in traj["stage"]] == ["bio", "bio", "bio", "stage", "stage"]
    assert [p["x"] for p in traj["stage"]][::2] == [-1.0, 0.0, 1.0]
    assert [len(p["models"]) for p in traj["mix"]] == [2, 2, 2]
    snap = traj["stage"][3]["models"]
    assert all("@" in name for name in snap)
    assert traj["stage"][3]["qa_out"]["values"] == [x["snapshots"][name]["qa_out"]["avg"] for x, name in zip(m, snap)]
    # The runs took the steps the vocabulary names, in its order (with snapshots: dump-trajectory last).
    for run in runs:
        started, done = steps_taken(run)
        assert done == started == steps_of(("bio", "stage", "mix"), snapshots=True)
    # The markdown says every verdict and points at every figure, all written.
    text = (folder / "report.md").read_text()
    for claim in data["claims"]:
        assert f"**{claim['verdict']}**" in text
    figures = [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert len(figures) == 7
    for name in figures + [f"probes/{a}-bio_short.png" for a in ("birth_date", "blood_type")]:
        assert (folder / name).read_bytes()[:4] == b"\x89PNG"
    # The interventions: the report's numbers are the runs' cached patching results, the identity control
    # changed nothing, and the causal twins of claims 4 and 5 have computed verdicts, written out.
    import store
    from store.interventions import results

    iv = data["interventions"]
    assert iv["attribute"] == "job" and iv["split"] == "qa_out"
    for model in ("stage", "mix"):
        held = [next(r for r in results(store.open(run), "job") if r["model"] == model) for run in runs]
        for i, row in enumerate(iv["layers"][model]):
            assert row["qa"]["values"] == [r["rows"][i]["qa"] for r in held]
            assert row["identity_qa"]["values"] == row["qa"]["values"]
        top = iv["top"][model]
        assert top["gain_bio_long_qa"]["mean"] == pytest.approx(top["bio_long_qa"]["mean"] - top["qa"]["mean"])
        lo, hi = top["gain_bio_long_qa"]["ci"]
        assert lo <= top["gain_bio_long_qa"]["mean"] <= hi
    assert [c["id"] for c in data["causal"]] == [4, 5]
    for claim in data["causal"]:
        assert claim["verdict"] in ("reproduces", "partly", "does not reproduce")
        assert f"**{claim['verdict']}**" in text and f"({claim['id']}′)" in text
    assert "## Beyond the paper: interventions" in text
    # Every probe table has the untrained baseline, and job's intervals are stated.
    assert "Untrained Acc(hQA·WQA)" in text and "95% bootstrap intervals for job" in text
    assert all("untrained" in data["probes"][fmt]["job"] for fmt in ("bio_long", "bio_short"))


def test_the_report_says_where_the_fact_is(study, tmp_path):
    """ "Where the fact is": each run's sites store holds Stage's and Mix's vectors at the report's sites
    (and the causal test's); every number of the section is that store's probe sweep at that site, as
    `factrecall-jobs probe RUN/sites.zarr --site ...` prints it, and the causal test's rows are the
    store's cached patching results at the subject position, whose identity control changes nothing."""
    import store
    from jobs.study.where import dumped_sites
    from store.interventions import results
    from store.names import REPORT_PATCH_SITE, REPORT_SITES, SITES_NAME

    data = json.loads((study / "reproduce" / "tiny" / "report.json").read_text())
    where = data["where"]
    assert where["sites"] == list(REPORT_SITES) and where["seeds"] == len(SEEDS)
    runs = _runs(study)
    for run in runs:
        s = store.open(run / SITES_NAME)
        assert s.sites == dumped_sites(REPORT_SITES) and REPORT_PATCH_SITE in s.sites
        assert s.dumped_models() == ["stage", "mix"]
    site = "mlp_out@subject_last"
    csv = tmp_path / "where.csv"
    argv = ["probe", *(str(r / SITES_NAME) for r in runs), "--attribute", "job", "--site", site, "--no-controls"]
    assert run_cli("--workspace", study, *argv, "--csv", csv, "--out", tmp_path / "where.png") == 0
    df = pd.read_csv(csv)
    for model in ("stage", "mix"):
        for row in where["probes"][model][site]:
            want = df[(df.model == model) & (df.layer == row["layer"])]["acc_qa_wqa"].tolist()
            assert row["acc_qa_wqa"]["values"] == pytest.approx(want)
    # the sites are different vectors: at least one layer's accuracy differs between two of them
    mix = where["probes"]["mix"]
    assert any(
        a["acc_bio_wbio"]["values"] != b["acc_bio_wbio"]["values"]
        for a, b in zip(mix["resid_mid@last"], mix["attn_out@subject_last"])
    )
    assert where["patch_site"] == REPORT_PATCH_SITE
    for model in ("stage", "mix"):
        held = [next(r for r in results(store.open(run / SITES_NAME), "job") if r["model"] == model) for run in runs]
        for i, row in enumerate(where["patch"][model]):
            assert row["bio_long_qa"]["values"] == [r["rows"][i]["bio_long_qa"] for r in held]
            assert row["identity_qa"]["values"] == row["qa"]["values"]
    text = (study / "reproduce" / "tiny" / "report.md").read_text()
    assert "## Beyond the paper: where the fact is" in text and f"`{site}`" in text


def test_claim5s_tables_read_the_studies_reports(study, tmp_path, capsys):
    """docs/claim5_tables.py, as docs/claim5.md runs it: the default study first, then an augmented one
    (here the same study's report with a full_name spec's data section), every table and the figure."""
    import importlib.util

    from jobs.run.spec import build_spec

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("claim5_tables", root / "docs" / "claim5_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    folder = study / "reproduce" / "tiny"
    data = json.loads((folder / "report.json").read_text())
    augmented = tmp_path / "tiny-fullname"
    augmented.mkdir()
    data["study"] = "tiny-fullname"
    data["setup"]["data"] = build_spec("tiny", overrides=["data.full_name=true"]).data.model_dump(mode="json")
    (augmented / "report.json").write_text(json.dumps(data))
    capsys.readouterr()
    assert tables.main([str(folder), str(augmented)], tmp_path / "claim5.png") == 0
    out = capsys.readouterr().out
    assert (tmp_path / "claim5.png").read_bytes()[:4] == b"\x89PNG"
    rows = [line for line in out.splitlines() if line.startswith("| `tiny")]
    assert rows[0].startswith("| `tiny` (default) | the paper's") and "the full name in every sentence" in rows[1]
    # The numbers are the report's: Stage's QA out and job's BIO_short Δrep with its interval.
    stage_out = data["accuracy"]["stage"]["qa_out"]["avg"]["mean"]
    assert any(r.startswith("| `tiny` (default) | ") and f"| {stage_out:.1f}" in r for r in rows)
    top = tables.top_mean(data, "bio_short", "job", "stage", "delta_rep")
    lo, hi = data["probe_intervals"]["bio_short"]["job"]["stage"]["delta_rep"]
    assert f"| {top:.1f} [{lo:.1f}, {hi:.1f}] |" in out
    sections = {part.split("\n", 1)[0]: part for part in out.split("### ")[1:]}
    verdicts = [line for line in sections["The verdicts"].splitlines() if line.startswith("| `tiny")]
    assert [line.split(" | ")[1:6] for line in verdicts] == [[c["verdict"] for c in data["claims"]]] * 2


def test_reproduce_again_recomputes_nothing(study, capsys):
    runs = _runs(study)
    before = {p: p.stat().st_mtime_ns for r in runs for p in (r / "done").iterdir()}
    timing = json.loads((study / "reproduce" / "tiny" / "timing.json").read_text())
    capsys.readouterr()
    assert run_cli("--workspace", study, *STUDY) == 0
    out = capsys.readouterr().out
    assert "probes: 0 sweeps fitted now" in out
    assert {p: p.stat().st_mtime_ns for r in runs for p in (r / "done").iterdir()} == before
    again = json.loads((study / "reproduce" / "tiny" / "timing.json").read_text())
    assert set(again) == set(timing) and all(again[k] >= timing[k] for k in timing)  # time adds up over invocations


def test_the_dry_run_plans_what_the_study_trained(study, capsys):
    made = sorted(p.name for p in study.rglob("*"))
    info = plan(
        plan_study(study, RunRequest(preset="tiny", seeds=(0, 1), overrides=("train.eval_every=0",)), snapshots=2)
    )
    trained = metrics(_runs(study)[0])["train"]
    assert {p["phase"]: p["steps"] for p in info["phases"]} == {
        ph: trained[ph]["steps"] for ph in ("bio", "stage", "mix")
    }
    assert {p["phase"]: p["tokens"] for p in info["phases"]} == {
        ph: trained[ph]["tokens"] for ph in ("bio", "stage", "mix")
    }
    resid = sum(
        f.stat().st_size for f in (_runs(study)[0] / "activations.zarr" / "resid_mid").rglob("*") if f.is_file()
    )
    assert info["disk"]["activations"] == pytest.approx(resid, rel=0.02)  # float16, uncompressed: the chunks' bytes
    assert info["rate"] > 0 and info["seconds"] > 0
    assert sorted(p.name for p in study.rglob("*")) == made  # nothing written


def test_the_paper_preset_dry_run_validates_a_local_checkpoint(tmp_path, capsys):
    from jobs.run.corpus import bio_entries, prompts
    from jobs.run.people import generate_people
    from jobs.run.spec import build_spec

    spec = build_spec("tiny")
    people = generate_people(spec.data, seed=0)
    entries = bio_entries(people, spec.data, seed=0)
    _save_checkpoint(
        tmp_path / "llama", ([e.text for e in entries] + [f"{p.qa} {p.answer}." for p in prompts(people, entries)]) * 3
    )
    workspace = tmp_path / "ws"
    assert (
        run_cli(
            "--workspace",
            workspace,
            "reproduce",
            "--preset",
            "paper",
            "--model",
            tmp_path / "llama",
            "--people",
            "200",
            "--dry-run",
            "--tflops",
            "100",
        )
        == 0
    )
    out = capsys.readouterr().out
    for text in ("6,820", "10,571", "10.37 h", "22.16 h", "memory while training", "disk per run", "100 TFLOP/s"):
        assert text in out
    assert not workspace.exists()
    assert (
        run_cli(
            "--workspace", workspace, "reproduce", "--preset", "paper", "--model", tmp_path / "nowhere", "--dry-run"
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "no Hugging Face checkpoint there" in err and len(err.strip().splitlines()) == 1
    assert run_cli("--workspace", workspace, "reproduce", "--seeds", "0", "0") == 2
    assert "seeds repeat" in capsys.readouterr().err


def _sparse_weights(file: Path, vocab: int, hidden: int, layers: int) -> None:
    """A safetensors file whose header lists the embedding and a tensor per block at their real shapes,
    its data a hole in a sparse file: what the checkpoint check reads, at no disk cost."""
    tensors, offset = {}, 0
    for name, shape in [
        ("model.embed_tokens.weight", [vocab, hidden]),
        *((f"model.layers.{i}.input_layernorm.weight", [hidden]) for i in range(layers)),
    ]:
        size = 4 * int(np.prod(shape))
        tensors[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    header = json.dumps(tensors).encode()
    with file.open("wb") as f:
        f.write(len(header).to_bytes(8, "little") + header)
        f.truncate(8 + len(header) + offset)


def test_the_dry_run_says_whether_llama_3b_training_fits_a_gpu(tmp_path, capsys):
    """A checkpoint folder with Llama-3.2-3B's config.json, weights of its shape (a sparse file: the dry
    run reads only their header, and builds the model on the meta device) and a small tokenizer: the
    paper's setting planned for A100s of 40 and 80 GB."""
    from transformers import LlamaConfig

    from jobs.run.spec import build_spec

    spec = build_spec("tiny")
    people = generate_people(spec.data, seed=0)
    entries = bio_entries(people, spec.data, seed=0)
    _save_checkpoint(
        tmp_path / "m", ([e.text for e in entries] + [f"{p.qa} {p.answer}." for p in prompts(people, entries)]) * 3
    )
    LlamaConfig(
        vocab_size=128256,
        hidden_size=3072,
        intermediate_size=8192,
        num_hidden_layers=28,
        num_attention_heads=24,
        num_key_value_heads=8,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=1,
    ).save_pretrained(tmp_path / "m")
    _sparse_weights(tmp_path / "m" / "model.safetensors", vocab=128256, hidden=3072, layers=28)

    def study(*sets):
        return plan_study(
            tmp_path / "ws",
            RunRequest(preset="paper", people=200, model=str(tmp_path / "m"), overrides=sets),
            snapshots=0,
            fits=False,
        )

    info = plan(study(), tflops=100, gpu_memory=141)  # an H200
    assert info["parameters"] == pytest.approx(3.21e9, rel=0.01)
    assert info["memory"]["weights_optimizer"] == 16 * info["parameters"]  # 51 GB before any activation
    assert info["fits"].startswith("fits a 141.0 GB GPU")
    # The QA phase's 256 rows of 128 tokens: logits over 128,256 entries alone are 34 GB.
    a100 = plan(study(), tflops=100, gpu_memory=80)
    assert a100["fits"].startswith("does not fit a 80.0 GB GPU; with --set train.gradient_checkpointing=true")
    checkpointed = plan(study("train.gradient_checkpointing=true"), tflops=100, gpu_memory=80)
    assert checkpointed["fits"].startswith("fits a 80.0 GB GPU")
    assert checkpointed["memory"]["activations"] < a100["memory"]["activations"] / 2
    assert checkpointed["phases"][0]["flops"] == a100["phases"][0]["flops"] * 8 // 6
    assert (
        "does not fit a 40.0 GB GPU: the fp32 weights and AdamW state alone"
        in plan(study(), tflops=100, gpu_memory=40)["fits"]
    )
    assert (
        run_cli(
            "--workspace",
            tmp_path / "ws",
            "reproduce",
            "--preset",
            "paper",
            "--model",
            tmp_path / "m",
            "--people",
            "200",
            "--snapshots",
            "0",
            "--dry-run",
            "--gpu-memory",
            "40",
        )
        == 0
    )
    assert "does not fit a 40.0 GB GPU" in capsys.readouterr().out


def test_the_app_shows_the_report(study):
    from textual.widgets import Markdown, OptionList

    from factrecall_tui.app import FactrecallApp
    from tests.tui.helpers import settle

    async def drive():
        app = FactrecallApp(study, scan_every=0)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("5")
            await settle(
                pilot,
                until=lambda: app.query_one("#report-studies", OptionList).option_count,
                what="the study in the Report tab",
            )
            await settle(pilot, until=lambda: app.query_one("#report-doc", Markdown).source, what="its report")
            options = app.query_one("#report-studies", OptionList)
            label = str(options.get_option_at_index(0).prompt)
            source = app.query_one("#report-doc", Markdown).source
            return label, source

    label, source = asyncio.run(drive())
    data = json.loads((study / "reproduce" / "tiny" / "report.json").read_text())
    assert label.startswith("tiny") and "report · 1" in label
    assert "## The paper's claims" in source and "[figure: Figure 1 → " in source
    assert all(f"**{c['verdict']}**" in source for c in data["claims"])


def test_the_app_browses_a_run_s_snapshot_store_beside_its_activation_store(study):
    """Store tab: a run trained with snapshots offers "RUN · snapshots" (RUN/trajectory.zarr), browsed
    as the activation store is (its models are the snapshots)."""
    import store
    from factrecall_tui.app import FactrecallApp
    from factrecall_tui.store_view import SNAPSHOTS, StorePane
    from tests.tui.helpers import settle

    run = _runs(study)[0]
    traj = store.open(str(run / "trajectory.zarr")).to_xarray()["resid_mid"]

    async def drive():
        app = FactrecallApp(study, scan_every=0)
        async with app.run_test(size=(140, 40)) as pilot:
            pane = app.query_one(StorePane)
            await pilot.press("4")
            await settle(
                pilot, until=lambda: run.name + SNAPSHOTS in pane.store_runs, what="the snapshot store offered"
            )
            assert run.name in pane.store_runs  # its activation store too
            pane.focus_run(run.name + SNAPSHOTS)
            opened = f"{run.name}/trajectory.zarr · "
            await settle(pilot, until=lambda: opened in str(app.query_one("#store-message").render()), what="its tree")
            message = str(app.query_one("#store-message").render())
            assert pane.root == run / "trajectory.zarr"
            return pane.nodes["resid_mid"], message

    node, message = asyncio.run(drive())
    assert f"{run.name}/trajectory.zarr · " in message
    assert tuple(node.shape) == traj.shape and tuple(node.dims) == traj.dims  # the snapshots are its models


def test_the_app_draws_the_report_s_figures(study):
    """g on Report: the PNGs report.md links, one at a time, drawn by textual-image (here, with no
    terminal, in Unicode characters); ↓ shows the next."""
    from textual.widgets import Markdown, OptionList
    from textual_image.widget import Image

    from factrecall_tui.app import FactrecallApp
    from factrecall_tui.figures_view import FiguresScreen
    from tests.tui.helpers import settle

    folder = study / "reproduce" / "tiny"
    linked = re.findall(r"!\[([^\]]*)\]\(([^)]+)\)", (folder / "report.md").read_text())
    assert len(linked) >= 3

    async def drive():
        app = FactrecallApp(study, scan_every=0)
        async with app.run_test(size=(140, 44)) as pilot:
            await pilot.press("5")
            await settle(pilot, until=lambda: app.query_one("#report-doc", Markdown).source, what="the report")
            await pilot.press("g")
            await settle(pilot, until=lambda: isinstance(app.screen, FiguresScreen), what="the figures")
            screen = app.screen
            names = [
                str(screen.query_one(OptionList).get_option_at_index(i).prompt) for i in range(len(screen.figures))
            ]
            first = screen.shown
            await settle(pilot)
            drawn = screen.query_one("#figures-image", Image).image
            await pilot.press("down")
            await settle(pilot, until=lambda: screen.shown != first, what="the next figure")
            return names, first, drawn, screen.shown

    names, first, drawn, second = asyncio.run(drive())
    assert names == [name for name, _ in linked]
    assert first == folder / linked[0][1] and drawn == first and second == folder / linked[1][1]
