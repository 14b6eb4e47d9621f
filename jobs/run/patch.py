"""Interventions at a site: does the model use what the probes read? (`factrecall-jobs patch`)

At one layer, at the settings' site (default resid_mid at the last prompt token: residual stream +
attention output, before the MLP; any hook at any position, `jobs.run.sites`, docs/sites.md), the
vector is replaced during the prompt's forward pass, the pass goes on, and the answer is decoded
greedily and scored by exact match, as evaluation scores it. The columns, their controls and the
cache are described in `store.interventions`.

How a vector is put in: `jobs.run.sites.Patch`. For resid_mid, the block's attention output at the
position is set to `new - x`, where x is the block's input there, so that `x + attention` -- what the
MLP reads and what the residual stream carries on -- is `new`; for attn_out and mlp_out, the module's
output there is `new`, exactly what the rest of the block adds. Only the prompt's pass is touched: the
decoded tokens that follow see the change through the keys and values it left in the cache, as they
would see the model's own vector.

Erasure: LEACE (`concept_erasure`, Belrose et al. 2023) fitted at the layer on the QA-in people's
vectors of the format erased, against the attribute's first-token class (the probes' label), and
applied to the patched people's vector at that layer and site: the least change that leaves no
linear probe anything to read there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from jobs.errors import FactrecallError
from jobs.run import model as models
from jobs.run.checkpoints import checkpoint_path
from jobs.run.evaluate import greedy_decode
from jobs.run.folder import RunFolder
from jobs.run.people import load_people
from jobs.run.positions import prompt_positions
from jobs.run.sites import Patch, decoder_blocks
from jobs.run.tokenizer import Target
from jobs.words import ATTRIBUTES
from store.interventions import COLUMNS, PATCH_VERSION, PatchSettings, cache_key, cached, store_cached
from store.reader import ActivationStore

# A change here that alters the numbers (the hooks, the vectors put in, the donors, the scoring) is a
# bump of store.interventions.PATCH_VERSION: cached results are keyed by that version, not by this code.


def load_run_inputs(path: Path):
    """A finished run's tokenizer, prompts and targets, read without taking its lock (a patch only reads)."""
    from jobs.run.files import read_rows
    from jobs.run.folder import load_spec
    from jobs.run.pipeline import load_prompts, tokenizer_dir
    from jobs.run.tokenizer import load_tokenizer

    run = RunFolder(path, load_spec(path))
    if not run.is_done("tokenizer"):
        raise FactrecallError(
            f"run {path.name} has no data and tokenizer yet; `factrecall-jobs resume {path.name}` first"
        )
    prompts = load_prompts(path)
    targets = read_rows(path / "data" / "targets.jsonl", lambda first_token_id, ids: Target(first_token_id, tuple(ids)))
    return run, load_tokenizer(tokenizer_dir(run)), prompts, targets


def chosen_people(s: ActivationStore, settings: PatchSettings) -> np.ndarray:
    """The store rows patched: the split's people, or a fixed sample of `settings.people` of them."""
    rows = np.flatnonzero(s.split == settings.split)
    if len(rows) < 2:
        raise FactrecallError(
            f"patching needs at least 2 {settings.split} people; {s.meta.get('run', s.url)} has {len(rows)}"
        )
    if settings.people is not None and settings.people < len(rows):
        rows = np.sort(np.random.default_rng(settings.seed).choice(rows, settings.people, replace=False))
    return rows


def donors_for(answers: np.ndarray, seed: int) -> np.ndarray:
    """For each patched person, another one (an index into the same list) whose answer differs where
    anyone's does, drawn at random with `seed`: a transplant that took shows as the donor's answer."""
    rng = np.random.default_rng(seed + 1)
    out = np.empty(len(answers), dtype=int)
    for i, answer in enumerate(answers):
        others = np.flatnonzero(answers != answer)
        if not len(others):
            others = np.delete(np.arange(len(answers)), i)
        out[i] = rng.choice(others)
    return out


def leace(x: torch.Tensor, labels: np.ndarray):
    """A LEACE eraser of `labels` (one class per row) from x (rows, hidden), float64 for stability."""
    from concept_erasure import LeaceEraser  # on first use: the rest of the CLI does not need it

    _, index = np.unique(labels, return_inverse=True)
    z = F.one_hot(torch.as_tensor(index), int(index.max()) + 1).double()
    return LeaceEraser.fit(x.double(), z)


