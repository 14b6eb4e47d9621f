"""The store's names, defined once and importable without zarr or numpy (the CLI and the TUI read
them on their first frame): file names, the schema, the hook point, and the prompt formats and
people splits the probes compare. A choice is declared once, as a `Literal` (the settings' fields
in store/settings.py are typed by it); its tuple of values is read from it."""

from typing import Literal, get_args

STORE_NAME = "activations.zarr"  # RUN/activations.zarr: every trained model at the end of training
TRAJECTORY_NAME = "trajectory.zarr"  # RUN/trajectory.zarr: the snapshots kept along training
SCHEMA = "factrecall.activations"
VERSION = 1
ATTRS_KEY = "factrecall"  # the group attribute that holds the schema, layout and source
HALF_MADE = "factrecall_skeleton_unfinished"  # set while a skeleton is made in place (a remote store)
HOOK = "resid_mid"
CHECKSUM = "checksum"  # a CRC-32 per resid_mid chunk (a store without it is refused: dump it again)
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
