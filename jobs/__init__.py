"""factrecall-jobs: everything that runs a model, in three sub-packages and a front door.

    jobs/cli.py      the front door: arguments in, requests built once, tables and bars out
    jobs/run/        one run: spec, run folder, people, corpus, tokenizer, model, train, evaluate,
                     capture, dump, and the pipeline that runs them in order
    jobs/launch/     where runs go: the request -> specs plan, the local queue, Slurm
    jobs/study/      the paper's study: reproduce, its dry run, the claims, the report
    jobs/words.py    the vocabulary (attributes, formats, strategies, phases, steps, statuses, labels)
    jobs/errors.py   the errors a user can cause

Each sub-package imports only those below it (study -> launch -> run -> words, errors); see
docs/architecture.md."""
