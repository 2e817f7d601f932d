"""Matplotlib figures of landings and training curves, written to files (Agg backend)."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from diffland.dynamics.simulate import Trajectory  # noqa: E402
from diffland.training.callbacks import MetricsHistory  # noqa: E402
from diffland.viz.flight import FlightRecord  # noqa: E402


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


def _series_grid(records, rows, draw, landers):
    """Draw one column per controller and one row per entry of ``rows`` (y labels).

    ``draw(axes_column, record, lander, steps)`` plots one lander's active steps.
    """
    names = list(records)
    figure, axes = plt.subplots(
        len(rows), len(names), figsize=(4 * len(names), 2.8 * len(rows)), squeeze=False
    )
    for column, name in enumerate(names):
        record = records[name]
        for lander in range(min(landers, record.landers)):
            steps = np.flatnonzero(record.active[lander])
            draw(axes[:, column], record, lander, steps)
        axes[0, column].set_title(name)
        for row, label in enumerate(rows):
            axes[row, column].set_ylabel(label)
    return figure, axes


def plot_phase_portrait(
    records: Mapping[str, FlightRecord], path: str | pathlib.Path, landers: int = 8
) -> pathlib.Path:
    """Plot height of the lowest point against vertical velocity, one panel per controller.

    A landing ends at the origin: zero height at zero speed. Steps after touchdown are
    left out.
    """

    def draw(column, record, lander, steps):
        column[0].plot(record.velocity[lander, steps, 2], record.height[lander, steps])
        column[0].plot([0.0], [0.0], "k+", markersize=12)
        column[0].set_xlabel("vertical velocity (m/s)")

    figure, _ = _series_grid(records, ("height (m)",), draw, landers)
    figure.tight_layout()
    return _save(figure, path)


def plot_ground_track(
    records: Mapping[str, FlightRecord], path: str | pathlib.Path, landers: int = 8
) -> pathlib.Path:
    """Plot each lander's path over the ground (x, y) relative to the pad centre, m.

    A planar booster moves along x only, so its track is drawn against height instead.
    Vertical landers have no horizontal motion; raises ``ValueError`` for them.
    """
    kinds = {record.vehicle for record in records.values()}
    if kinds == {"vertical"}:
        raise ValueError("vertical landers have no ground track; plot_phase_portrait fits them.")

    def draw(column, record, lander, steps):
        if record.vehicle == "planar":
            column[0].plot(record.position[lander, steps, 0], record.height[lander, steps])
            column[0].set_xlabel("x (m)")
        else:
            column[0].plot(record.position[lander, steps, 0], record.position[lander, steps, 1])
            column[0].set_xlabel("x (m)")
            column[0].set_aspect("equal", adjustable="datalim")
        column[0].plot([0.0], [0.0], "k+", markersize=12)

    label = "height (m)" if kinds == {"planar"} else "y (m)"
    figure, _ = _series_grid(records, (label,), draw, landers)
    figure.tight_layout()
    return _save(figure, path)


def plot_controls(
    records: Mapping[str, FlightRecord], path: str | pathlib.Path, landers: int = 8
) -> pathlib.Path:
    """Plot commanded throttle and gimbal angles (degrees) against time since ignition.

    The gimbal row is left out for the vertical lander, which has no gimbal. For the
    6-DOF booster both gimbal axes are drawn, the second dashed.
    """
    has_gimbal = any(record.gimbal.shape[-1] for record in records.values())
    rows = ("throttle", "gimbal (deg)") if has_gimbal else ("throttle",)

    def draw(column, record, lander, steps):
        time = record.time[steps]
        line = column[0].plot(time, record.throttle[lander, steps])[0]
        for axis_index in range(record.gimbal.shape[-1] if has_gimbal else 0):
            style = "-" if axis_index == 0 else "--"
            column[1].plot(
                time, record.gimbal[lander, steps, axis_index], style, color=line.get_color()
            )
        column[-1].set_xlabel("time since ignition (s)")

    figure, _ = _series_grid(records, rows, draw, landers)
    figure.tight_layout()
    return _save(figure, path)


def plot_attitude(
    records: Mapping[str, FlightRecord], path: str | pathlib.Path, landers: int = 8
) -> pathlib.Path:
    """Plot the lean of the body axis towards +x and +y (degrees) against time.

    For the planar booster the lean towards +x is its pitch. The point-mass lander has no
    body axis, so its panels show the tilt of the thrust from vertical instead. Raises
    ``ValueError`` for vertical landers, which always point straight up.
    """
    kinds = {record.vehicle for record in records.values()}
    if kinds == {"vertical"}:
        raise ValueError("vertical landers have no attitude to plot; they always point up.")

    def draw(column, record, lander, steps):
        time = record.time[steps]
        column[0].plot(time, record.lean[lander, steps, 0])
        column[1].plot(time, record.lean[lander, steps, 1])
        column[1].set_xlabel("time since ignition (s)")

    if kinds == {"point_mass"}:
        rows = ("thrust tilt towards +x (deg)", "thrust tilt towards +y (deg)")
    else:
        rows = ("lean towards +x (deg)", "lean towards +y (deg)")
    figure, _ = _series_grid(records, rows, draw, landers)
    figure.tight_layout()
    return _save(figure, path)


def training_histories(
    metrics_path: str | pathlib.Path, seed: int = 0
) -> dict[str, MetricsHistory]:
    """Read ``metrics.jsonl`` of a run into one history per controller of ``seed``."""
    controllers = []
    with pathlib.Path(metrics_path).open() as handle:
        for line in handle:
            record = json.loads(line)
            name = record.get("controller")
            if record.get("seed") == seed and name is not None and name not in controllers:
                controllers.append(name)
    return {
        name: MetricsHistory.from_jsonl(metrics_path, controller=name, seed=seed)
        for name in controllers
    }


def _save(figure, path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
