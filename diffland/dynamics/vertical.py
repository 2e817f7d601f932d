"""The 1-D vertical lander: altitude, vertical velocity and mass under gravity and thrust.

Equations of motion (z up, one engine pointing down)::

    dh/dt = v
    dv/dt = (T - D) / m - g
    dm/dt = -T / (Isp * g0)

with thrust ``T = throttle * max_thrust`` while propellant remains and ``T = 0`` once the
mass has reached the dry mass, and optional drag ``D = 0.5 * rho(h) * Cd * A * v * |v|``
with an exponential atmosphere ``rho(h) = rho0 * exp(-h / H)``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from diffland.dynamics.base import STANDARD_GRAVITY, Vehicle, check_finite_tree, is_concrete


@struct.dataclass
class VerticalState:
    """State of one vertical lander; every field has shape ``()`` (batch with vmap)."""

    altitude: jax.Array
    """Height of the engine above the ground, m (positive up)."""
    velocity: jax.Array
    """Vertical velocity, m/s (positive up, so a descent is negative)."""
    mass: jax.Array
    """Total mass, kg (dry mass plus propellant)."""


@struct.dataclass
class VerticalParams:
    """Physical parameters of a vertical lander; every field has shape ``()``."""

    gravity: jax.Array
    """Magnitude of the local gravitational acceleration, m/s^2."""
    max_thrust: jax.Array
    """Engine thrust at full throttle, N."""
    throttle_min: jax.Array
    """Lowest throttle while the engine is lit, fraction of ``max_thrust``."""
    throttle_max: jax.Array
    """Highest throttle, fraction of ``max_thrust``."""
    isp: jax.Array
    """Specific impulse, s; the mass flow is ``T / (isp * g0)``."""
    dry_mass: jax.Array
    """Mass with no propellant left, kg; thrust stops at this mass."""
    drag_coefficient: jax.Array = 0.0
    """Axial drag coefficient Cd, dimensionless (used only when drag is on)."""
    reference_area: jax.Array = 0.0
    """Drag reference area A, m^2."""
    sea_level_density: jax.Array = 1.225
    """Air density at zero altitude, kg/m^3 (ISA sea level)."""
    scale_height: jax.Array = 8500.0
    """Density scale height H of the exponential atmosphere, m."""

    @property
    def exhaust_velocity(self) -> jax.Array:
        """Effective exhaust velocity ``isp * g0``, m/s."""
        return self.isp * STANDARD_GRAVITY


@dataclasses.dataclass(frozen=True)
class VerticalLander(Vehicle):
    """A lander that moves only along the vertical axis.

    The action is the throttle, shape ``(1,)``, a fraction of ``max_thrust`` within
    ``[throttle_min, throttle_max]``; the engine cannot be shut down. Drag is skipped
    entirely unless ``drag=True``.
    """

    drag: bool = False

    kinematic_fields = ("altitude",)
    component_tuples = True
    action_size = 1

    def thrust(self, state: VerticalState, action: jax.Array, params: VerticalParams):
        """Return the thrust in N: zero once only dry mass is left."""
        throttle = jnp.clip(action[0], params.throttle_min, params.throttle_max)
        has_propellant = state.mass > params.dry_mass
        return jnp.where(has_propellant, throttle * params.max_thrust, 0.0)

    def drag_force(self, state: VerticalState, params: VerticalParams) -> jax.Array:
        """Return the drag force along +z in N (it opposes the velocity)."""
        if not self.drag:
            return jnp.zeros_like(state.velocity)
        density = params.sea_level_density * jnp.exp(-state.altitude / params.scale_height)
        # v * |v| has the finite derivative 2|v|, also at zero speed.
        dynamic = 0.5 * density * state.velocity * jnp.abs(state.velocity)
        return -dynamic * params.drag_coefficient * params.reference_area

    def derivative(self, state, action, params):
        thrust = self.thrust(state, action, params)
        force = thrust + self.drag_force(state, params)
        return VerticalState(
            altitude=state.velocity,
            velocity=force / state.mass - params.gravity,
            mass=-thrust / params.exhaust_velocity,
        )

    def project(self, state, params):
        return state.replace(mass=jnp.maximum(state.mass, params.dry_mass))

    def height(self, state, params):
        del params
        return state.altitude

    def action_bounds(self, params):
        return (
            jnp.reshape(params.throttle_min, (1,)),
            jnp.reshape(params.throttle_max, (1,)),
        )

    def touchdown_speed(self, state, params):
        del params
        return jnp.abs(state.velocity)

    def propellant_mass(self, state, params):
        return jnp.maximum(state.mass - params.dry_mass, 0.0)

    def max_deceleration(self, state: VerticalState, params: VerticalParams) -> jax.Array:
        """Return the net upward acceleration at full throttle, m/s^2 (negative if none)."""
        return params.throttle_max * params.max_thrust / state.mass - params.gravity

    def observation(self, state, params):
        """Return six scaled features.

        Altitude in km, velocity in hm/s, propellant in 10 t, the hover throttle
        ``m g / T_max``, the deceleration needed to stop at the ground ``v^2 / (2 h)``
        divided by the full-throttle deceleration (clipped to [0, 5]), and ``sqrt(h) / 30``.
        """
        altitude = jnp.maximum(state.altitude, 0.0)
        needed = state.velocity**2 / (2.0 * jnp.maximum(altitude, 1.0))
        available = jnp.maximum(self.max_deceleration(state, params), 1e-3)
        return jnp.stack(
            [
                state.altitude / 1000.0,
                state.velocity / 100.0,
                self.propellant_mass(state, params) / 1.0e4,
                state.mass * params.gravity / params.max_thrust,
                jnp.clip(needed / available, 0.0, 5.0),
                jnp.sqrt(altitude + 1e-6) / 30.0,
            ]
        )

    def validate(self, state, params):
        validate_vertical_params(params)
        validate_vertical_state(state, params)


def _show(value) -> str:
    """Format a scalar or array for an error message, to 6 significant digits."""
    array = np.asarray(value, dtype=np.float64)
    if array.size == 1:
        return str(float(f"{float(array.reshape(())):.6g}"))
    return np.array2string(array, precision=6)


def validate_vertical_params(params: VerticalParams) -> None:
    """Raise ``ValueError`` with the offending value and a fix for invalid parameters."""
    if not is_concrete(params):
        return
    check_finite_tree(params, "params")
    positive = ("gravity", "max_thrust", "isp", "dry_mass", "scale_height")
    for name in positive:
        value = jnp.asarray(getattr(params, name))
        if bool(jnp.any(value <= 0)):
            raise ValueError(f"params.{name} = {_show(value)} must be positive.")
    for name in ("drag_coefficient", "reference_area", "sea_level_density"):
        value = jnp.asarray(getattr(params, name))
        if bool(jnp.any(value < 0)):
            raise ValueError(f"params.{name} = {_show(value)} must be zero or positive.")
    low = jnp.asarray(params.throttle_min)
    high = jnp.asarray(params.throttle_max)
    if bool(jnp.any(low < 0)) or bool(jnp.any(high <= 0)):
        raise ValueError(
            f"throttle bounds [{_show(low)}, {_show(high)}] must satisfy "
            "0 <= throttle_min < throttle_max."
        )
    if bool(jnp.any(low >= high)):
        raise ValueError(
            f"throttle_min = {_show(low)} is not below throttle_max = {_show(high)}; the "
            "bounds are reversed or empty. Pass throttle_min < throttle_max."
        )


def validate_vertical_state(state: VerticalState, params: VerticalParams) -> None:
    """Raise ``ValueError`` for a non-finite state or a mass outside ``(0, inf)``.

    A wet mass below the dry mass is rejected, because the propellant would be negative.
    """
    if not is_concrete((state, params)):
        return
    check_finite_tree(state, "state")
    mass = jnp.asarray(state.mass)
    if bool(jnp.any(mass <= 0)):
        raise ValueError(f"state.mass = {_show(mass)} must be positive (kg).")
    altitude = jnp.asarray(state.altitude)
    if bool(jnp.any(altitude <= 0)):
        raise ValueError(
            f"state.altitude = {_show(altitude)} m: a lander must start above the ground "
            "(altitude > 0), or touchdown cannot be detected."
        )
    dry = jnp.asarray(params.dry_mass)
    if bool(jnp.any(mass < dry)):
        raise ValueError(
            f"state.mass = {_show(mass)} kg is below params.dry_mass = {_show(dry)} kg, but "
            "the dry mass must not exceed the wet (initial) mass. Lower dry_mass or raise "
            "the initial mass."
        )


def make_vertical_params(
    *,
    gravity: float,
    max_thrust: float,
    throttle_min: float,
    throttle_max: float,
    isp: float,
    dry_mass: float,
    drag_coefficient: float = 0.0,
    reference_area: float = 0.0,
    sea_level_density: float = 1.225,
    scale_height: float = 8500.0,
    dtype=None,
) -> VerticalParams:
    """Build and validate :class:`VerticalParams` from plain numbers.

    Raises ``ValueError`` for NaN or non-positive masses, thrust, Isp or gravity and for
    reversed throttle bounds. ``dtype`` defaults to JAX's default float type.
    """
    values = dict(
        gravity=gravity,
        max_thrust=max_thrust,
        throttle_min=throttle_min,
        throttle_max=throttle_max,
        isp=isp,
        dry_mass=dry_mass,
        drag_coefficient=drag_coefficient,
        reference_area=reference_area,
        sea_level_density=sea_level_density,
        scale_height=scale_height,
    )
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{name} = {value!r} is invalid: pass a real number.")
        if math.isnan(float(value)):
            raise ValueError(f"{name} = {value!r} is NaN; pass a finite real number.")
    if dtype is not None and not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"dtype = {jnp.dtype(dtype).name} is invalid: pass a floating-point dtype."
        )
    params = VerticalParams(**{k: jnp.asarray(v, dtype=dtype) for k, v in values.items()})
    validate_vertical_params(params)
    return params


def make_vertical_state(altitude, velocity, mass, dtype=None) -> VerticalState:
    """Build a :class:`VerticalState` from numbers or arrays (a batch if arrays)."""
    return VerticalState(
        altitude=jnp.asarray(altitude, dtype=dtype),
        velocity=jnp.asarray(velocity, dtype=dtype),
        mass=jnp.asarray(mass, dtype=dtype),
    )
