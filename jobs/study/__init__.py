"""The paper's whole study over several runs: planning and running it (`reproduce.py`), the cost of a
plan (`dryrun.py`, its cost model in `costs.py`), the paper's claims and the rules that judge them
(`claims.py`), and the report (`report.py`: report.json, report.md and its figures)."""
