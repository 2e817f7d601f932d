"""Matplotlib figures of landings and training curves, written to files (Agg backend)."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from diffland.dynamics.simulate import Trajectory  # noqa: E402
from diffland.training.callbacks import MetricsHistory  # noqa: E402


def plot_vertical_landings(
    trajectories: Mapping[str, Trajectory],
    control_dt: float,
    path: str | pathlib.Path,
    landers: int = 4,
) -> pathlib.Path:
    """Plot altitude, velocity and throttle against time for the first ``landers`` landers.

    ``trajectories`` maps a controller name to a batched trajectory of the vertical lander.
    Steps after touchdown are left out.
    """
    names = list(trajectories)
    figure, axes = plt.subplots(3, len(names), figsize=(4 * len(names), 8), squeeze=False)
    for column, name in enumerate(names):
        trajectory = trajectories[name]
        active = np.asarray(trajectory.active)
        count = min(landers, active.shape[0])
        for lander in range(count):
            steps = np.flatnonzero(active[lander])
            time = steps * control_dt
            states = trajectory.states
            axes[0, column].plot(time, np.asarray(states.altitude)[lander, steps])
            axes[1, column].plot(time, np.asarray(states.velocity)[lander, steps])
            axes[2, column].plot(time, np.asarray(trajectory.actions)[lander, steps, 0])
        axes[0, column].set_title(name)
        axes[0, column].set_ylabel("altitude (m)")
        axes[1, column].set_ylabel("velocity (m/s)")
        axes[2, column].set_ylabel("throttle")
        axes[2, column].set_xlabel("time since ignition (s)")
    figure.tight_layout()
    return _save(figure, path)


def plot_training_curves(
    histories: Mapping[str, MetricsHistory],
    path: str | pathlib.Path,
    metrics: tuple[str, ...] = ("train/loss", "train/success_rate", "train/grad_norm"),
) -> pathlib.Path:
    """Plot the given metrics against the update step, one panel each, one line a run."""
    figure, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5), squeeze=False)
    for panel, metric in enumerate(metrics):
        axis = axes[0, panel]
        for name, history in histories.items():
            steps, values = history.series(metric)
            if steps:
                axis.plot(steps, values, label=name)
        axis.set_title(metric)
        axis.set_xlabel("update")
        if metric in ("train/loss", "train/grad_norm"):
            axis.set_yscale("log")
        axis.legend()
    figure.tight_layout()
    return _save(figure, path)


def _save(figure, path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
