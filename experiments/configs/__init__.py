"""Experiment configs: one `get_config(arg=None)` per experiment."""
