"""The cached-activation store (Zarr) and the analysis over it: probes, delta_rep, delta_mech.

It imports nothing from `jobs` or `factrecall_tui`. Its layout and API arrive with issue 4.
"""
