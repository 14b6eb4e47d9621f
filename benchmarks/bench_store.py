"""The activation store's speed and size, each against a baseline measured in the same run:

- dump: capturing every layer's resid_mid and writing it (`jobs.run.dump.dump_model`) vs a bare
  forward pass of the same model over the same prompts, same batches, nothing captured or written;
- read: one (model, format, layer, attribute) slice, every person, through `store.open(...).acts`,
  through plain zarr and through xarray, vs `np.load` of the same array saved as a raw .npy file;
  at the run's shape and at the paper's (5,000 people x 3,072 hidden, synthetic vectors);
- open: `store.open(...)`, which checks the store against its schema before anything is read
  (store/validate.py: the folder walked for special files, every zarr.json read and checked, the
  coordinates read and the fingerprint recomputed), vs plain zarr opening the group and reading the
  same coordinate arrays with no check;
- size: bytes on disk per person-attribute-layer, uncompressed (the default) and zstd, vs raw.

    python benchmarks/bench_store.py [--run RUN] [--repeats 5]

RUN is a trained run folder (default: a fresh cpu-preset run's data and untrained model in a
temporary folder; the speed is the same, the compressibility of trained vectors may differ).
Prints a markdown table to paste into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr
import zarr
from timing import timed

import store
from jobs.run.checkpoints import UNTRAINED, checkpoint_path
from jobs.run.dump import batches, dump_model, encode_formats, layout_for
from jobs.run.folder import RunFolder
from jobs.run.model import load_model, use_cores
from jobs.run.pipeline import load_prompts, make_data, make_init, make_tokenizer
from jobs.run.spec import build_spec
from store import Layout, Writer


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def prepare(args, tmp: Path) -> tuple[RunFolder, str]:
    if args.run:
        run = RunFolder.resume(Path(args.run))
        trained = [p.name for p in run.spec.phases() if run.is_done(f"train-{p.name}")]
        return run, trained[-1] if trained else UNTRAINED
    run = RunFolder.create_or_resume(tmp / "runs" / "bench", build_spec("cpu", strategies=["mix"]))
    make_data(run)
    tok, _ = make_tokenizer(run, load_prompts(run.path))
    make_init(run, tok)
    return run, UNTRAINED


def bench_dump(run: RunFolder, name: str, tmp: Path, repeats: int, batch_size: int):
    prompts = load_prompts(run.path)
    tok, targets = make_tokenizer(run, prompts)
    encoded = encode_formats(tok, prompts)
    model = load_model(checkpoint_path(run, name), torch.device("cpu")).eval()
    pad = tok.pad_token_id or 0
    layout = layout_for(run, tok, prompts, targets)

    @torch.inference_mode()
    def bare():
        for fmt in layout.formats:
            for _, ids, mask, _ in batches(encoded[fmt], np.arange(len(prompts)), batch_size, pad):
                model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)

    stores = []

    def ours():
        url = tmp / f"dump{len(stores)}.zarr"
        stores.append(url)
        writer = Writer.open_or_create(url, layout, {})
        dump_model(model, name, writer, encoded, batch_size, pad)

    t_bare, t_ours = [], []
    bare(), ours()  # warm-up
    for _ in range(repeats):  # interleaved, so load drifts hit both alike
        t0 = time.perf_counter()
        bare()
        t_bare.append(time.perf_counter() - t0)  # noqa: E702
        t0 = time.perf_counter()
        ours()
        t_ours.append(time.perf_counter() - t0)  # noqa: E702
    url = stores[-1]
    for old in stores[:-1]:
        shutil.rmtree(old)
    return (
        layout,
        len(prompts) * len(layout.formats),
        statistics.median(t_bare),
        statistics.median(t_ours),
        url,
        model,
        encoded,
        pad,
    )


def bench_read(url: Path, model: str, tmp: Path, repeats: int, label: str) -> list[tuple[str, float, float]]:
    s = store.open(url)
    m, f, layer, a = s.models.index(model), s.formats.index("qa"), s.layers - 1, s.attributes.index("job")
    raw = tmp / f"{label}.npy"
    np.save(raw, s.acts("qa", layer, "job", model=model))
    plain = zarr.open_array(Path(url) / "resid_mid", mode="r")
    ds = xr.open_zarr(url)
    t_npy = timed(lambda: np.load(raw), repeats)[0]
    rows = [
        ("store.open(...).acts", t_npy, timed(lambda: s.acts("qa", layer, "job", model=model), repeats)[0]),
        ("plain zarr, arr[m, f, l, a]", t_npy, timed(lambda: plain[m, f, layer, a], repeats)[0]),
        (
            "xarray .sel(...).values",
            t_npy,
            timed(lambda: ds.resid_mid.sel(model=model, format="qa", layer=layer, attribute="job").values, repeats)[0],
        ),
    ]
    np.testing.assert_array_equal(np.load(raw), plain[m, f, layer, a])
    return rows


def bench_open(url: Path, repeats: int) -> tuple[float, float]:
    """(plain zarr's open and coordinate reads, store.open's validated open): median seconds."""

    def plain():
        group = zarr.open_group(str(url), mode="r")
        for name in ("person", "split", "label", "label_text", "answer", "written", "checksum"):
            group[name][...]

    t_plain = timed(plain, repeats)[0]
    return t_plain, timed(lambda: store.open(url), repeats)[0]


def paper_shape_store(tmp: Path, compressor: str, people: int = 5000, hidden: int = 3072) -> Path:
    """One model, format, layer and attribute at the paper's width: synthetic vectors."""
    rng = np.random.default_rng(0)
    layout = Layout(
        models=("mix",),
        formats=("qa",),
        attributes=("job",),
        layers=1,
        hidden=hidden,
        people=np.arange(people),
        split=np.array(["qa_in"] * people),
        label=np.zeros((1, people), int),
        label_text=np.full((1, people), "x"),
        answer=np.full((1, people), "x"),
        compressor=compressor,
    )
    url = tmp / f"paper-{compressor}.zarr"
    writer = Writer.open_or_create(url, layout, {})
    for b in range(layout.blocks):
        rows = writer.people(b)
        writer.write("mix", "qa", b, rng.standard_normal((1, 1, rows.stop - rows.start, hidden)).astype(np.float16))
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a trained run folder (default: a fresh cpu-preset run, untrained model)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    use_cores()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        run, name = prepare(args, tmp)
        with run:
            layout, n_prompts, t_bare, t_dump, url, model, encoded, pad = bench_dump(
                run, name, tmp, args.repeats, args.batch_size
            )
            # the same vectors, zstd-compressed
            zurl = tmp / "zstd.zarr"
            zlayout = dataclasses.replace(layout, compressor="zstd")
            t0 = time.perf_counter()
            dump_model(model, name, Writer.open_or_create(zurl, zlayout, {}), encoded, args.batch_size, pad)
            t_zdump = time.perf_counter() - t0
        opened = bench_open(url, max(args.repeats, 20))
        reads = bench_read(url, name, tmp, max(args.repeats, 50), "run")
        zreads = bench_read(zurl, name, tmp, max(args.repeats, 50), "run-zstd")[:1]
        paper = bench_read(paper_shape_store(tmp, "none"), "mix", tmp, args.repeats * 4, "paper")
        zpaper = bench_read(paper_shape_store(tmp, "zstd"), "mix", tmp, args.repeats * 4, "paper-zstd")[:1]

        per_vector = layout.layers * len(layout.attributes) * len(layout.people) * len(layout.formats)
        raw_bytes = per_vector * layout.hidden * 2
        plain_bytes = folder_bytes(Path(url) / "resid_mid")
        z_bytes = folder_bytes(zurl / "resid_mid")

    print(
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {torch.get_num_threads()} CPU threads, torch "
        f"{torch.__version__}, zarr {zarr.__version__}. Model `{name}` of {args.run or 'a fresh cpu-preset run'}: "
        f"{layout.layers} layers x {layout.hidden} hidden, {len(layout.people)} people, {n_prompts:,} prompts "
        f"(3 formats), batches of {args.batch_size}; medians of {args.repeats} interleaved runs.\n"
    )
    print("| measure | factrecall | baseline | ratio |")
    print("|---|---|---|---|")
    print(
        f"| dump one model, 3 formats: seconds (baseline: bare forward, same batches) | {t_dump:.3f} | {t_bare:.3f} | "
        f"{t_dump / t_bare:.2f}x the time |"
    )
    print(
        f"| the same dump with --compressor zstd: seconds | {t_zdump:.3f} | {t_bare:.3f} | "
        f"{t_zdump / t_bare:.2f}x the time |"
    )
    print(
        f"| open the store, run shape: store.open (validated), ms (baseline: zarr.open_group and its coordinate "
        f"arrays, unchecked) | {opened[1] * 1e3:.1f} | {opened[0] * 1e3:.1f} | {opened[1] / opened[0]:.2f}x the time |"
    )
    for title, rows in (
        (
            f"run shape ({len(layout.people)} x {layout.hidden})",
            reads + [("zstd store, store.acts", zreads[0][1], zreads[0][2])],
        ),
        ("paper shape (5000 x 3072, 8 chunks)", paper + [("zstd store, store.acts", zpaper[0][1], zpaper[0][2])]),
    ):
        for what, t_npy, t in rows:
            print(
                f"| read one slice, {title}: {what}, ms (baseline: np.load of a .npy) | {t * 1e3:.3f} | "
                f"{t_npy * 1e3:.3f} | {t_npy / t:.2f}x the speed |"
            )
    print(
        f"| bytes on disk per person-attribute-layer, uncompressed (raw float16: {layout.hidden * 2}) | "
        f"{plain_bytes / (per_vector):.1f} | {raw_bytes / per_vector:.0f} | {plain_bytes / raw_bytes:.3f} |"
    )
    print(
        f"| bytes on disk per person-attribute-layer, zstd level 1 | {z_bytes / per_vector:.1f} | "
        f"{raw_bytes / per_vector:.0f} | {z_bytes / raw_bytes:.3f} |"
    )


if __name__ == "__main__":
    main()
