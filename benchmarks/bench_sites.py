"""What capture sites cost a dump: several sites read in the one forward pass against one site
(resid_mid@last, the store's default), on the same model and prompts, in the same process:

- five sites: resid_pre, resid_mid, resid_post, attn_out and mlp_out at the last token;
- ten sites: those five hooks at the last token and at the subject's last token;

each measured two ways against the same for resid_mid@last alone:

- the forward passes alone: `jobs.run.sites.Capture` over `jobs.run.dump.batches`, the dump's own
  batches, hooks and positions, nothing copied out or written;
- the whole dump: a fresh store (`store.Writer.open_or_create`, an array and a checksum array per
  site) and `jobs.run.dump.dump_model` into it (the passes, the finiteness checks, the copies to
  numpy, the chunk writes and their checksums);

and a bare forward pass (no hook) for reference. The variants run interleaved, in turn, `--repeats`
times; each ratio is the median of the per-repeat ratios (these machines are shared and noisy), in
wall-clock time and in the process's CPU time (less moved by other processes taking the cores; with
OMP_NUM_THREADS=1 the two agree on an idle machine).

    python benchmarks/bench_sites.py [--run RUN] [--people 100] [--repeats 5] [--no-ten]

RUN is a trained run folder, read only: what the dump needs of it (spec, data, tokenizer,
checkpoints) is copied to a temporary folder; its last trained model is dumped over the first
`--people` people's prompts, with their real subject spans (jobs.run.positions). Without --run: a
random Llama of the cpu preset's shape (4 layers x 128 hidden, vocabulary 1,366) made with
save_pretrained and loaded as a checkpoint is, over random prompts of the cpu preset's lengths.
Prints a markdown table to paste into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

from jobs.run import model as models
from jobs.run.checkpoints import UNTRAINED, checkpoint_path
from jobs.run.dump import batches, dump_model, encode_formats, layout_for, model_config, site_positions
from jobs.run.folder import RunFolder
from jobs.run.people import load_people
from jobs.run.pipeline import load_prompts, make_tokenizer
from jobs.run.sites import Capture
from jobs.study.rate import cpu_name
from jobs.words import ATTRIBUTES, FORMATS
from store import Layout, Writer
from store.names import DEFAULT_SITE, HOOKS

ONE = (DEFAULT_SITE,)
FIVE = tuple(f"{hook}@last" for hook in HOOKS)
TEN = FIVE + tuple(f"{hook}@subject_last" for hook in HOOKS)
VARIANTS = {"one": ONE, "five": FIVE, "ten": TEN}
# The cpu preset's prompts, tokenized by its run's word tokenizer: (shortest, longest) per format.
LENGTHS = {"bio_long": (9, 68), "bio_short": (6, 11), "qa": (8, 10)}


def bf16_flags() -> int:
    """`grep -c avx512_bf16 /proc/cpuinfo`: 0 where the CPU has no bf16 units (a bf16 run computes in fp32)."""
    try:
        return sum("avx512_bf16" in line for line in Path("/proc/cpuinfo").read_text().splitlines())
    except OSError:
        return 0


class Bench:
    """A model, its prompts (token ids per format), the subject positions and a layout per variant."""

    def __init__(self, model, name, encoded, positions, layouts, batch_size, pad, precision, described):
        self.model, self.name, self.encoded, self.positions = model, name, encoded, positions
        self.layouts, self.batch_size, self.pad, self.precision = layouts, batch_size, pad, precision
        self.described = described
        self.device = next(model.parameters()).device

    @property
    def prompts(self) -> int:
        return sum(len(e) for e in self.encoded.values())

    def _rows(self, fmt: str) -> np.ndarray:
        return np.arange(len(self.encoded[fmt]))

    @torch.inference_mode()
    def bare(self) -> None:
        with models.autocast(self.device, self.precision):
            for fmt in FORMATS:
                for _, ids, mask, _ in batches(self.encoded[fmt], self._rows(fmt), self.batch_size, self.pad):
                    self.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)

    def forward(self, sites: tuple[str, ...]) -> None:
        """The dump's passes with its hooks, as dump_model runs them, nothing kept."""
        hooks: dict[str, list[str]] = {}
        for site in sites:
            hook, _, position = site.partition("@")
            hooks.setdefault(hook, []).append(position)
        with Capture(self.model, hooks) as capture, models.autocast(self.device, self.precision):
            for fmt in FORMATS:
                for chosen, ids, mask, last in batches(self.encoded[fmt], self._rows(fmt), self.batch_size, self.pad):
                    at = {"last": last}
                    for position, index in self.positions.get(fmt, {}).items():
                        at[position] = torch.as_tensor(index[chosen])
                    capture.run(ids, mask, at)

    def skeleton(self, sites: tuple[str, ...], url: Path) -> Writer:
        """The dump's first step: a new store of these sites (an array and a checksum array each)."""
        return Writer.open_or_create(url, self.layouts[sites], {})

    def fill(self, writer: Writer) -> None:
        """The rest of the dump: every block forwarded, captured, checked and written with its checksums."""
        dump_model(
            self.model,
            self.name,
            writer,
            self.encoded,
            self.batch_size,
            self.pad,
            precision=self.precision,
            positions=self.positions,
        )


