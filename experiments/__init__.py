"""Experiments: one module per experiment, run as `python -m experiments.<name>`."""