def _project_out(h: torch.Tensor, centre: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """h with the directions of q's orthonormal columns removed about `centre` (on the CPU, in float64;
    the hook moves the result to the model's device)."""
    h = h.cpu().double()
    return (h - ((h - centre) @ q) @ q.T).float()


def patch_model(
    run: RunFolder,
    s: ActivationStore,
    model_name: str,
    settings: PatchSettings,
    tok,
    prompts,
    targets,
    *,
    device: torch.device,
    batch_size: int = 256,
    progress: Callable[[int, str], None] | None = None,
) -> dict:
    """Every column of `store.interventions` for one model, at each layer of `settings.layers`."""
    if settings.attribute not in s.attributes:
        raise FactrecallError(f"unknown attribute {settings.attribute!r}: choose one of {', '.join(s.attributes)}")
    t0 = time.perf_counter()
    n_attr, a = len(ATTRIBUTES), ATTRIBUTES.index(settings.attribute)
    layers = list(range(s.layers)) if settings.layers is None else sorted({k % s.layers for k in settings.layers})
    rows = chosen_people(s, settings)
    index = rows * n_attr + a  # their prompts (person-major, attribute order)
    own = [list(targets[i].ids) for i in index]
    answers = np.array([prompts[i].answer for i in index])
    donors = donors_for(answers, settings.seed)
    theirs = [own[j] for j in donors]
    qa, bio = [prompts[i].qa for i in index], [prompts[i].bio_long for i in index]
    longest = [max(len(o), len(t)) for o, t in zip(own, theirs)]
    train_rows = np.flatnonzero(s.split == "qa_in")
    labels = s.labels(settings.attribute)["label"].to_numpy()
    site = s.site(settings.site)  # one line where the store lacks it
    hook, _, position = site.partition("@")
    back = {"qa": from_end(tok, run, [prompts[i] for i in index], "qa", position), "bio": None}
    back["bio"] = from_end(tok, run, [prompts[i] for i in index], "bio_long", position)
    precision = run.spec.train.precision
    model = models.load_model(checkpoint_path(run, model_name), device)
    model.eval()
    blocks = len(decoder_blocks(model))
    if blocks != s.layers:
        raise FactrecallError(
            f"model {model_name} has {blocks} layers, its store {s.layers}: the checkpoint changed "
            "since the store was dumped; dump it again"
        )

    def decode(texts: list[str], what: str, patch: Patch | None = None, edit=None) -> list[list[int]]:
        where = back["qa"] if texts is qa else back["bio"]

        def before(idx: np.ndarray) -> None:
            if patch is not None:
                patch.set(lambda h, idx=idx: edit(h, torch.as_tensor(idx)), torch.as_tensor(where[idx]))

        out = greedy_decode(model, tok, texts, longest, batch_size, precision=precision, before=before)
        if progress is not None:
            progress(len(texts), what)
        return out

    def score(produced: list[list[int]], wanted: list[list[int]]) -> np.ndarray:
        return np.array([p[: len(w)] == w for p, w in zip(produced, wanted)], dtype=bool)

    base_qa = score(decode(qa, "QA"), own)
    base_bio = score(decode(bio, "BIO"), own)
    gen = torch.Generator().manual_seed(settings.seed)
    out_rows, outcomes = [], []
    for layer in layers:
        h = {
            fmt: torch.as_tensor(
                s.acts(fmt, layer, settings.attribute, model=model_name, site=site), dtype=torch.float32
            )
            for fmt in ("bio_long", "bio_short", "qa")
        }
        noise = torch.randn(len(rows), s.hidden, generator=gen)
        random = noise / noise.norm(dim=1, keepdim=True) * h["bio_long"][rows].norm(dim=1, keepdim=True)
        result: dict[str, np.ndarray] = {"qa": base_qa, "bio": base_bio}
        rank: dict[str, int] = {}
        with Patch(model, layer, hook) as patch:

            def put(vectors: torch.Tensor):
                return lambda h_now, idx: vectors[idx]

            result["bio_long_qa"] = score(
                decode(qa, f"layer {layer}: hBIO_long→QA", patch, put(h["bio_long"][rows])), own
            )
            result["bio_short_qa"] = score(
                decode(qa, f"layer {layer}: hBIO_short→QA", patch, put(h["bio_short"][rows])), own
            )
            result["identity_qa"] = score(decode(qa, f"layer {layer}: hQA→QA", patch, put(h["qa"][rows])), own)
            transplanted = decode(qa, f"layer {layer}: donor", patch, put(h["bio_long"][rows[donors]]))
            result["donor_own"], result["donor_rate"] = score(transplanted, own), score(transplanted, theirs)
            result["random_qa"] = score(decode(qa, f"layer {layer}: random", patch, put(random)), own)
            result["qa_bio_long"] = score(decode(bio, f"layer {layer}: hQA→BIO", patch, put(h["qa"][rows])), own)
            if settings.erase:
                for fmt, texts, column in (("qa", qa, "erase_qa"), ("bio_long", bio, "erase_bio")):
                    eraser = leace(h[fmt][train_rows], labels[train_rows])
                    result[column] = score(
                        decode(
                            texts,
                            f"layer {layer}: erased {fmt}",
                            patch,
                            lambda h_now, idx, e=eraser: e(h_now.cpu().double()).float(),
                        ),
                        own,
                    )
                    rank[fmt] = int(
                        torch.linalg.matrix_rank(eraser.proj_right)
                    )  # directions removed: classes - 1 at most
                # The control: as many random directions removed (an orthogonal projection about the
                # QA-in people's mean): LEACE with many classes removes many dimensions, and a drop
                # that random ones of the same number cause too is not the attribute's.
                q, _ = torch.linalg.qr(torch.randn(s.hidden, rank["qa"], generator=gen, dtype=torch.float64))
                centre = h["qa"][train_rows].double().mean(0)
                result["erase_random_qa"] = score(
                    decode(
                        qa,
                        f"layer {layer}: random subspace erased",
                        patch,
                        lambda h_now, idx: _project_out(h_now, centre, q),
                    ),
                    own,
                )
        row = {
            "layer": layer,
            **{c: round(100 * float(result[c].mean()), 2) if c in result else float("nan") for c in COLUMNS},
            "n_people": len(rows),
            "n_donor": int((answers[donors] != answers).sum()),
            "erase_rank": rank.get("qa", 0),
        }
        out_rows.append(row)
        outcomes.append({c: result[c].astype(int).tolist() for c in COLUMNS if c in result})
    return {
        "model": model_name,
        "settings": _settings_json(settings),
        "version": PATCH_VERSION,
        "people": rows.tolist(),
        "donors": rows[donors].tolist(),
        "rows": out_rows,
        "outcomes": outcomes,
        "seconds": round(time.perf_counter() - t0, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def from_end(tok, run: RunFolder, chosen: list, fmt: str, position: str) -> np.ndarray:
    """How many tokens before its last each prompt's `position` is (0 for `last`): the same token in
    a left-padded generation batch as in the dump's right-padded one."""
    if position == "last":
        return np.zeros(len(chosen), dtype=np.int64)
    lengths = np.array([len(ids) for ids in tok([p.text(fmt) for p in chosen], add_special_tokens=True)["input_ids"]])
    index = prompt_positions(tok, chosen, load_people(run.path), fmt, [position])[position]
    return lengths - 1 - index


def _settings_json(settings: PatchSettings) -> dict:
    from dataclasses import asdict

    d = asdict(settings)
    d["layers"] = None if settings.layers is None else list(settings.layers)
    return d


def patch(
    run_path: Path,
    s: ActivationStore,
    model_names: list[str],
    settings: PatchSettings,
    *,
    device: str | None = None,
    batch_size: int | None = None,
    cache: bool = True,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[tuple[dict, bool]]:
    """Each model's patching result for one run, from the store's cache where it has it, else
    computed and kept there: (result, whether it came from the cache) per model."""
    run, tok, prompts, targets = load_run_inputs(run_path)
    dev = models.pick_device(device or run.spec.device)
    found, todo = [], []
    for name in model_names:
        key = cache_key(s, name, settings)
        hit = cached(s, key) if cache else None
        found.append((key, hit))
        if hit is None:
            todo.append(name)
    n = len(chosen_people(s, settings))
    layers = s.layers if settings.layers is None else len({k % s.layers for k in settings.layers})
    per_model = n * (2 + layers * (6 + (3 if settings.erase else 0)))
    total, done = per_model * len(todo), 0
    out = []
    for name, (key, hit) in zip(model_names, found):
        if hit is not None:
            out.append((hit, True))
            continue

        def step(k: int, what: str, name=name) -> None:
            nonlocal done
            done += k
            if progress is not None:
                progress(done, total, f"{run_path.name} {name}: {what}")

        result = patch_model(
            run,
            s,
            name,
            settings,
            tok,
            prompts,
            targets,
            device=dev,
            batch_size=batch_size or run.spec.train.eval_batch_size,
            progress=step,
        )
        if cache:
            store_cached(s, key, result)
        out.append((result, False))
    return out
