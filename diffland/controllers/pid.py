"""A PID landing controller for the vertical lander with gains learnable by gradient.

Reference profile. The altitude error (the height ``h`` above the target, the ground)
sets a reference velocity: the descent that stops at touchdown speed ``v_td`` when
braking at a fraction ``beta`` of the full-throttle deceleration ``a_max(m)``::

    v_ref(h) = -sqrt(v_td^2 + 2 * beta * a_max(m) * h)

Command. The velocity error ``e = v_ref(h) - v`` (positive when descending faster than
the reference) drives the three terms, on top of the feedforward throttle that keeps the
reference deceleration, ``u_ff = m * (g + beta * a_max) / T_max``::

    command = u_ff + kp * e + ki * integral(e dt) + kd * de/dt

A booster that starts above the profile (slower than ``v_ref``) gets a negative error, so
it commands minimum throttle until it meets the profile and then brakes along it. This is
the shape of the fuel-optimal burn, and ``beta`` sets how late the braking starts.

Positivity. Every gain and ``v_td`` is stored as an unconstrained number ``p`` and used as
``softplus(p)``; ``beta = sigmoid(p)`` stays in (0, 1).

Anti-windup. The integral is frozen while the command is beyond a throttle bound and the
error would push it further out (conditional integration), and it is clipped to
``+-integral_limit``.

Output. The command is mapped into the throttle bounds by
:func:`~diffland.controllers.bounds.bounded_action`, whose slope stays positive beyond
the bounds, so a saturated PID still passes a gradient to its gains.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from diffland.controllers.bounds import bounded_action
from diffland.dynamics.vertical import VerticalLander, VerticalParams, VerticalState


@dataclasses.dataclass(frozen=True)
class PIDGains:
    """Gains and reference settings of :class:`VerticalPID` in physical units."""

    kp: float = 0.05
    """Proportional gain, throttle per (m/s) of velocity error."""
    ki: float = 0.005
    """Integral gain, throttle per m of integrated velocity error."""
    kd: float = 0.005
    """Derivative gain, throttle per (m/s^2) of velocity-error rate."""
    decel_fraction: float = 0.7
    """beta: fraction of the full-throttle deceleration the reference brakes at, in (0, 1)."""
    touchdown_speed: float = 1.0
    """v_td: reference speed at the ground, m/s."""

    def __post_init__(self):
        for name in ("kp", "ki", "kd", "touchdown_speed"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
                raise ValueError(f"PIDGains.{name} = {value!r} must be a positive number.")
        if not 0.0 < self.decel_fraction < 1.0:
            raise ValueError(
                f"PIDGains.decel_fraction = {self.decel_fraction!r} must lie strictly "
                "between 0 and 1."
            )


HAND_TUNED_GAINS = PIDGains()
"""Gains chosen by hand for the Falcon-9-like landing burn; the start of gradient tuning."""


@struct.dataclass
class PIDCarry:
    """Controller memory carried through a rollout; fields have shape ``()``."""

    integral: jax.Array
    """Integral of the velocity error, m."""
    previous_error: jax.Array
    """Velocity error at the previous control step, m/s."""
    started: jax.Array
    """False before the first step, so the derivative term starts at zero."""


def _inverse_softplus(value: float) -> float:
    return math.log(math.expm1(value))


def _logit(value: float) -> float:
    return math.log(value / (1.0 - value))


class VerticalPID(nn.Module):
    """PID on the velocity error relative to an altitude-scheduled reference velocity."""

    vehicle: VerticalLander
    control_dt: float
    """Time between calls, s (the derivative and integral use it)."""
    gains: PIDGains = HAND_TUNED_GAINS
    """Initial gains; gradient tuning starts here."""
    integral_limit: float = 100.0
    """Clip of the integral state, m."""

    def setup(self):
        g = self.gains
        self.kp_raw = self.param("kp", nn.initializers.constant(_inverse_softplus(g.kp)), ())
        self.ki_raw = self.param("ki", nn.initializers.constant(_inverse_softplus(g.ki)), ())
        self.kd_raw = self.param("kd", nn.initializers.constant(_inverse_softplus(g.kd)), ())
        self.beta_raw = self.param(
            "decel_fraction", nn.initializers.constant(_logit(g.decel_fraction)), ()
        )
        self.v_td_raw = self.param(
            "touchdown_speed", nn.initializers.constant(_inverse_softplus(g.touchdown_speed)), ()
        )

    def gains_from_params(self, params: Any) -> PIDGains:
        """Return the physical gains stored in a ``params`` collection of this module."""
        values = self.apply({"params": params}, method=VerticalPID.effective_gains)
        return PIDGains(**{name: float(value) for name, value in values.items()})

    def effective_gains(self) -> dict[str, jax.Array]:
        """Return the constrained gains in physical units."""
        return {
            "kp": nn.softplus(self.kp_raw),
            "ki": nn.softplus(self.ki_raw),
            "kd": nn.softplus(self.kd_raw),
            "decel_fraction": nn.sigmoid(self.beta_raw),
            "touchdown_speed": nn.softplus(self.v_td_raw),
        }

    def command(
        self, state: VerticalState, params: VerticalParams, carry: PIDCarry
    ) -> tuple[jax.Array, PIDCarry]:
        """Return the unbounded throttle command, shape ``(1,)``, and the updated carry."""
        gains = self.effective_gains()
        beta = gains["decel_fraction"]
        a_max = jnp.maximum(self.vehicle.max_deceleration(state, params), 0.1)
        altitude = jnp.maximum(state.altitude, 0.0)
        v_ref = -jnp.sqrt(gains["touchdown_speed"] ** 2 + 2.0 * beta * a_max * altitude)
        error = v_ref - state.velocity
        feedforward = state.mass * (params.gravity + beta * a_max) / params.max_thrust

        rate = jnp.where(carry.started, (error - carry.previous_error) / self.control_dt, 0.0)
        command = (
            feedforward + gains["kp"] * error + gains["ki"] * carry.integral + gains["kd"] * rate
        )

        pushes_high = (command > params.throttle_max) & (error > 0)
        pushes_low = (command < params.throttle_min) & (error < 0)
        integrate = ~(pushes_high | pushes_low)
        integral = carry.integral + jnp.where(integrate, error * self.control_dt, 0.0)
        integral = jnp.clip(integral, -self.integral_limit, self.integral_limit)
        new_carry = PIDCarry(
            integral=integral, previous_error=error, started=jnp.ones_like(carry.started)
        )
        return jnp.reshape(command, (1,)), new_carry

    def __call__(self, state, params, carry):
        command, carry = self.command(state, params, carry)
        low, high = self.vehicle.action_bounds(params)
        return bounded_action(command, low, high), carry

    def initial_carry(self, dtype=jnp.float32) -> PIDCarry:
        return initial_pid_carry(dtype)


def initial_pid_carry(dtype=jnp.float32) -> PIDCarry:
    """Return the PID memory at the start of a rollout: zero integral, no previous error."""
    zero = jnp.zeros((), dtype)
    return PIDCarry(integral=zero, previous_error=zero, started=jnp.array(False))
