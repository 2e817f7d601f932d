"""Cascaded PID landing controllers for the planar and 6-DOF boosters, gains learnable.

Outer loop (position and velocity, world frame, z up). It commands an acceleration.

- Vertical: the PID of :class:`~diffland.controllers.pid.VerticalPID`, in acceleration
  units. The height ``h`` of the feet sets the reference ``v_ref = -sqrt(v_td^2 + 2 beta
  a_max h)``, and the velocity error ``e = v_ref - v_z`` gives
  ``a_z = beta a_max + kp e + ki integral(e) + kd de/dt``.
- Horizontal: the pad is at the origin. With a time to go ``t_go = 2 h / (|v_z| + v_td)``
  (constant deceleration to the ground, floored at ``min_time_to_go``), the command
  ``a_h = -k_r r_h / t_go^2 - k_v v_h / t_go`` brings position and velocity to zero
  together. With ``k_r = 6`` and ``k_v = 4`` it is the minimum-energy law of a double
  integrator with both end conditions fixed.

The thrust per unit mass needed is ``f = (a_h, a_z + g)``. Its horizontal part is
saturated smoothly so that its tilt from the vertical stays below ``max_tilt_deg``. The
throttle command is ``m (f . b) / T_max`` with the current body axis ``b``, so a vehicle
that has not yet turned does not overshoot vertically.

Inner loop (attitude). The desired body axis is ``f / |f|``. The attitude error is the
rotation vector ``b x f_hat`` (the sine of the angle about the axis that turns ``b``
onto ``f_hat``), which is smooth at zero error. A PD law gives the angular acceleration
``alpha = k_att e - k_rate omega``. The gimbal angle that produces it is
``delta = asin(I alpha / (l_e T))`` (clipped). The model inverse uses the current mass,
inertia and thrust, so the gains mean the same at any mass. For the 6-DOF booster this
acts about the two body axes that the gimbal can turn; roll is left free.

NOTE: from an exactly symmetric start (zero horizontal offset, velocity and tilt) the
gradient of a rollout through this controller grows about 25-fold per control step and
overflows to NaN after about 25 steps. A start 1 mm off the axis gives ordinary
gradients. The cause is not known, and randomised start states do not hit it.

Every gain is stored unconstrained and used through ``softplus`` (``beta`` through
``sigmoid``), as in :class:`~diffland.controllers.pid.VerticalPID`. The action is mapped
into the bounds by :func:`~diffland.controllers.bounds.bounded_action`.
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
from diffland.controllers.mlp import MLP
from diffland.controllers.pid import PIDCarry, _inverse_softplus, _logit, initial_pid_carry
from diffland.dynamics import rotation
from diffland.dynamics.base import Vehicle, safe_norm


@dataclasses.dataclass(frozen=True)
class CascadedGains:
    """Initial gains of the cascaded controller, in physical units."""

    kp: float = 8.0
    """Vertical proportional gain, (m/s^2) per (m/s)."""
    ki: float = 0.15
    """Vertical integral gain, (m/s^2) per m."""
    kd: float = 0.5
    """Vertical derivative gain, (m/s^2) per (m/s^2)."""
    decel_fraction: float = 0.7
    """beta: fraction of the full-throttle deceleration of the vertical reference."""
    touchdown_speed: float = 1.0
    """v_td: vertical reference speed at the ground, m/s."""
    position_gain: float = 6.0
    """k_r: horizontal position gain, times ``1 / t_go^2``."""
    velocity_gain: float = 4.0
    """k_v: horizontal velocity gain, times ``1 / t_go``."""
    attitude_gain: float = 4.0
    """k_att: angular acceleration per unit attitude error, 1/s^2."""
    rate_gain: float = 3.2
    """k_rate: angular acceleration per unit angular rate, 1/s."""

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"CascadedGains.{field.name} = {value!r} must be positive.")
        if not self.decel_fraction < 1.0:
            raise ValueError(
                f"CascadedGains.decel_fraction = {self.decel_fraction!r} must be below 1."
            )


CASCADED_GAINS = CascadedGains()
"""Gains chosen by hand for the Falcon-9-like booster; the start of gradient tuning."""

_SOFTPLUS_GAINS = (
    "kp",
    "ki",
    "kd",
    "touchdown_speed",
    "position_gain",
    "velocity_gain",
    "attitude_gain",
    "rate_gain",
)


@dataclasses.dataclass(frozen=True)
class _Kinematics:
    """Quantities of a vehicle state that the cascade uses, in the world frame."""

    horizontal_position: jax.Array
    horizontal_velocity: jax.Array
    height: jax.Array
    vertical_velocity: jax.Array
    axis: jax.Array
    """Unit body axis (tail to nose) in the world frame, horizontal parts then z."""
    mass: jax.Array


def _kinematics(vehicle: Vehicle, state: Any, params: Any) -> _Kinematics:
    height = vehicle.height(state, params)
    if hasattr(state, "quaternion"):
        axis = rotation.rotate(state.quaternion, jnp.array([0.0, 0.0, 1.0], state.mass.dtype))
        return _Kinematics(
            state.position[:2], state.velocity[:2], height, state.velocity[2], axis, state.mass
        )
    axis = jnp.stack([jnp.sin(state.pitch), jnp.cos(state.pitch)])
    return _Kinematics(state.x[None], state.vx[None], height, state.vz, axis, state.mass)


class CascadedPID(nn.Module):
    """Outer position/velocity loop and inner attitude loop for a booster with a gimbal.

    Works with :class:`~diffland.dynamics.planar.PlanarBooster` (action: throttle and
    gimbal) and :class:`~diffland.dynamics.rigid_body.RigidBody` (throttle and two gimbal
    angles; reaction-control torques, if the vehicle has them, are left at zero).
    """

    vehicle: Vehicle
    control_dt: float
    """Time between calls, s."""
    gains: CascadedGains = CASCADED_GAINS
    max_tilt_deg: float = 20.0
    """Largest tilt the outer loop commands, degrees."""
    min_time_to_go: float = 4.0
    """Floor of the time-to-go estimate, s."""
    vertical_priority: bool = True
    """Shrink the horizontal command when full thrust cannot also meet the vertical one."""
    integral_limit: float = 100.0
    """Clip of the vertical integral, m."""

    def setup(self):
        g = self.gains
        raw = {name: _inverse_softplus(getattr(g, name)) for name in _SOFTPLUS_GAINS}
        raw["decel_fraction"] = _logit(g.decel_fraction)
        self.raw = {
            name: self.param(name, nn.initializers.constant(value), ())
            for name, value in raw.items()
        }

    def effective_gains(self) -> dict[str, jax.Array]:
        """Return the constrained gains in physical units."""
        gains = {name: nn.softplus(self.raw[name]) for name in _SOFTPLUS_GAINS}
        gains["decel_fraction"] = nn.sigmoid(self.raw["decel_fraction"])
        return gains

    def gains_from_params(self, params: Any) -> CascadedGains:
        """Return the physical gains stored in a ``params`` collection of this module."""
        values = self.apply({"params": params}, method=CascadedPID.effective_gains)
        return CascadedGains(**{name: float(value) for name, value in values.items()})

    def _vertical(self, gains, k: _Kinematics, params, carry: PIDCarry):
        a_max = jnp.maximum(params.throttle_max * params.max_thrust / k.mass - params.gravity, 0.1)
        beta = gains["decel_fraction"]
        height = jnp.maximum(k.height, 0.0)
        v_ref = -jnp.sqrt(gains["touchdown_speed"] ** 2 + 2.0 * beta * a_max * height)
        error = v_ref - k.vertical_velocity
        rate = jnp.where(carry.started, (error - carry.previous_error) / self.control_dt, 0.0)
        accel = (
            beta * a_max + gains["kp"] * error + gains["ki"] * carry.integral + gains["kd"] * rate
        )
        return accel, error

    def _horizontal(self, gains, k: _Kinematics):
        closing = jnp.abs(k.vertical_velocity) + gains["touchdown_speed"]
        t_go = jnp.maximum(2.0 * jnp.maximum(k.height, 0.0) / closing, self.min_time_to_go)
        return (
            -gains["position_gain"] * k.horizontal_position / t_go**2
            - gains["velocity_gain"] * k.horizontal_velocity / t_go
        )

    def _limit_tilt(self, horizontal, vertical, available):
        """Saturate the horizontal part smoothly at ``vertical * tan(max_tilt)``, and at
        what full thrust ``available`` (per unit mass) leaves after the vertical part."""
        limit = jnp.maximum(vertical, 1e-3) * math.tan(math.radians(self.max_tilt_deg))
        spare = jnp.sqrt(jnp.maximum(available**2 - vertical**2, 0.0) + 1e-6)
        if self.vertical_priority:
            limit = jnp.minimum(limit, spare)
        # scale = tanh(u) / u with u = |horizontal| / limit; below u = 1e-3 its series
        # 1 - u^2 / 3 is exact in float32 and has no division by a vanishing u.
        ratio = safe_norm(horizontal) / limit
        large = ratio > 1e-3
        safe_ratio = jnp.where(large, ratio, 1.0)
        scale = jnp.where(large, jnp.tanh(safe_ratio) / safe_ratio, 1.0 - ratio**2 / 3.0)
        return horizontal * scale

    def command(self, state, params, carry: PIDCarry) -> tuple[jax.Array, PIDCarry]:
        """Return the unbounded action command and the updated carry."""
        gains = self.effective_gains()
        k = _kinematics(self.vehicle, state, params)
        a_z, error = self._vertical(gains, k, params, carry)
        a_h = self._horizontal(gains, k)
        f_z = jnp.maximum(a_z + params.gravity, 0.1)
        available = params.throttle_max * params.max_thrust / k.mass
        f_h = self._limit_tilt(a_h, f_z, available)
        f = jnp.concatenate([f_h, f_z[None]])
        throttle = k.mass * jnp.dot(f, k.axis) / params.max_thrust

        pushes_high = (throttle > params.throttle_max) & (error > 0)
        pushes_low = (throttle < params.throttle_min) & (error < 0)
        integral = carry.integral + jnp.where(~(pushes_high | pushes_low), error, 0.0) * (
            self.control_dt
        )
        integral = jnp.clip(integral, -self.integral_limit, self.integral_limit)
        new_carry = PIDCarry(
            integral=integral, previous_error=error, started=jnp.ones_like(carry.started)
        )

        target = f / safe_norm(f)
        gimbal = self._attitude(gains, state, params, k, target, throttle)
        return jnp.concatenate([throttle[None], gimbal]), new_carry

    def _attitude(self, gains, state, params, k: _Kinematics, target, throttle):
        thrust = jnp.clip(throttle, params.throttle_min, params.throttle_max) * params.max_thrust
        authority = params.engine_offset * thrust
        if hasattr(state, "quaternion"):
            error_world = jnp.cross(k.axis, target)
            error = rotation.inverse_rotate(state.quaternion, error_world)[:2]
            rates = state.angular_velocity[:2]
            inertia = k.mass * params.radius_of_gyration[:2] ** 2
            alpha = gains["attitude_gain"] * error - gains["rate_gain"] * rates
            sine = jnp.clip(inertia * alpha / authority, -0.99, 0.99)
            # Torque about body x comes from gimbal_x, about body y from gimbal_y.
            gimbal = jnp.arcsin(sine)
            command = gimbal
            if self.vehicle.action_size > 3:
                command = jnp.concatenate([gimbal, jnp.zeros(3, gimbal.dtype)])
            return command
        # Planar: the signed angle from the body axis to the target, about +y.
        error = k.axis[1] * target[0] - k.axis[0] * target[1]
        inertia = k.mass * params.radius_of_gyration**2
        alpha = gains["attitude_gain"] * error - gains["rate_gain"] * state.pitch_rate
        sine = jnp.clip(inertia * alpha / authority, -0.99, 0.99)
        return jnp.arcsin(sine)[None]

    def __call__(self, state, params, carry):
        command, carry = self.command(state, params, carry)
        low, high = self.vehicle.action_bounds(params)
        return bounded_action(command, low, high), carry

    def initial_carry(self, dtype=jnp.float32) -> PIDCarry:
        return initial_pid_carry(dtype)


class NeuroCascadedPID(nn.Module):
    """:class:`CascadedPID` plus a zero-initialised network correction on every action.

    The correction ``correction_scale * half_range * MLP(observation)``, with the half
    range of each action's bounds, is added to the PID's bounded action, and the sum is
    clipped to the bounds. An untrained controller therefore equals its PID exactly.

    The correction acts on the action rather than on the PID's unbounded command
    because the cascade often commands far beyond the gimbal limit. There the tanh map
    into the bounds is flat, so a correction added before it needs a very large output
    to move the action. Measured on the planar booster (behaviour cloning of the
    corrections to a trained MLP, 2,048 starts): the action error after the fit was
    0.069 with the correction on the command and 0.008 with it on the action, and the
    fitted controllers landed 88.7 % and 99.8 % of 4,096 held-out starts. The clip
    passes no gradient to a correction that pushes an action past its bound.

    On the 6-DOF booster the observation lacks the roll about the body axis, which the
    PID uses, so the fit needs ``action_features`` (see there).

    Adaptive inputs (``adaptive=True``, default off). The observation alone does not
    tell the network how the vehicle differs from the nominal model it is designed
    with. The network then also gets two signals of that difference, both computed from
    the states the controller sees and kept in the carry:

    - the last ``error_history`` vertical-velocity errors of the outer loop (newest
      first, in 10 m/s). A thrust or mass error shows up first as a persistent error of
      the vertical loop, before the integral has absorbed it;
    - an online estimate of the ratio of actual to nominal thrust, minus one. Each step
      measures the acceleration by differencing the velocity, adds gravity, and takes
      the part along the previous body axis. It divides that by the acceleration the
      previous throttle command would give with the nominal ``max_thrust`` at the
      current mass, and the ratio (clipped to [0, 2]) is smoothed with the gain
      ``thrust_estimate_gain``. The thrust-to-weight ratio follows as this ratio times
      the nominal one. Thrust and mass errors, throttle lag and axial drag all move
      the estimate, so the network learns its meaning together with the speed and
      height it also sees.

    With a zero correction the adaptive controller's action is still exactly its PID's.
    """

    vehicle: Vehicle
    control_dt: float
    gains: CascadedGains = CASCADED_GAINS
    hidden: tuple[int, ...] = (64, 64)
    correction_scale: float = 0.3
    """Fraction of each action's half range per unit of network output."""
    max_tilt_deg: float = 20.0
    """Passed to the :class:`CascadedPID`."""
    min_time_to_go: float = 4.0
    """Passed to the :class:`CascadedPID`."""
    action_features: bool = False
    """Also feed the network the PID's bounded action, scaled to ``[-1, 1]`` over the
    action bounds. The 6-DOF PID steers in the body frame from the full attitude, while
    the observation gives the body axis but not the roll about it, so without this input
    the network cannot tell what the PID is doing."""
    dtype: Any = None
    """Computation dtype of the network only."""
    param_dtype: Any = jnp.float32
    adaptive: bool = False
    """Feed the network the recent tracking errors and the thrust estimate (see above)."""
    error_history: int = 4
    """Number of recent vertical-velocity errors fed to the adaptive network."""
    thrust_estimate_gain: float = 0.3
    """Weight of each new measurement in the smoothed thrust ratio, in (0, 1]."""

    def setup(self):
        if self.adaptive:
            count = self.error_history
            if isinstance(count, bool) or not (isinstance(count, int) and count >= 1):
                raise ValueError(
                    f"NeuroCascadedPID.error_history = {count!r} is invalid: pass an integer "
                    ">= 1 (control steps)."
                )
            gain = self.thrust_estimate_gain
            if not (isinstance(gain, int | float) and 0.0 < gain <= 1.0):
                raise ValueError(
                    f"NeuroCascadedPID.thrust_estimate_gain = {gain!r} is invalid: pass a "
                    "number in (0, 1]."
                )
        self.pid = CascadedPID(
            self.vehicle,
            self.control_dt,
            self.gains,
            max_tilt_deg=self.max_tilt_deg,
            min_time_to_go=self.min_time_to_go,
        )
        self.correction = MLP(
            self.hidden,
            self.vehicle.action_size,
            zero_output=True,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )

    def __call__(self, state, params, carry):
        pid_carry = carry.pid if self.adaptive else carry
        command, pid_carry = self.pid.command(state, params, pid_carry)
        low, high = self.vehicle.action_bounds(params)
        features = self.vehicle.observation(state, params)
        half = 0.5 * (high - low)
        action = bounded_action(command, low, high)
        if self.action_features:
            scaled = (action - 0.5 * (low + high)) / half
            features = jnp.concatenate([features, scaled.astype(features.dtype)])
        if self.adaptive:
            adaptive = self._update_estimates(state, params, carry, pid_carry)
            extra = jnp.concatenate(
                [adaptive.errors / 10.0, (adaptive.thrust_ratio - 1.0)[None]]
            ).astype(features.dtype)
            features = jnp.concatenate([features, extra])
        action = action + self.correction_scale * half * self.correction(features)
        action = jnp.clip(action, low, high)
        if self.adaptive:
            return action, adaptive.replace(throttle=action[0])
        return action, pid_carry

    def _update_estimates(self, state, params, carry: AdaptiveCarry, pid_carry: PIDCarry):
        """Return the adaptive carry with this step's error, velocity, axis and thrust
        ratio (the throttle is set after the action)."""
        k = _kinematics(self.vehicle, state, params)
        velocity = jnp.concatenate([k.horizontal_velocity, k.vertical_velocity[None]])
        acceleration = (velocity - carry.velocity) / self.control_dt
        gravity = jnp.zeros_like(velocity).at[-1].set(params.gravity)
        along_axis = jnp.dot(acceleration + gravity, carry.axis)
        expected = carry.throttle * params.max_thrust / k.mass
        measured = jnp.clip(along_axis / jnp.maximum(expected, 1e-3), 0.0, 2.0)
        smoothed = carry.thrust_ratio + self.thrust_estimate_gain * (measured - carry.thrust_ratio)
        # The first step has no previous velocity, so the estimate stays at its start.
        ratio = jnp.where(carry.pid.started, smoothed, carry.thrust_ratio)
        errors = jnp.concatenate([pid_carry.previous_error[None], carry.errors[:-1]])
        return carry.replace(
            pid=pid_carry, errors=errors, velocity=velocity, axis=k.axis, thrust_ratio=ratio
        )

    def initial_carry(self, dtype=jnp.float32) -> PIDCarry | AdaptiveCarry:
        if not self.adaptive:
            return initial_pid_carry(dtype)
        axes = 2 if self.vehicle.action_size == 2 else 3
        return AdaptiveCarry(
            pid=initial_pid_carry(dtype),
            errors=jnp.zeros((self.error_history,), dtype),
            velocity=jnp.zeros((axes,), dtype),
            axis=jnp.zeros((axes,), dtype).at[-1].set(1.0),
            throttle=jnp.ones((), dtype),
            thrust_ratio=jnp.ones((), dtype),
        )


@struct.dataclass
class AdaptiveCarry:
    """Memory of an adaptive :class:`NeuroCascadedPID`."""

    pid: PIDCarry
    """The cascaded PID's own memory."""
    errors: jax.Array
    """Recent vertical-velocity errors of the outer loop, newest first, m/s."""
    velocity: jax.Array
    """Velocity seen at the previous step (horizontal parts, then vertical), m/s."""
    axis: jax.Array
    """Body axis seen at the previous step, world frame."""
    throttle: jax.Array
    """Throttle commanded at the previous step, fraction of ``max_thrust``."""
    thrust_ratio: jax.Array
    """Smoothed estimate of actual over nominal thrust (1 at the start)."""
