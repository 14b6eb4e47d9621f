"""The dump step: every trained model's vectors at each site asked for (default: resid_mid at the last
token; `jobs.run.sites`, docs/sites.md) of every BIO_long, BIO_short and QA prompt, into the run's
activation store (`store/`, Zarr v3).

Work goes one (model, format, block of people) at a time: the block's prompts are sorted by length,
forwarded in right-padded batches (each row's tokens keep their indices; no position ids to fix),
every site of every layer captured in that one pass, and the block written and flagged complete. A
killed dump resumes at the first block without its flag.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from importlib.metadata import version

import numpy as np
import torch
from transformers import AutoConfig, PreTrainedTokenizerBase

from jobs.errors import FactrecallError
from jobs.run import model as models
from jobs.run.checkpoints import UNTRAINED, checkpoint_path, run_models, store_models
from jobs.run.corpus import Prompt
from jobs.run.files import digest
from jobs.run.folder import RunFolder
from jobs.run.people import load_people
from jobs.run.positions import prompt_positions
from jobs.run.sites import Capture, decoder_blocks
from jobs.run.tokenizer import Target
from jobs.words import ATTRIBUTES, FORMATS
from store import Layout, Writer
from store.names import DEFAULT_POSITION, DEFAULT_SITE, STORE_NAME, TRAJECTORY_NAME
from store.settings import DumpOptions
from store.writer import existing_settings

FLOAT16_MAX = float(np.finfo(np.float16).max)


def default_url(run: RunFolder, trajectory: bool = False) -> str:
    return str(run.path / (TRAJECTORY_NAME if trajectory else STORE_NAME))


def source(run: RunFolder, names: list[str]) -> dict:
    """What the vectors come from, for the store's fingerprint: the run's spec, each model's weight
    files (by content: a model trained again to the same weights keeps its store), and the compute
    precision (`train.precision`, where the device has bf16 units)."""
    weights = {}
    for name in names:
        files = sorted(checkpoint_path(run, name).glob("*.safetensors")) + sorted(
            checkpoint_path(run, name).glob("*.bin")
        )
        weights[name] = [[f.name, digest(f)["sha256"]] for f in files]
    computed = models.computes_in(models.pick_device(run.spec.device), run.spec.train.precision)
    compute = {"bf16": "bfloat16", "fp32": "float32"}[computed]
    return {"run": run.spec.identity(), "weights": weights, "compute": compute}


def model_config(run: RunFolder):
    """The run's model configuration (layers, width, vocabulary, family), from its start checkpoint."""
    return AutoConfig.from_pretrained(str(checkpoint_path(run, UNTRAINED)), local_files_only=True)


def layout_for(
    run: RunFolder,
    tok: PreTrainedTokenizerBase,
    all_prompts: list[Prompt],
    targets: list[Target],
    dtype: str = "float16",
    compressor: str = "none",
    chunk_people: int | None = None,
    config=None,
    names: list[str] | None = None,
    sites: tuple[str, ...] = (DEFAULT_SITE,),
) -> Layout:
    n_attr = len(ATTRIBUTES)
    if len(all_prompts) % n_attr or any(
        p.attribute != ATTRIBUTES[i % n_attr] or p.person != all_prompts[i - i % n_attr].person
        for i, p in enumerate(all_prompts)
    ):
        raise FactrecallError(
            f"{run.path}/data/prompts.jsonl is not person-major in attribute order; "
            "delete data/ and done/data.json and run again"
        )
    config = config or model_config(run)
    first = np.array([t.first_token_id for t in targets]).reshape(-1, n_attr).T  # (attribute, person)
    answers = np.array([p.answer for p in all_prompts]).reshape(-1, n_attr).T
    names = names or run_models(run)
    return Layout(
        models=tuple(names),
        formats=FORMATS,
        attributes=ATTRIBUTES,
        layers=config.num_hidden_layers,
        hidden=config.hidden_size,
        people=np.array([p.person for p in all_prompts[::n_attr]]),
        split=np.array([p.split for p in all_prompts[::n_attr]]),
        label=first,
        label_text=_token_texts(tok, first),
        answer=answers,
        dtype=dtype,
        compressor=compressor,
        chunk_people=chunk_people,
        source=source(run, names),
        sites=sites,
    )


