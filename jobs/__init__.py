"""factrecall-jobs: everything that runs a model — data, training, evaluation (see jobs/cli.py)."""
