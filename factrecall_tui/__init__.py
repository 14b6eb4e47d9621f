"""factrecall-tui: a Textual app to launch and follow jobs, browse accuracies, and fit probes."""
