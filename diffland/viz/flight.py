"""Flight records: the per-step series of a batch of landings in one shape for every vehicle.

Plots, animations and the HTML viewer read a :class:`FlightRecord`, so they draw the
vertical lander, the planar booster, the 6-DOF booster and the point-mass lander alike.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffland.dynamics import rotation

VERTICAL_SPACING = 30.0
"""Distance between neighbouring vertical landers along x in drawings, m. A vertical
lander has no horizontal position, so a batch is drawn side by side."""


@dataclasses.dataclass
class FlightRecord:
    """Series of a batch of landings; arrays have shape ``(landers, steps, ...)``."""

    vehicle: str
    """``vertical``, ``planar``, ``rigid_body`` or ``point_mass``."""
    time: np.ndarray
    """Start time of each control step since ignition, s, shape ``(steps,)``."""
    position: np.ndarray
    """Centre of mass (x, y, z), m, z up, origin at the pad centre. Vertical landers are
    placed :data:`VERTICAL_SPACING` apart along x, and their z is the engine's altitude."""
    velocity: np.ndarray
    """Velocity (x, y, z), m/s."""
    height: np.ndarray
    """Height of the lowest point (feet or engine) above the ground, m."""
    up: np.ndarray
    """Unit body axis (nose direction) in the world frame, shape ``(..., 3)``. The
    point-mass lander has no attitude, so its record contains the thrust direction instead
    (straight up where the thrust is zero), which is where a real lander would point."""
    lean: np.ndarray
    """Lean of ``up`` towards +x and towards +y, degrees, shape ``(..., 2)``."""
    throttle: np.ndarray
    """Commanded throttle, fraction of maximum thrust. For the point-mass lander, the
    thrust magnitude it applies: the command rescaled into the throttle bounds, and 0
    once the propellant has run out."""
    gimbal: np.ndarray
    """Commanded gimbal angles, degrees, shape ``(..., 0 to 2)``."""
    active: np.ndarray
    """True for steps that began before touchdown."""

    @property
    def landers(self) -> int:
        return self.position.shape[0]

    def touchdown_index(self) -> np.ndarray:
        """Return each lander's last active step (the step during which it touched down)."""
        counts = self.active.sum(axis=1)
        return np.maximum(counts - 1, 0)


def vehicle_kind(states: Any) -> str:
    """Return ``vertical``, ``planar``, ``rigid_body`` or ``point_mass`` from the fields of
    a state."""
    if hasattr(states, "quaternion"):
        return "rigid_body"
    if hasattr(states, "pitch"):
        return "planar"
    if hasattr(states, "altitude"):
        return "vertical"
    if all(hasattr(states, name) for name in ("position", "velocity", "mass")):
        return "point_mass"
    raise ValueError(
        f"cannot draw states of type {type(states).__name__}: expected the state of "
        "VerticalLander, PlanarBooster, RigidBody or PointMassLander."
    )


def flight_record(vehicle: Any, params: Any, trajectory: Any, control_dt: float) -> FlightRecord:
    """Convert a batched :class:`~diffland.dynamics.Trajectory` into a :class:`FlightRecord`."""
    states = trajectory.states
    kind = vehicle_kind(states)
    actions = np.asarray(trajectory.actions, dtype=np.float64)
    active = np.asarray(trajectory.active, dtype=bool)
    landers, steps = active.shape
    time = np.arange(steps) * control_dt
    per_step = jax.vmap(jax.vmap(lambda s: vehicle.height(s, params)))
    height = np.asarray(per_step(states), dtype=np.float64)
    throttle = actions[..., 0]

    if kind == "vertical":
        altitude = np.asarray(states.altitude, dtype=np.float64)
        offsets = (np.arange(landers) - (landers - 1) / 2) * VERTICAL_SPACING
        position = np.stack(
            [np.broadcast_to(offsets[:, None], altitude.shape), np.zeros_like(altitude), altitude],
            axis=-1,
        )
        velocity = np.zeros_like(position)
        velocity[..., 2] = np.asarray(states.velocity)
        up = np.zeros_like(position)
        up[..., 2] = 1.0
        gimbal = np.zeros((landers, steps, 0))
    elif kind == "planar":
        x = np.asarray(states.x, dtype=np.float64)
        zeros = np.zeros_like(x)
        position = np.stack([x, zeros, np.asarray(states.z, dtype=np.float64)], axis=-1)
        velocity = np.stack([np.asarray(states.vx), zeros, np.asarray(states.vz)], axis=-1)
        pitch = np.asarray(states.pitch, dtype=np.float64)
        up = np.stack([np.sin(pitch), zeros, np.cos(pitch)], axis=-1)
        gimbal = np.degrees(actions[..., 1:2])
    elif kind == "point_mass":
        position = np.asarray(states.position, dtype=np.float64)
        velocity = np.asarray(states.velocity, dtype=np.float64)
        thrust_of = jax.vmap(jax.vmap(lambda s, a: vehicle.thrust(s, a, params)))
        thrust = np.asarray(thrust_of(states, trajectory.actions), dtype=np.float64)
        magnitude = np.linalg.norm(thrust, axis=-1)
        up = np.zeros_like(thrust)
        up[..., 2] = 1.0
        thrusting = magnitude > 0.0
        up[thrusting] = thrust[thrusting] / magnitude[thrusting, None]
        throttle = magnitude / float(params.max_thrust)
        gimbal = np.zeros((landers, steps, 0))
    else:
        position = np.asarray(states.position, dtype=np.float64)
        velocity = np.asarray(states.velocity, dtype=np.float64)
        body_up = jnp.asarray([0.0, 0.0, 1.0], dtype=states.quaternion.dtype)
        rotate = jax.vmap(jax.vmap(lambda q: rotation.rotate(q, body_up)))
        up = np.asarray(rotate(states.quaternion), dtype=np.float64)
        gimbal = np.degrees(actions[..., 1:3])

    lean = np.degrees(
        np.stack([np.arctan2(up[..., 0], up[..., 2]), np.arctan2(up[..., 1], up[..., 2])], axis=-1)
    )
    return FlightRecord(
        vehicle=kind,
        time=time,
        position=position,
        velocity=velocity,
        height=height,
        up=up,
        lean=lean,
        throttle=throttle,
        gimbal=gimbal,
        active=active,
    )
