"""The translational point-mass lander: 3-D position, velocity and mass under a thrust vector.

This is the model of the convex powered-descent guidance papers (Acikmese and Ploen 2007;
Acikmese, Carson and Blackmore 2013). The world frame is z up with the target at the
origin, and the planet rotates about the axis ``omega`` (an axial vector in the same
frame, rad/s). Equations of motion in the rotating, surface-fixed frame::

    dr/dt = v
    dv/dt = T / m - g e_z - 2 omega x v - omega x (omega x r)
    dm/dt = -|T| / (Isp g0)

The action is the thrust vector as a fraction of ``max_thrust`` along the world x, y and
z axes, each component within [-1, 1]. The engine cannot be shut down: the vehicle scales
the commanded vector so that its magnitude lies within ``[throttle_min, throttle_max]``
(a zero command thrusts straight up at ``throttle_min``). Thrust stops at the dry mass.
No attitude is modelled, so a thrust-pointing limit is a constraint of the guidance, not
of the dynamics.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import jax
import jax.numpy as jnp
from flax import struct

from diffland.dynamics.base import (
    STANDARD_GRAVITY,
    TouchdownMeasures,
    Vehicle,
    check_finite_tree,
    is_concrete,
    safe_norm,
)
from diffland.dynamics.vertical import _show


@struct.dataclass
class PointMassState:
    """State of one point-mass lander (batch with vmap over a leading axis)."""

    position: jax.Array
    """Position relative to the target, m, shape ``(3,)``; ``position[2]`` is the altitude."""
    velocity: jax.Array
    """Velocity in the surface-fixed frame, m/s, shape ``(3,)``."""
    mass: jax.Array
    """Total mass, kg, shape ``()``."""


@struct.dataclass
class PointMassParams:
    """Physical parameters of a point-mass lander; scalars have shape ``()``."""

    gravity: jax.Array
    """Magnitude of the gravitational acceleration, m/s^2, acting along -z."""
    max_thrust: jax.Array
    """Thrust at a throttle of 1, N."""
    throttle_min: jax.Array
    """Lowest thrust magnitude, fraction of ``max_thrust``."""
    throttle_max: jax.Array
    """Highest thrust magnitude, fraction of ``max_thrust``."""
    isp: jax.Array
    """Specific impulse, s; the mass flow is ``|T| / (isp * g0)``."""
    dry_mass: jax.Array
    """Mass with no propellant left, kg; thrust stops at this mass."""
    planet_rotation: jax.Array
    """Angular velocity of the planet in the world frame, rad/s, shape ``(3,)``."""

    @property
    def exhaust_velocity(self) -> jax.Array:
        """Effective exhaust velocity ``isp * g0``, m/s."""
        return self.isp * STANDARD_GRAVITY

    @property
    def fuel_flow_constant(self) -> jax.Array:
        """alpha = 1 / (isp * g0), s/m: the mass flow per newton of thrust."""
        return 1.0 / self.exhaust_velocity


def rotation_acceleration(omega: jax.Array, position: jax.Array, velocity: jax.Array) -> jax.Array:
    """Return the Coriolis plus centrifugal acceleration ``-2 w x v - w x (w x r)``, m/s^2."""
    coriolis = -2.0 * jnp.cross(omega, velocity)
    centrifugal = -jnp.cross(omega, jnp.cross(omega, position))
    return coriolis + centrifugal


@dataclasses.dataclass(frozen=True)
class PointMassLander(Vehicle):
    """A lander that translates in three dimensions with a bounded thrust vector.

    ``planet_rotation=False`` skips the Coriolis and centrifugal terms whatever
    ``params.planet_rotation`` holds.
    """

    planet_rotation: bool = True

    kinematic_fields = ("position",)
    action_size = 3

    def thrust(self, state: PointMassState, action: jax.Array, params: PointMassParams):
        """Return the thrust vector in N: the action rescaled into the magnitude bounds."""
        command = jnp.clip(action, -1.0, 1.0)
        size = safe_norm(command)
        nonzero = size > 1e-9
        up = jnp.zeros_like(command).at[2].set(1.0)
        direction = jnp.where(nonzero, command / jnp.where(nonzero, size, 1.0), up)
        throttle = jnp.clip(size, params.throttle_min, params.throttle_max)
        has_propellant = state.mass > params.dry_mass
        return jnp.where(has_propellant, throttle * params.max_thrust, 0.0) * direction

    def derivative(self, state, action, params):
        thrust = self.thrust(state, action, params)
        gravity = jnp.zeros_like(state.velocity).at[2].set(-params.gravity)
        acceleration = thrust / state.mass + gravity
        if self.planet_rotation:
            acceleration = acceleration + rotation_acceleration(
                params.planet_rotation, state.position, state.velocity
            )
        return PointMassState(
            position=state.velocity,
            velocity=acceleration,
            mass=-safe_norm(thrust) / params.exhaust_velocity,
        )

    def project(self, state, params):
        return state.replace(mass=jnp.maximum(state.mass, params.dry_mass))

    def height(self, state, params):
        del params
        return state.position[..., 2]

    def action_bounds(self, params):
        ones = jnp.ones((3,), jnp.asarray(params.max_thrust).dtype)
        return -ones, ones

    def touchdown_speed(self, state, params):
        del params
        return jnp.abs(state.velocity[..., 2])

    def touchdown_measures(self, state, params):
        del params
        zero = jnp.zeros_like(state.mass)
        return TouchdownMeasures(
            vertical_speed=jnp.abs(state.velocity[..., 2]),
            lateral_speed=safe_norm(state.velocity[..., :2]),
            tilt=zero,
            angular_rate=zero,
            pad_distance=safe_norm(state.position[..., :2]),
            tip_over=zero,
        )

    def propellant_mass(self, state, params):
        return jnp.maximum(state.mass - params.dry_mass, 0.0)

    def observation(self, state, params):
        """Return fifteen scaled features.

        Position in km and in hm, velocity in hm/s and in 10 m/s (the fine scales resolve
        the last metres), propellant in t, the hover throttle ``m g / T_max``, and
        ``sqrt(h) / 30`` with the altitude ``h`` clipped at zero.
        """
        altitude = jnp.maximum(state.position[2], 0.0)
        return jnp.concatenate(
            [
                state.position / 1000.0,
                state.position / 100.0,
                state.velocity / 100.0,
                state.velocity / 10.0,
                jnp.stack(
                    [
                        self.propellant_mass(state, params) / 1000.0,
                        state.mass * params.gravity / params.max_thrust,
                        jnp.sqrt(altitude + 1e-6) / 30.0,
                    ]
                ),
            ]
        )

    def validate(self, state, params):
        validate_point_mass_params(params)
        validate_point_mass_state(state, params)


def validate_point_mass_params(params: PointMassParams) -> None:
    """Raise ``ValueError`` with the offending value and a fix for invalid parameters."""
    if not is_concrete(params):
        return
    check_finite_tree(params, "params")
    for name in ("gravity", "max_thrust", "isp", "dry_mass"):
        value = jnp.asarray(getattr(params, name))
        if bool(jnp.any(value <= 0)):
            raise ValueError(f"params.{name} = {_show(value)} must be positive.")
    low = jnp.asarray(params.throttle_min)
    high = jnp.asarray(params.throttle_max)
    if bool(jnp.any(low < 0)) or bool(jnp.any(high > 1)) or bool(jnp.any(low >= high)):
        raise ValueError(
            f"throttle bounds [{_show(low)}, {_show(high)}] are invalid: they must satisfy "
            "0 <= throttle_min < throttle_max <= 1 (fractions of max_thrust)."
        )
    omega = jnp.asarray(params.planet_rotation)
    if omega.shape[-1:] != (3,):
        raise ValueError(
            f"params.planet_rotation has shape {omega.shape}; pass a 3-vector in rad/s "
            "(zeros for a planet that does not rotate)."
        )


def validate_point_mass_state(state: PointMassState, params: PointMassParams) -> None:
    """Raise ``ValueError`` for a badly shaped or non-finite state, a mass below the dry
    mass, or a lander that starts on or below the ground."""
    if not is_concrete((state, params)):
        return
    for name in ("position", "velocity"):
        value = jnp.asarray(getattr(state, name))
        if value.shape[-1:] != (3,):
            raise ValueError(
                f"state.{name} has shape {value.shape}; its last axis must have length 3 "
                "(x, y, z with z up)."
            )
    check_finite_tree(state, "state")
    mass = jnp.asarray(state.mass)
    dry = jnp.asarray(params.dry_mass)
    if bool(jnp.any(mass < dry)):
        raise ValueError(
            f"state.mass = {_show(mass)} kg is below params.dry_mass = {_show(dry)} kg; the "
            "propellant would be negative. Raise the initial mass or lower dry_mass."
        )
    altitude = jnp.asarray(state.position)[..., 2]
    if bool(jnp.any(altitude <= 0)):
        raise ValueError(
            f"state.position[..., 2] = {_show(altitude)} m: a lander must start above the "
            "ground (altitude > 0), or touchdown cannot be detected."
        )


def make_point_mass_params(
    *,
    gravity: float,
    max_thrust: float,
    throttle_min: float,
    throttle_max: float,
    isp: float,
    dry_mass: float,
    planet_rotation=(0.0, 0.0, 0.0),
    dtype=None,
) -> PointMassParams:
    """Build and validate :class:`PointMassParams` from plain numbers.

    ``planet_rotation`` is the planet's angular velocity in the world frame (z up), rad/s.
    """
    scalars = dict(
        gravity=gravity,
        max_thrust=max_thrust,
        throttle_min=throttle_min,
        throttle_max=throttle_max,
        isp=isp,
        dry_mass=dry_mass,
    )
    for name, value in scalars.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{name} = {value!r} is invalid: pass a real number.")
        if math.isnan(float(value)):
            raise ValueError(f"{name} = {value!r} is NaN; pass a finite real number.")
    if dtype is not None and not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"dtype = {jnp.dtype(dtype).name} is invalid: pass a floating-point dtype."
        )
    params = PointMassParams(
        **{k: jnp.asarray(v, dtype=dtype) for k, v in scalars.items()},
        planet_rotation=jnp.asarray(planet_rotation, dtype=dtype),
    )
    validate_point_mass_params(params)
    return params


def make_point_mass_state(position, velocity, mass, dtype=None) -> PointMassState:
    """Build a :class:`PointMassState` from numbers or arrays (a batch if arrays)."""
    return PointMassState(
        position=jnp.asarray(position, dtype=dtype),
        velocity=jnp.asarray(velocity, dtype=dtype),
        mass=jnp.asarray(mass, dtype=dtype),
    )
