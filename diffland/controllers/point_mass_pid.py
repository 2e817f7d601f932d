"""A PID landing controller for the point-mass lander, with an optional neural correction.

Reference velocity. The vertical part brakes like :class:`~diffland.controllers.pid.
VerticalPID`: the descent that stops at touchdown speed ``v_td`` when braking at a
fraction ``beta`` of the full-thrust deceleration ``a_max(m)``, capped at the descent
speed ``v_cap``::

    w(h) = min(sqrt(v_td^2 + 2 beta a_max(m) h), v_td + h / tau, v_cap),    v_ref_z = -w(h)

The middle term takes over in the last metres. There the square root falls faster than a
controller with a step of a few tenths of a second can follow, so the reference speed
decays towards ``v_td`` with the time constant ``tau`` instead.

The horizontal part points the reference at the target along the line of sight, so a
lander that follows it keeps the ratio of horizontal distance to altitude and stays inside
a glide-slope cone it starts in::

    v_ref_xy = -r_xy * w(h) / max(h, h_floor),  its magnitude capped at v_lat

Command. The velocity error ``e = v_ref - v`` (a 3-vector) drives the three terms, on top
of the feedforward acceleration that cancels gravity and keeps the reference braking,
``a_ff = (g + w dw/dh) e_z`` (``beta a_max`` on the square-root branch, ``w / tau`` on the
final one, zero at the cap)::

    a_cmd = a_ff + kp * e + ki * integral(e dt) + kd * de/dt
    action = m * a_cmd / T_max     (z at least throttle_min, each component in [-1, 1])

The vehicle then scales the thrust vector into its magnitude bounds. The clip is a hard
one, unlike the tanh of :func:`~diffland.controllers.bounds.bounded_action`: a tanh over
[-1, 1] would turn a command for 80 % thrust into 66 %, and the feedback would need a
velocity error of about 13 m/s to make up for it. A lander slower than
the reference gets a negative vertical error and so commands the minimum thrust until it
meets the braking profile, the shape of the fuel-optimal descent.

Positivity. Every gain, ``v_td``, ``v_cap``, ``v_lat`` and ``tau`` is stored as an unconstrained
number ``p`` and used as ``softplus(p)``; ``beta = sigmoid(p)``.

Anti-windup. The integral is frozen while the thrust command is beyond the maximum
magnitude or its vertical part below the minimum, and the vertical error would push it
further out (conditional integration), and each
component is clipped to ``+-integral_limit``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from diffland.controllers.mlp import MLP
from diffland.dynamics.base import safe_norm
from diffland.dynamics.point_mass import PointMassLander, PointMassParams, PointMassState


@dataclasses.dataclass(frozen=True)
class PointMassGains:
    """Gains and reference settings of :class:`PointMassPID` in physical units."""

    kp: float = 0.5
    """Proportional gain, (m/s^2) per (m/s) of velocity error."""
    ki: float = 0.002
    """Integral gain, (m/s^2) per m of integrated velocity error."""
    kd: float = 0.05
    """Derivative gain, (m/s^2) per (m/s^2) of velocity-error rate."""
    decel_fraction: float = 0.7
    """beta: fraction of the full-thrust deceleration the reference brakes at, in (0, 1)."""
    touchdown_speed: float = 1.0
    """v_td: reference descent speed at the ground, m/s."""
    descent_speed_cap: float = 70.0
    """v_cap: largest reference descent speed, m/s (below the 90 m/s speed limit)."""
    lateral_speed_cap: float = 20.0
    """v_lat: largest reference horizontal speed, m/s."""
    terminal_time: float = 2.0
    """tau: time constant of the final descent, s; see the module docstring."""

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
                raise ValueError(f"PointMassGains.{field.name} = {value!r} must be positive.")
        if not self.decel_fraction < 1.0:
            raise ValueError(
                f"PointMassGains.decel_fraction = {self.decel_fraction!r} must lie strictly "
                "between 0 and 1."
            )


POINT_MASS_GAINS = PointMassGains()
"""Gains chosen by hand for the Mars reference scenario; the start of gradient tuning."""


@struct.dataclass
class PointMassPIDCarry:
    """Controller memory carried through a rollout."""

    integral: jax.Array
    """Integral of the velocity error, m, shape ``(3,)``."""
    previous_error: jax.Array
    """Velocity error at the previous control step, m/s, shape ``(3,)``."""
    started: jax.Array
    """False before the first step, so the derivative term starts at zero."""


def initial_point_mass_carry(dtype=jnp.float32) -> PointMassPIDCarry:
    """Return the memory at the start of a rollout: zero integral, no previous error."""
    zero = jnp.zeros((3,), dtype)
    return PointMassPIDCarry(integral=zero, previous_error=zero, started=jnp.array(False))


def _inverse_softplus(value: float) -> float:
    return math.log(math.expm1(value))


class PointMassPID(nn.Module):
    """PID on the velocity error relative to a braking, line-of-sight reference velocity."""

    vehicle: PointMassLander
    control_dt: float
    """Time between calls, s (the derivative and integral use it)."""
    gains: PointMassGains = POINT_MASS_GAINS
    """Initial gains; gradient tuning starts here."""
    integral_limit: float = 20.0
    """Clip of each component of the integral, m."""
    altitude_floor: float = 20.0
    """h_floor: altitude below which the line-of-sight ratio stops growing, m."""

    def setup(self):
        g = self.gains
        softplus_names = (
            "kp",
            "ki",
            "kd",
            "touchdown_speed",
            "descent_speed_cap",
            "lateral_speed_cap",
            "terminal_time",
        )
        self.raw = {
            name: self.param(
                name, nn.initializers.constant(_inverse_softplus(getattr(g, name))), ()
            )
            for name in softplus_names
        }
        beta = g.decel_fraction
        self.beta_raw = self.param(
            "decel_fraction", nn.initializers.constant(math.log(beta / (1.0 - beta))), ()
        )

    def effective_gains(self) -> dict[str, jax.Array]:
        """Return the constrained gains in physical units."""
        gains = {name: nn.softplus(value) for name, value in self.raw.items()}
        gains["decel_fraction"] = nn.sigmoid(self.beta_raw)
        return gains

    def gains_from_params(self, params: Any) -> PointMassGains:
        """Return the physical gains stored in a ``params`` collection of this module."""
        values = self.apply({"params": params}, method=PointMassPID.effective_gains)
        return PointMassGains(**{name: float(value) for name, value in values.items()})

    def reference_velocity(
        self, state: PointMassState, params: PointMassParams, gains: dict[str, jax.Array]
    ) -> tuple[jax.Array, jax.Array]:
        """Return the reference velocity ``v_ref`` of the module docstring, m/s, and the
        deceleration along the vertical reference, ``w dw/dh``, m/s^2."""
        beta = gains["decel_fraction"]
        a_max = jnp.maximum(
            params.throttle_max * params.max_thrust / state.mass - params.gravity, 0.1
        )
        altitude = jnp.maximum(state.position[2], 0.0)
        braking = jnp.sqrt(gains["touchdown_speed"] ** 2 + 2.0 * beta * a_max * altitude)
        terminal = gains["touchdown_speed"] + altitude / gains["terminal_time"]
        cap = gains["descent_speed_cap"]
        descent = jnp.minimum(jnp.minimum(braking, terminal), cap)
        deceleration = jnp.where(
            terminal <= jnp.minimum(braking, cap),
            terminal / gains["terminal_time"],
            jnp.where(braking <= cap, beta * a_max, 0.0),
        )
        lateral = -state.position[:2] * descent / jnp.maximum(altitude, self.altitude_floor)
        size = safe_norm(lateral)
        lateral_cap = gains["lateral_speed_cap"]
        lateral = lateral * jnp.minimum(1.0, lateral_cap / jnp.maximum(size, 1e-6))
        return jnp.concatenate([lateral, -descent[None]]), deceleration

    def command(
        self, state: PointMassState, params: PointMassParams, carry: PointMassPIDCarry
    ) -> tuple[jax.Array, PointMassPIDCarry]:
        """Return the unbounded action (thrust over ``max_thrust``) and the updated carry."""
        gains = self.effective_gains()
        reference, deceleration = self.reference_velocity(state, params, gains)
        error = reference - state.velocity
        rate = jnp.where(carry.started, (error - carry.previous_error) / self.control_dt, 0.0)
        feedforward = jnp.zeros_like(error).at[2].set(params.gravity + deceleration)
        acceleration = (
            feedforward + gains["kp"] * error + gains["ki"] * carry.integral + gains["kd"] * rate
        )
        command = state.mass * acceleration / params.max_thrust
        pushes_high = (safe_norm(command) > params.throttle_max) & (error[2] > 0)
        pushes_low = (command[2] < params.throttle_min) & (error[2] < 0)
        # The engine cannot be shut down, so a request for less than the minimum thrust
        # becomes the minimum thrust pointing up rather than thrust pointing down.
        command = command.at[2].set(jnp.maximum(command[2], params.throttle_min))
        integrate = ~(pushes_high | pushes_low)
        integral = carry.integral + jnp.where(integrate, error * self.control_dt, 0.0)
        integral = jnp.clip(integral, -self.integral_limit, self.integral_limit)
        new_carry = PointMassPIDCarry(
            integral=integral, previous_error=error, started=jnp.ones_like(carry.started)
        )
        return command, new_carry

    def __call__(self, state, params, carry):
        command, carry = self.command(state, params, carry)
        low, high = self.vehicle.action_bounds(params)
        return jnp.clip(command, low, high), carry

    def initial_carry(self, dtype=jnp.float32) -> PointMassPIDCarry:
        return initial_point_mass_carry(dtype)


class NeuroPointMassPID(nn.Module):
    """:class:`PointMassPID` plus ``correction_scale * MLP(observation)`` on its command.

    The MLP's output layer starts at zero, so an untrained controller returns exactly the
    actions of its PID. The PID gains train together with the network.
    """

    vehicle: PointMassLander
    control_dt: float
    gains: PointMassGains = POINT_MASS_GAINS
    hidden: tuple[int, ...] = (64, 64)
    correction_scale: float = 0.1
    """Action units (fractions of ``max_thrust``) per unit of network output."""
    param_dtype: Any = jnp.float32

    def setup(self):
        self.pid = PointMassPID(self.vehicle, self.control_dt, self.gains)
        self.correction = MLP(
            self.hidden, self.vehicle.action_size, zero_output=True, param_dtype=self.param_dtype
        )

    def __call__(self, state, params, carry):
        command, carry = self.pid.command(state, params, carry)
        features = self.vehicle.observation(state, params)
        command = command + self.correction_scale * self.correction(features)
        low, high = self.vehicle.action_bounds(params)
        return jnp.clip(command, low, high), carry

    def initial_carry(self, dtype=jnp.float32) -> PointMassPIDCarry:
        return initial_point_mass_carry(dtype)
