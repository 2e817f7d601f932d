"""Animated landings of a batch of landers, written as GIF (Pillow) or MP4 (ffmpeg)."""

from __future__ import annotations

import logging
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import animation  # noqa: E402

from diffland.viz.flight import FlightRecord  # noqa: E402

logger = logging.getLogger(__name__)

BODY_LENGTH = 40.0
"""Drawn length of a booster's body, m (about a Falcon 9 first stage)."""


def _frame_steps(record: FlightRecord, frames: int) -> np.ndarray:
    """Return the control steps shown in each frame, evenly spaced up to the last touchdown."""
    last = int(record.touchdown_index().max())
    return np.unique(np.linspace(0, last, num=max(frames, 2)).round().astype(int))


def _held(record: FlightRecord, step: int) -> np.ndarray:
    """Return each lander's index at ``step``, held at its touchdown step afterwards."""
    return np.minimum(step, record.touchdown_index())


def animate_landings(
    record: FlightRecord,
    path: str | pathlib.Path,
    title: str = "",
    frames: int = 60,
    fps: int = 15,
) -> pathlib.Path:
    """Write an animation of every lander in ``record`` and return its path.

    The file type follows the suffix: ``.gif`` uses Pillow; ``.mp4`` needs ffmpeg and
    raises ``RuntimeError`` without it. The 6-DOF booster and the point-mass lander are
    drawn in 3-D, the others in the x-height plane. Bodies are drawn :data:`BODY_LENGTH`
    long along the body axis (the thrust direction for the point-mass lander) and the
    exhaust in proportion to the throttle. Each lander stays where it touched down.
    """
    path = pathlib.Path(path)
    if path.suffix == ".mp4":
        if not animation.FFMpegWriter.isAvailable():
            raise RuntimeError(
                f"cannot write {path}: ffmpeg is not installed. Install ffmpeg, or write a .gif."
            )
        writer = animation.FFMpegWriter(fps=fps)
    elif path.suffix == ".gif":
        writer = animation.PillowWriter(fps=fps)
    else:
        raise ValueError(f"animation path {path} is invalid: use a .gif or .mp4 suffix.")

    three_d = record.vehicle in ("rigid_body", "point_mass")
    figure = plt.figure(figsize=(6, 6))
    axis = figure.add_subplot(projection="3d") if three_d else figure.add_subplot()
    steps = _frame_steps(record, frames)
    landers = np.arange(record.landers)
    colours = plt.get_cmap("tab10")(landers % 10)

    span = np.abs(record.position[..., :2]).max() + BODY_LENGTH
    top = record.position[..., 2].max() * 1.05 + BODY_LENGTH

    def draw(frame: int):
        step = steps[frame]
        index = _held(record, step)
        axis.cla()

        position = record.position[landers, index]
        up = record.up[landers, index]
        throttle = record.throttle[landers, index]
        nose = position + up * BODY_LENGTH / 2
        tail = position - up * BODY_LENGTH / 2
        # No exhaust once a lander has touched down.
        burning = throttle * record.active[landers, index]
        plume = tail - up * BODY_LENGTH * burning[:, None]

        for lander in landers:
            path_so_far = record.position[lander, : index[lander] + 1]
            body = np.stack([tail[lander], nose[lander]])
            flame = np.stack([plume[lander], tail[lander]])
            if three_d:
                axis.plot(*path_so_far.T, color=colours[lander], linewidth=0.8, alpha=0.6)
                axis.plot(*body.T, color="0.2", linewidth=3)
                axis.plot(*flame.T, color="orange", linewidth=2)
            else:
                axis.plot(path_so_far[:, 0], path_so_far[:, 2], color=colours[lander], lw=0.8)
                axis.plot(body[:, 0], body[:, 2], color="0.2", linewidth=3)
                axis.plot(flame[:, 0], flame[:, 2], color="orange", linewidth=2)

        if three_d:
            axis.set_xlim(-span, span)
            axis.set_ylim(-span, span)
            axis.set_zlim(0, top)
            axis.set_xlabel("x (m)")
            axis.set_ylabel("y (m)")
            axis.set_zlabel("z (m)")
        else:
            axis.set_xlim(-span, span)
            axis.set_ylim(0, top)
            axis.axhline(0.0, color="0.5", linewidth=1)
            axis.set_xlabel("x (m)")
            axis.set_ylabel("height (m)")
        axis.set_title(f"{title}  t = {record.time[step]:.1f} s".strip())
        return ()

    movie = animation.FuncAnimation(figure, draw, frames=len(steps), blit=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    movie.save(str(path), writer=writer)
    plt.close(figure)
    logger.info("wrote %s (%d frames)", path, len(steps))
    return path