def from_run(path: Path, tmp: Path, people: int, batch_size: int | None) -> Bench:
    """The run's last trained model over its first `people` people's prompts (a copy of the run, in `tmp`)."""
    copy = tmp / "runs" / path.name
    shutil.copytree(
        path,
        copy,
        ignore=shutil.ignore_patterns("*.zarr", "*.zarr.partial", "events.jsonl", "log.txt", "*.png", "run.lock"),
    )
    run = RunFolder.resume(copy)
    with run:
        trained = [p.name for p in run.spec.phases() if run.is_done(f"train-{p.name}")]
        name = trained[-1] if trained else UNTRAINED
        prompts = load_prompts(run.path)
        tok, targets = make_tokenizer(run, prompts)
        n = min(people, len(prompts) // len(ATTRIBUTES)) * len(ATTRIBUTES)  # whole people, person-major
        prompts, targets = prompts[:n], targets[:n]
        config = model_config(run)
        layouts = {
            sites: layout_for(run, tok, prompts, targets, config=config, names=[name], sites=sites)
            for sites in VARIANTS.values()
        }
        encoded = encode_formats(tok, prompts)
        positions = site_positions(tok, prompts, load_people(run.path), TEN)
        model = models.load_model(checkpoint_path(run, name), torch.device("cpu")).eval()
        precision = run.spec.train.precision
        return Bench(
            model,
            name,
            encoded,
            positions,
            layouts,
            batch_size or run.spec.train.eval_batch_size,
            tok.pad_token_id if tok.pad_token_id is not None else 0,
            precision,
            f"model `{name}` of {path} ({config.num_hidden_layers} layers x {config.hidden_size} hidden, "
            f"{config.model_type}), its first {n // len(ATTRIBUTES)} people, train.precision {precision} "
            f"(computed in {models.computes_in(torch.device('cpu'), precision)})",
        )


def random_llama(tmp: Path, people: int, batch_size: int | None) -> Bench:
    """A random Llama of the cpu preset's shape, saved and loaded as a checkpoint, over random prompts."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=1366,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp / "random-llama")
    model = models.load_model(tmp / "random-llama", torch.device("cpu")).eval()
    rng = np.random.default_rng(0)
    n = people * len(ATTRIBUTES)
    encoded, positions = {}, {}
    for fmt in FORMATS:
        low, high = LENGTHS[fmt]
        lengths = rng.integers(low, high + 1, size=n)
        encoded[fmt] = [rng.integers(3, config.vocab_size, size=k).tolist() for k in lengths]
        positions[fmt] = {"subject_last": rng.integers(1, lengths - 1)}  # a token before the last
    layouts = {
        sites: Layout(
            models=("random",),
            formats=FORMATS,
            attributes=ATTRIBUTES,
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            people=np.arange(people),
            split=np.array(["qa_in"] * people),
            label=np.zeros((len(ATTRIBUTES), people), int),
            label_text=np.full((len(ATTRIBUTES), people), "x"),
            answer=np.full((len(ATTRIBUTES), people), "x"),
            sites=sites,
        )
        for sites in VARIANTS.values()
    }
    return Bench(
        model,
        "random",
        encoded,
        positions,
        layouts,
        batch_size or 256,
        0,
        "fp32",
        f"a random Llama (save_pretrained; 4 layers x 128 hidden, vocabulary 1,366), {people} random people's "
        "prompts of the cpu preset's lengths, fp32",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a trained run folder, read only (default: a random Llama of the cpu shape)")
    parser.add_argument("--people", type=int, default=100, help="people whose prompts are dumped (default 100)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the run's train.eval_batch_size")
    parser.add_argument("--no-ten", action="store_true", help="leave out the ten-site variant (a third less time)")
    args = parser.parse_args()
    variants = {k: v for k, v in VARIANTS.items() if not (args.no_ten and k == "ten")}
    threads = models.use_cores()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        bench = (
            from_run(Path(args.run), tmp, args.people, args.batch_size)
            if args.run
            else random_llama(tmp, args.people, args.batch_size)
        )
        stores = tmp / "stores"
        stores.mkdir()
        # Wall-clock seconds, and this process's CPU seconds (every thread's, zarr's I/O thread too): on a
        # shared machine the second is much less moved by other processes taking the cores.
        wall: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        kept: dict[str, Path] = {}

        def measure(key: str | None, fn):
            w0, c0 = time.perf_counter(), time.process_time()
            out = fn()
            if key is not None:
                wall.setdefault(key, []).append(time.perf_counter() - w0)
                cpu.setdefault(key, []).append(time.process_time() - c0)
            return out

        def one_round(record: bool, i: int) -> None:
            chosen = variants if record else {"one": ONE}  # the warm-up: each code path once
            measure("bare" if record else None, bench.bare)
            for label, sites in chosen.items():
                measure(f"forward {label}" if record else None, lambda sites=sites: bench.forward(sites))
            for label, sites in chosen.items():
                url = stores / f"{label}-{i}.zarr"
                writer = measure(f"skeleton {label}" if record else None, lambda: bench.skeleton(sites, url))
                measure(f"fill {label}" if record else None, lambda: bench.fill(writer))
                if record:
                    for clock in (wall, cpu):
                        clock.setdefault(f"dump {label}", []).append(
                            clock[f"skeleton {label}"][-1] + clock[f"fill {label}"][-1]
                        )
                if label in kept:
                    shutil.rmtree(kept[label])  # outside the timing
                kept[label] = url

        one_round(False, -1)  # warm-up
        for i in range(args.repeats):  # interleaved: a drift in the load hits every variant alike
            one_round(True, i)

        # The same passes: resid_mid@last is the same in the store of one site and in those of five and ten.
        one = np.asarray(zarr.open_array(kept["one"] / "resid_mid", mode="r")[...])
        for label in set(variants) - {"one"}:
            np.testing.assert_array_equal(np.asarray(zarr.open_array(kept[label] / "resid_mid", mode="r")[...]), one)
        assert not np.isnan(one).any()
        disk = {label: sum(p.stat().st_size for p in url.rglob("*") if p.is_file()) for label, url in kept.items()}
    seconds = time.perf_counter() - started

    def median(key: str, clock=wall) -> float:
        return statistics.median(clock[key])

    def ratio(top: str, bottom: str, clock=wall) -> float:
        return statistics.median(a / b for a, b in zip(clock[top], clock[bottom]))

    def spread(top: str, bottom: str, clock=wall) -> str:
        rs = [a / b for a, b in zip(clock[top], clock[bottom])]
        return f"{min(rs):.2f}-{max(rs):.2f}"

    def row(what: str, top: str, bottom: str) -> None:
        print(
            f"| {what} | {median(top):.3f} | {median(bottom):.3f} | {ratio(top, bottom):.2f}x "
            f"({spread(top, bottom)}) | {ratio(top, bottom, cpu):.2f}x ({spread(top, bottom, cpu)}) |"
        )

    print(
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()} {cpu_name()} (avx512_bf16 in /proc/cpuinfo: "
        f"{bf16_flags()}), {threads} CPU threads, torch {torch.__version__}, zarr {zarr.__version__}. "
        f"{bench.described}; {bench.prompts:,} prompts (3 formats), batches of {bench.batch_size}; "
        f"medians of {args.repeats} interleaved repeats (ratios: the median of the per-repeat ratios, and "
        f"their range); {seconds:.0f} s in all.\n"
    )
    print("| measure | sites, s | one site (resid_mid@last), s | wall-clock ratio (range) | CPU-time ratio (range) |")
    print("|---|---|---|---|---|")
    row("forward passes with one site's hooks (baseline: bare forward, no hook)", "forward one", "bare")
    names = {"five": "five sites at the last token", "ten": "ten sites (five hooks x last, subject_last)"}
    several = [label for label in ("five", "ten") if label in variants]
    for label in several:
        row(f"forward passes, {names[label]}", f"forward {label}", "forward one")
    for label in several:
        row(f"whole dump (new store + dump_model), {names[label]}", f"dump {label}", "dump one")
    for label in several:
        row(f"whole dump of {label} sites against the forward passes of one site", f"dump {label}", "forward one")
    base = statistics.median(d - f for d, f in zip(wall["dump one"], wall["forward one"]))
    for label in several:  # what is not the passes: the store made, the copies out, the chunks and checksums
        extra = statistics.median(d - f for d, f in zip(wall[f"dump {label}"], wall[f"forward {label}"]))
        print(
            f"| the dump beyond its passes (skeleton, copies, writes, checksums), {label} sites (of which "
            f"the skeleton) | {extra:.3f} ({median(f'skeleton {label}'):.3f}) | {base:.3f} "
            f"({median('skeleton one'):.3f}) | | |"
        )
    sizes = " / ".join(f"{disk[k]:,}" for k in several)
    times_one = " / ".join(f"{disk[k] / disk['one']:.2f}x" for k in several)
    print(f"| bytes on disk ({' / '.join(several)} sites; one) | {sizes} | {disk['one']:,} | {times_one} | |")
    print(
        "\nTarget (five sites cost at most 1.3x the forward passes of one), wall-clock / CPU time: whole dump of "
        f"five / forward passes of one = {ratio('dump five', 'forward one'):.2f}x / "
        f"{ratio('dump five', 'forward one', cpu):.2f}x; forward passes of five / of one = "
        f"{ratio('forward five', 'forward one'):.2f}x / {ratio('forward five', 'forward one', cpu):.2f}x; whole "
        f"dump of five / of one = {ratio('dump five', 'dump one'):.2f}x / {ratio('dump five', 'dump one', cpu):.2f}x."
    )


if __name__ == "__main__":
    main()
