"""Runnable experiments: ``python -m experiments.<name> [--quick] [--out DIR] [--resume]``."""
