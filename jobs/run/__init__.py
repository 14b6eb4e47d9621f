"""One run, start to end: its spec (`spec.py`), its folder on disk (`folder.py`), and the steps that
fill it in the paper's order: people (`people.py`), BIO entries and prompts (`corpus.py`), the
tokenizer (`tokenizer.py`), the model (`model.py`), training (`train.py`), exact-match evaluation
(`evaluate.py`), the capture of resid_mid (`capture.py`) and the activation store (`dump.py`).
`pipeline.py` runs them (`reuse.py`: a phase another run trained identically, linked); `markers.py`
says what a step's done marker holds, `stop.py` how a job is asked to stop; `checkpoints.py` says
where each model of a run lives; `tables.py` and `curves.py` show what runs measured.

Nothing here imports `jobs.launch` or `jobs.study` (checked by the import-linter contracts in
pyproject.toml)."""
