"""Where and how runs are launched: a request turned into validated specs (`plan.py`), the workspace's
local queue (`queue.py`, its entries on disk in `queue_entries.py`) and its worker (`worker.py`), the
Slurm executor through submitit (`slurm.py`; what a job asks of Slurm, checked against `sinfo`, in
`slurm_options.py`), and the process checks they share (`procs.py`). Jobs are `factrecall-jobs
resume RUN` processes; nothing here imports torch, so the TUI can use it."""
