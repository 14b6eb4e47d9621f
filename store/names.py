"""The store's names, defined once and importable without zarr or numpy (the CLI and the TUI read
them on their first frame): file names, the schema, the hook point, and the prompt formats and
people splits the probes compare. A choice is declared once, as a `Literal` (the settings' fields
in store/settings.py are typed by it); its tuple of values is read from it."""

from typing import Literal, get_args

STORE_NAME = "activations.zarr"  # RUN/activations.zarr: every trained model at the end of training
TRAJECTORY_NAME = "trajectory.zarr"  # RUN/trajectory.zarr: the snapshots kept along training
SITES_NAME = "sites.zarr"  # RUN/sites.zarr: Stage's and Mix's vectors at the report's sites (jobs.study.where)
RunStore = Literal["activations.zarr", "sites.zarr"]  # the stores of a run whose vectors `patch` puts in
assert get_args(RunStore) == (STORE_NAME, SITES_NAME)
SCHEMA = "factrecall.activations"
VERSION = 1
ATTRS_KEY = "factrecall"  # the group attribute that holds the schema, layout and source
CHECKSUM = "checksum"  # a CRC-32 per resid_mid chunk (a store without it is refused: dump it again)
HALF_MADE = "factrecall_skeleton_unfinished"  # set while a skeleton is made in place (a remote store)
HOOK = "resid_mid"  # the paper's h; at the last prompt token, the store's first array (docs/sites.md)

# A site is where a vector is read (and patched): a hook of every block x a token position of the
# prompt, written `hook@position` as TransformerLens names hooks (`blocks.L.hook_mlp_out`). The hooks'
# per-family definitions are jobs/run/sites.py; the positions' (token spans from the tokenizer's
# offsets) jobs/run/positions.py; what each means, docs/sites.md.
Hook = Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"]
HOOKS = get_args(Hook)
Position = Literal["last", "subject_last", "name_last"]
POSITIONS = get_args(Position)
DEFAULT_POSITION = "last"  # the paper's: the last prompt token, whose next token is the answer's first
DEFAULT_SITE = f"{HOOK}@{DEFAULT_POSITION}"
# The report's "Where the fact is" (jobs.study.where): three hooks at the subject's last token and the
# last token (`reproduce --sites` chooses others), and the site of its causal test (always dumped).
REPORT_SITES = tuple(f"{h}@{p}" for h in ("resid_mid", "mlp_out", "attn_out") for p in ("subject_last", "last"))
REPORT_PATCH_SITE = "resid_mid@subject_last"


def parse_site(text: str) -> str:
    """A site's full name (`hook@position`) from what a user wrote: `hook@position`, or a hook alone
    for its last-token site. Raises ValueError with one line naming what is unknown."""
    hook, _, position = str(text).strip().partition("@")
    position = position or DEFAULT_POSITION
    if hook not in HOOKS:
        raise ValueError(f"unknown hook {hook!r} in site {text!r}: hooks are {', '.join(HOOKS)}")
    if position not in POSITIONS:
        raise ValueError(f"unknown position {position!r} in site {text!r}: positions are {', '.join(POSITIONS)}")
    return f"{hook}@{position}"


def parse_sites(values) -> tuple[str, ...]:
    """Full site names from a list of sites or comma-separated lists of them, in order; ValueError
    for an unknown one or one named twice."""
    out: list[str] = []
    for value in values:
        for part in str(value).split(","):
            if not part.strip():
                continue
            site = parse_site(part)
            if site in out:
                raise ValueError(f"site {site} is named twice: name each site once")
            out.append(site)
    if not out:
        raise ValueError("no site given: name one or more as HOOK@POSITION, e.g. resid_mid@last")
    return tuple(out)


def array_name(site: str) -> str:
    """The store's array of a site: the hook's name at the last token (`resid_mid`, as every store
    made before sites has it), else the site's (`mlp_out@subject_last`)."""
    hook, _, position = site.partition("@")
    return hook if position == DEFAULT_POSITION else site


def checksum_name(site: str) -> str:
    """The array of a site's chunk checksums: `checksum` for resid_mid at the last token (as before
    sites), `ARRAY.checksum` for every other."""
    return CHECKSUM if site == DEFAULT_SITE else f"{array_name(site)}.checksum"


CHECKSUM_DIMS = ("model", "format", "layer", "attribute", "person_block")
DIMS = ("model", "format", "layer", "attribute", "person", "hidden")  # resid_mid's dimensions
Dtype = Literal["float16", "float32"]  # what a dump stores vectors as (--dtype)
DTYPES = get_args(Dtype)
Compressor = Literal["none", "zstd"]  # and compresses their chunks with (--compressor)
COMPRESSORS = get_args(Compressor)

FORMATS = ("bio_long", "bio_short", "qa")  # prompt formats: (s, r'), (s, r), (r, s)
BioFormat = Literal["bio_long", "bio_short"]  # the BIO side of a probe comparison
BIO_FORMATS = get_args(BioFormat)
assert BIO_FORMATS == FORMATS[:2]
PatchSplit = Literal["qa_out", "qa_in"]  # people whose QA pairs were held out, and those trained on
SPLITS = ("qa_in", "qa_out")
ProbeSplit = Literal["qa_in", "qa_out", "all"]  # what a probe may train or test on
PROBE_SPLITS = get_args(ProbeSplit)
ProbeBackend = Literal["lbfgs", "ridge", "sklearn"]  # how a probe is fitted (store.probes.fit)
BACKENDS = get_args(ProbeBackend)
Classes = Literal["observed", "vocab"]  # a probe's classes: the first tokens that occur, or every token
CLASSES = get_args(Classes)

# A probe sweep's numbers per layer (store.probes), and how tables and figures head them.
PROBE_ACCURACIES = ("acc_qa_wqa", "acc_bio_wqa", "acc_qa_wbio", "acc_bio_wbio")
PROBE_COLUMNS = (*PROBE_ACCURACIES, "delta_rep", "delta_mech", "cosine", "cka")
PROBE_LABELS = {
    "acc_qa_wqa": "Acc(hQA·WQA)",
    "acc_bio_wqa": "Acc(hBIO·WQA)",
    "acc_qa_wbio": "Acc(hQA·WBIO)",
    "acc_bio_wbio": "Acc(hBIO·WBIO)",
    "delta_rep": "Δrep",
    "delta_mech": "Δmech",
    "cosine": "cos(hBIO, hQA)",
    "cka": "CKA",
}
# Beside each accuracy, a control task's (Hewitt & Liang 2019): the same people's vectors with the
# attribute re-drawn at random from its values, fitted and scored alike; selectivity = accuracy - control.
PROBE_CONTROLS = tuple(k.replace("acc_", "ctl_") for k in PROBE_ACCURACIES)
PROBE_SELECTIVITY = tuple(k.replace("acc_", "sel_") for k in PROBE_ACCURACIES)
# The columns given a person-level bootstrap interval (and over seeds where there are several).
PROBE_INTERVALS = (*PROBE_ACCURACIES, "delta_rep", "delta_mech", *PROBE_CONTROLS, *PROBE_SELECTIVITY)
PROBE_LABELS.update({k: PROBE_LABELS[a].replace("Acc", "Control") for k, a in zip(PROBE_CONTROLS, PROBE_ACCURACIES)})
PROBE_LABELS.update({k: PROBE_LABELS[a].replace("Acc", "Sel") for k, a in zip(PROBE_SELECTIVITY, PROBE_ACCURACIES)})
