"""Plots of landings and training (matplotlib)."""
