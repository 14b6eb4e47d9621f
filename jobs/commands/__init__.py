"""The verbs of `factrecall-jobs`, one `cmd_*` each, grouped by what they work on:

    runs.py      run, reproduce, submit, resume: data, training, evaluation, the study
    manage.py    status, cancel, archive, delete, worker, show, compare, plot, presets, models
    analysis.py  dump, export, probe, patch: the activation store and what is computed from it

Each takes the typed options its verb declares (jobs/options.py) and the workspace, calls into
jobs.run, jobs.launch or jobs.study, and prints what came back as rich text. Each imports what it
needs inside its function: `factrecall-jobs status` or `--help` must not pay for torch,
transformers and zarr, which only the verbs that run a model or read a store load.
"""