def _token_texts(tok: PreTrainedTokenizerBase, ids: np.ndarray) -> np.ndarray:
    """Each id as the text it decodes to (" Paris" for a BPE token, "Paris" for a word)."""
    text = {i: tok.decode([i]) for i in np.unique(ids).tolist()}
    return np.vectorize(text.__getitem__, otypes=[object])(ids).astype(str)


def batches(
    encoded: list[list[int]], rows: np.ndarray, batch_size: int, pad: int
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Right-padded batches of the prompts `rows`, shortest first: (rows, input_ids, mask, last positions)."""
    order = rows[np.argsort([len(encoded[i]) for i in rows], kind="stable")]
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        lengths = torch.tensor([len(encoded[i]) for i in chosen])
        ids = torch.full((len(chosen), int(lengths.max())), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, i in enumerate(chosen):
            ids[r, : len(encoded[i])] = torch.tensor(encoded[i])
            mask[r, : len(encoded[i])] = 1
        yield chosen, ids, mask, lengths - 1


def encode_formats(tok: PreTrainedTokenizerBase, all_prompts: list[Prompt]) -> dict[str, list[list[int]]]:
    """Token ids of every prompt in every format, as evaluation feeds them (with the BOS token)."""
    return {fmt: tok([p.text(fmt) for p in all_prompts], add_special_tokens=True)["input_ids"] for fmt in FORMATS}


def site_positions(
    tok: PreTrainedTokenizerBase, all_prompts: list[Prompt], people, sites: tuple[str, ...]
) -> dict[str, dict[str, np.ndarray]]:
    """Each format's token index per prompt of every position the sites need but `last` (which is
    each row's length - 1): {format: {position: indices}}, checked and refused in one line where a
    span is ambiguous (jobs.run.positions)."""
    wanted = sorted({site.partition("@")[2] for site in sites} - {DEFAULT_POSITION})
    if not wanted:
        return {fmt: {} for fmt in FORMATS}
    return {fmt: prompt_positions(tok, all_prompts, people, fmt, wanted) for fmt in FORMATS}


def dump_model(
    model,
    name: str,
    writer: Writer,
    encoded: dict[str, list[list[int]]],
    batch_size: int,
    pad: int,
    progress: Callable[[int], None] | None = None,
    precision: str = "fp32",
    positions: dict[str, dict[str, np.ndarray]] | None = None,
) -> int:
    """Write every unwritten block of model `name` (every site of the store from one pass);
    `positions` (`site_positions`) where a site is not at the last token. Returns how many prompts
    it forwarded."""
    layout, n_attr = writer.layout, len(writer.layout.attributes)
    device = next(model.parameters()).device
    if len(decoder_blocks(model)) != layout.layers:
        raise FactrecallError(
            f"model {name} has {len(decoder_blocks(model))} layers, the store {layout.layers}; "
            "its checkpoint changed since the store was made: delete the store and dump again"
        )
    forwarded = 0
    limit = FLOAT16_MAX if layout.dtype == "float16" else float(torch.finfo(torch.float32).max)
    hooks: dict[str, list[str]] = {}
    for site in layout.sites:
        hook, _, position = site.partition("@")
        hooks.setdefault(hook, []).append(position)
    with Capture(model, hooks) as capture, models.autocast(device, precision):
        for fmt in layout.formats:
            for block in range(layout.blocks):
                if writer.done(name, fmt, block):
                    continue
                people = writer.people(block)
                rows = np.arange(people.start * n_attr, people.stop * n_attr)
                shape = (layout.layers, n_attr, writer.size(block), layout.hidden)
                vectors = {site: np.empty(shape, dtype=layout.dtype) for site in layout.sites}
                for chosen, ids, mask, last in batches(encoded[fmt], rows, batch_size, pad):
                    at = {DEFAULT_POSITION: last}
                    for position, index in (positions or {}).get(fmt, {}).items():
                        at[position] = torch.as_tensor(index[chosen])
                    found = capture.run(ids.to(device), mask.to(device), at)
                    local = chosen - people.start * n_attr
                    for site in layout.sites:
                        hook, _, position = site.partition("@")
                        h = found[hook, position]
                        # NaN is how the store marks "not written": a NaN activation must never be stored. One
                        # pass over h (NaN and inf fail the comparison); which problem it is, only on failure.
                        if not bool((h.abs() <= limit).all()):
                            if not bool(torch.isfinite(h).all()):
                                raise FactrecallError(
                                    f"model {name} produces NaN or infinite activations at {site} in format "
                                    f"{fmt}; its checkpoint is broken (check its training loss)"
                                )
                            raise FactrecallError(
                                f"model {name} has activations beyond float16's range at {site} in format {fmt}; "
                                f"delete {writer.group.store} and dump again with --dtype float32"
                            )
                        vectors[site][:, local % n_attr, local // n_attr, :] = h.cpu().numpy()
                    forwarded += len(chosen)
                    if progress is not None:
                        progress(len(chosen))
                writer.write(name, fmt, block, vectors)
    return forwarded


def dump(
    run: RunFolder,
    tok: PreTrainedTokenizerBase,
    all_prompts: list[Prompt],
    targets: list[Target],
    options: DumpOptions | None = None,
    *,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> dict:
    """Dump `options.models` (default: every model of the store: the untrained one and each phase's,
    or with `options.trajectory` the snapshots kept along training) into the store at `options.url`
    (default: RUN/activations.zarr, or RUN/trajectory.zarr). Finished blocks are never recomputed.
    `on_start(prompts still to forward)` once the store is open, `progress(prompts)` as they go."""
    options = options or DumpOptions()
    trajectory = options.trajectory
    everything = store_models(run, trajectory)
    if trajectory and not everything:
        raise FactrecallError(
            f"run {run.path.name} kept no snapshots along training; run it with "
            "--set train.snapshots=4 (or `factrecall-jobs reproduce`)"
        )
    wanted = list(options.models or everything)
    for name in wanted:
        if name not in everything:
            raise FactrecallError(f"run {run.path.name} has no model {name!r}: it has {', '.join(everything)}")
        if name != UNTRAINED and not trajectory and not run.is_done(f"train-{name}"):
            raise FactrecallError(
                f"model {name} is not trained yet; finish the run (`factrecall-jobs resume "
                f"{run.path.name}`) or pass --models with trained ones"
            )
    for name in wanted:  # before the store is made: a missing model leaves nothing behind
        if not (checkpoint_path(run, name) / "config.json").is_file():
            raise FactrecallError(
                f"model {name}'s checkpoint {checkpoint_path(run, name)} is missing; "
                f"`factrecall-jobs resume {run.path.name}` makes it again"
            )
    url = options.url or default_url(run, trajectory)
    found = existing_settings(url)
    dtype = options.dtype or found.get("dtype", "float16")
    compressor = options.compressor or found.get("compressor", "none")
    chunk_people = options.chunk_people or found.get("chunk_people")
    sites = options.sites or tuple(found.get("sites", (DEFAULT_SITE,)))
    config = model_config(run)
    layout = layout_for(run, tok, all_prompts, targets, dtype, compressor, chunk_people, config, everything, sites)
    meta = {
        "run": run.path.name,
        "spec": run.spec.identity(),
        "factrecall": version("factrecall"),
        "model_type": config.model_type,
        "vocab_size": config.vocab_size,
        "checkpoints": {m: str(checkpoint_path(run, m)) for m in everything},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    writer = Writer.open_or_create(url, layout, meta)  # a StoreError is the user's to read, as it is
    todo = [m for m in wanted if not writer.complete(m)]
    if on_start is not None:  # prompts still to forward
        on_start(
            sum(
                writer.size(b) * len(layout.attributes)
                for m in todo
                for f in layout.formats
                for b in range(layout.blocks)
                if not writer.done(m, f, b)
            )
        )
    device = models.pick_device(run.spec.device)
    encoded = encode_formats(tok, all_prompts) if todo else {}
    positions = site_positions(tok, all_prompts, load_people(run.path), layout.sites) if todo else {}
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    t0, forwarded = time.perf_counter(), 0
    for name in todo:
        model = models.load_model(checkpoint_path(run, name), device)
        model.eval()
        forwarded += dump_model(
            model,
            name,
            writer,
            encoded,
            options.batch_size or run.spec.train.eval_batch_size,
            pad,
            progress,
            run.spec.train.precision,
            positions,
        )
        del model
    seconds = time.perf_counter() - t0
    return {
        "url": url,
        "models": [m for m in wanted if writer.complete(m)],
        "dumped_now": todo,
        "prompts": forwarded,
        "seconds": round(seconds, 2),
        "prompts_per_s": round(forwarded / seconds, 1) if forwarded else None,
        "dtype": layout.dtype,
        "layers": layout.layers,
        "hidden": layout.hidden,
        "sites": list(layout.sites),
        "fingerprint": layout.fingerprint(),
    }
