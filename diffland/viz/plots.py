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


def _booster_series(vehicle, params, states):
    """Return horizontal position (n, 2), height and tilt (degrees) of a booster's steps."""
    import jax

    height = np.asarray(jax.vmap(lambda s: vehicle.height(s, params))(states))
    tilt = np.degrees(
        np.asarray(jax.vmap(lambda s: vehicle.touchdown_measures(s, params).tilt)(states))
    )
    if hasattr(states, "position"):
        ground = np.asarray(states.position)[:, :2]
    else:
        ground = np.stack([np.asarray(states.x), np.zeros_like(np.asarray(states.x))], axis=-1)
    return ground, height, tilt


def plot_booster_landings(
    trajectories: Mapping[str, Trajectory],
    vehicle,
    params,
    control_dt: float,
    path: str | pathlib.Path,
    landers: int = 4,
) -> pathlib.Path:
    """Plot ground track, height, tilt, gimbal and throttle of planar or 6-DOF landings.

    The ground track of a 6-DOF booster is its path over the ground (x, y); that of a
    planar booster is its path in the x-height plane.

    One column per controller, the first ``landers`` landers of each batched trajectory;
    steps after touchdown are left out. Gimbal angles are the commanded ones, in degrees.
    """
    import jax

    names = list(trajectories)
    # A planar booster moves along x only, so its track is drawn in the x-height plane.
    planar = not hasattr(next(iter(trajectories.values())).states, "position")
    rows = ("ground track", "height of the feet (m)", "tilt (deg)", "gimbal (deg)", "throttle")
    figure, axes = plt.subplots(
        len(rows), len(names), figsize=(4 * len(names), 3 * len(rows)), squeeze=False
    )
    for column, name in enumerate(names):
        trajectory = trajectories[name]
        active = np.asarray(trajectory.active)
        for lander in range(min(landers, active.shape[0])):
            steps = np.flatnonzero(active[lander])
            states = jax.tree_util.tree_map(lambda x, i=lander: x[i], trajectory.states)
            ground, height, tilt = _booster_series(vehicle, params, states)
            time = steps * control_dt
            actions = np.asarray(trajectory.actions)[lander, steps]
            if planar:
                axes[0, column].plot(ground[steps, 0], height[steps])
            else:
                axes[0, column].plot(ground[steps, 0], ground[steps, 1])
            axes[1, column].plot(time, height[steps])
            axes[2, column].plot(time, tilt[steps])
            for axis_index in range(1, min(actions.shape[1], 3)):
                axes[3, column].plot(time, np.degrees(actions[:, axis_index]))
            axes[4, column].plot(time, actions[:, 0])
        axes[0, column].set_title(name)
        axes[0, column].set_xlabel("x (m)")
        axes[0, column].set_ylabel("height of the feet (m)" if planar else "y (m)")
        axes[0, column].plot([0.0], [0.0], "k+", markersize=12)
        for row, label in enumerate(rows[1:], start=1):
            axes[row, column].set_ylabel(label)
        axes[-1, column].set_xlabel("time since ignition (s)")
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
