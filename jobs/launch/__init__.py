"""Where and how runs are launched: a request turned into validated specs (`plan.py`), the workspace's
local queue and its worker (`queue.py`), the Slurm executor through submitit (`slurm.py`), and the
process checks they share (`procs.py`). Jobs are `factrecall-jobs resume RUN` processes; nothing here
imports torch, so the TUI can use it."""
