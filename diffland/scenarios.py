"""Randomised start states for landing scenarios, kept only where a landing is feasible."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffland.dynamics.vertical import VerticalLander, VerticalParams, VerticalState
from diffland.optimal import OptimalBurn, fuel_optimal_burn


@dataclasses.dataclass(frozen=True)
class LandingBurnScenario:
    """Start states at ignition of a vertical landing burn, drawn uniformly, then filtered.

    A drawn state is kept when the fuel-optimal burn from it exists and switches to full
    thrust at least ``min_switch_time`` after ignition. The propellant on board must also
    cover that burn's need with ``propellant_margin`` to spare. The burn (minimum, then
    maximum throttle) is computed on the same dynamics. The margins leave room for a
    closed-loop controller that cannot know the exact optimum.
    """

    altitude_range: tuple[float, float] = (1500.0, 3000.0)
    """Altitude at ignition, m."""
    speed_range: tuple[float, float] = (200.0, 300.0)
    """Descent speed at ignition, m/s (the velocity is its negative)."""
    propellant_range: tuple[float, float] = (3000.0, 9000.0)
    """Propellant on board at ignition, kg."""
    min_switch_time: float = 1.0
    """Earliest allowed switch of the fuel-optimal burn, s after ignition."""
    propellant_margin: float = 0.2
    """Required spare propellant as a fraction of the optimal burn's need."""

    def __post_init__(self):
        for name in ("altitude_range", "speed_range", "propellant_range"):
            low, high = getattr(self, name)
            if not (np.isfinite(low) and np.isfinite(high) and 0 < low <= high):
                raise ValueError(f"{name} = {(low, high)} must satisfy 0 < low <= high.")


def _draw(key: jax.Array, count: int, scenario: LandingBurnScenario, params, dtype):
    k_alt, k_speed, k_prop = jax.random.split(key, 3)

    def uniform(k, bounds):
        return jax.random.uniform(k, (count,), dtype, bounds[0], bounds[1])

    return VerticalState(
        altitude=uniform(k_alt, scenario.altitude_range),
        velocity=-uniform(k_speed, scenario.speed_range),
        mass=params.dry_mass + uniform(k_prop, scenario.propellant_range),
    )


@functools.partial(jax.jit, static_argnums=(0, 2, 4))
def _draw_and_solve(vehicle, key, scenario, params, count):
    dtype = jnp.asarray(params.dry_mass).dtype
    states = _draw(key, count, scenario, params, dtype)
    optimum = jax.vmap(lambda s: fuel_optimal_burn(vehicle, s, params))(states)
    on_board = states.mass - params.dry_mass
    keep = (
        optimum.feasible
        & (optimum.switch_time >= scenario.min_switch_time)
        & (on_board >= (1.0 + scenario.propellant_margin) * optimum.propellant)
    )
    return states, optimum, keep


def _shortfall_message(feasible: int, drawn: int, count: int, scenario: Any) -> str:
    """Return why sampling stopped short: too few draws, or ranges that are almost all
    infeasible."""
    message = (
        f"only {feasible} of {drawn} drawn states are feasible, fewer than the {count} requested."
    )
    if feasible == 0:
        return f"{message} Widen the ranges of {scenario} or relax its margins."
    needed = math.ceil(count * drawn / feasible)
    return (
        f"{message} At that feasible share ({feasible / drawn:.1%}), about {needed:,} draws "
        "are needed: raise chunk or max_draws, request fewer states, or widen the ranges of "
        f"{scenario} or relax its margins."
    )


def sample_landing_burn_states(
    key: jax.Array,
    count: int,
    vehicle: VerticalLander,
    params: VerticalParams,
    scenario: LandingBurnScenario = LandingBurnScenario(),
    chunk: int = 8192,
    max_draws: int = 50,
) -> tuple[VerticalState, OptimalBurn]:
    """Return ``count`` feasible start states and the fuel-optimal burn from each.

    Candidates are drawn in chunks of ``chunk`` until enough pass the filter. Raises
    ``ValueError`` if ``max_draws`` chunks are not enough, with the number of draws that
    the feasible share found so far would need.
    """
    if count < 1:
        raise ValueError(f"count = {count} must be at least 1.")
    kept_states, kept_optima, total = [], [], 0
    for draw in range(max_draws):
        states, optimum, keep = _draw_and_solve(
            vehicle, jax.random.fold_in(key, draw), scenario, params, chunk
        )
        mask = np.asarray(keep)
        kept_states.append(jax.tree_util.tree_map(lambda x, m=mask: np.asarray(x)[m], states))
        kept_optima.append(jax.tree_util.tree_map(lambda x, m=mask: np.asarray(x)[m], optimum))
        total += int(mask.sum())
        if total >= count:
            break
    else:
        raise ValueError(_shortfall_message(total, max_draws * chunk, count, scenario))

    def join(parts):
        return jax.tree_util.tree_map(lambda *xs: jnp.asarray(np.concatenate(xs)[:count]), *parts)

    return join(kept_states), join(kept_optima)


@dataclasses.dataclass(frozen=True)
class BoosterLandingScenario:
    """Start states of a landing burn with lateral offset, attitude errors and wind.

    The vertical part (height of the feet, descent speed, propellant) is drawn and
    filtered exactly as in :class:`LandingBurnScenario`, on the 1-D dynamics of the same
    engine, dry mass and axial drag. The lateral part is drawn uniformly with a random
    sign per axis: a horizontal offset from the pad, a horizontal velocity, a tilt and
    an angular rate, plus a wind from :func:`diffland.dynamics.aero.sample_wind`.
    """

    vertical: LandingBurnScenario = LandingBurnScenario()
    """Ranges and filter of the vertical part."""
    offset_range: tuple[float, float] = (0.0, 50.0)
    """Horizontal distance of the centre of mass from the pad at ignition, m."""
    lateral_speed_range: tuple[float, float] = (0.0, 5.0)
    """Horizontal speed at ignition, m/s."""
    tilt_range_deg: tuple[float, float] = (0.0, 3.0)
    """Tilt of the body axis from the vertical at ignition, degrees."""
    angular_rate_range: tuple[float, float] = (0.0, 0.02)
    """Angular speed at ignition, rad/s."""
    steady_wind: float = 0.0
    """Largest steady wind speed, m/s (the speed is drawn uniformly up to it)."""
    gust_rms: float = 0.0
    """Root-mean-square gust speed per horizontal axis, m/s."""

    def __post_init__(self):
        for name in ("offset_range", "lateral_speed_range", "tilt_range_deg"):
            low, high = getattr(self, name)
            if not (np.isfinite(low) and np.isfinite(high) and 0 <= low <= high):
                raise ValueError(f"{name} = {(low, high)} must satisfy 0 <= low <= high.")
        low, high = self.angular_rate_range
        if not (np.isfinite(low) and np.isfinite(high) and 0 <= low <= high):
            raise ValueError(f"angular_rate_range = {(low, high)} must satisfy 0 <= low <= high.")
        if not (self.steady_wind >= 0 and self.gust_rms >= 0):
            raise ValueError(
                f"steady_wind = {self.steady_wind} and gust_rms = {self.gust_rms} must be >= 0."
            )


def vertical_equivalent(params, drag: bool) -> tuple[VerticalLander, VerticalParams]:
    """Return the 1-D lander with the engine, dry mass and axial drag of a booster."""
    vertical = VerticalParams(
        gravity=params.gravity,
        max_thrust=params.max_thrust,
        throttle_min=params.throttle_min,
        throttle_max=params.throttle_max,
        isp=params.isp,
        dry_mass=params.dry_mass,
        drag_coefficient=params.axial_drag_coefficient,
        reference_area=params.reference_area,
        sea_level_density=params.sea_level_density,
        scale_height=params.scale_height,
    )
    return VerticalLander(drag=drag), vertical


def _signed_uniform(key, shape, bounds, dtype):
    k_mag, k_sign = jax.random.split(key)
    magnitude = jax.random.uniform(k_mag, shape, dtype, bounds[0], bounds[1])
    sign = jnp.where(jax.random.bernoulli(k_sign, 0.5, shape), 1.0, -1.0).astype(dtype)
    return magnitude * sign


def _random_directions(key, count, axes, dtype):
    """Return ``count`` unit vectors with ``axes`` components, uniform in direction."""
    if axes == 1:
        return _signed_uniform(key, (count, 1), (1.0, 1.0), dtype)
    angle = jax.random.uniform(key, (count,), dtype, 0.0, 2.0 * np.pi)
    return jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)


def sample_booster_states(
    key: jax.Array,
    count: int,
    vehicle,
    params,
    scenario: BoosterLandingScenario = BoosterLandingScenario(),
    chunk: int = 8192,
):
    """Return ``count`` start states for a planar or 6-DOF booster (a batch pytree).

    ``vehicle`` is a :class:`~diffland.dynamics.planar.PlanarBooster` or a
    :class:`~diffland.dynamics.rigid_body.RigidBody`; the same random numbers give the
    same vertical part, offsets, speeds and wind magnitude for both.
    """
    from diffland.dynamics import aero

    # Every draw gets its own key from one split; fold_in(k, 1) would repeat split(k)[1].
    keys = jax.random.split(key, 10)
    lander, vertical_params = vertical_equivalent(params, getattr(vehicle, "drag", False))
    vertical, _ = sample_landing_burn_states(
        keys[0], count, lander, vertical_params, scenario.vertical, chunk=chunk
    )
    dtype = vertical.altitude.dtype
    axes = 1 if vehicle.action_size == 2 else 2
    offset = _random_directions(keys[1], count, axes, dtype) * jax.random.uniform(
        keys[2], (count, 1), dtype, *scenario.offset_range
    )
    lateral = _random_directions(keys[3], count, axes, dtype) * jax.random.uniform(
        keys[4], (count, 1), dtype, *scenario.lateral_speed_range
    )
    tilt = jnp.deg2rad(jax.random.uniform(keys[5], (count,), dtype, *scenario.tilt_range_deg))
    tilt_direction = _random_directions(keys[6], count, axes, dtype)
    rate = jax.random.uniform(keys[7], (count,), dtype, *scenario.angular_rate_range)
    wind = jax.vmap(
        lambda k: aero.sample_wind(k, axes, scenario.steady_wind, scenario.gust_rms, dtype=dtype)
    )(jax.random.split(keys[8], count))
    # The filtered altitude is the height of the lowest foot of the tilted legs.
    z = vertical.altitude + params.com_height * jnp.cos(tilt) + params.leg_radius * jnp.sin(tilt)
    if axes == 1:
        from diffland.dynamics.planar import PlanarState

        rate_sign = _signed_uniform(keys[9], (count,), (1.0, 1.0), dtype)
        return PlanarState(
            x=offset[:, 0],
            z=z,
            pitch=tilt * tilt_direction[:, 0],
            vx=lateral[:, 0],
            vz=vertical.velocity,
            pitch_rate=rate * rate_sign,
            mass=vertical.mass,
            gimbal=jnp.zeros_like(z),
            wind=wind,
        )
    from diffland.dynamics import rotation
    from diffland.dynamics.rigid_body import RigidBodyState

    zeros = jnp.zeros_like(z)
    # Tilt about the horizontal axis perpendicular to the tilt direction.
    axis = jnp.stack([-tilt_direction[:, 1], tilt_direction[:, 0], zeros], axis=-1)
    quaternion = jax.vmap(rotation.from_axis_angle)(axis, tilt)
    rate_direction = jax.random.normal(keys[9], (count, 3), dtype)
    rate_direction = rate_direction / jnp.linalg.norm(rate_direction, axis=-1, keepdims=True)
    return RigidBodyState(
        position=jnp.concatenate([offset, z[:, None]], axis=-1),
        velocity=jnp.concatenate([lateral, vertical.velocity[:, None]], axis=-1),
        quaternion=quaternion,
        angular_velocity=rate[:, None] * rate_direction,
        mass=vertical.mass,
        gimbal=jnp.zeros((count, 2), dtype),
        wind=wind,
    )


PLANAR_SCENARIO = BoosterLandingScenario(steady_wind=5.0, gust_rms=2.0)
"""Default scenario of the planar booster: up to 50 m from the pad, 5 m/s sideways, 3
degrees of tilt, 0.02 rad/s, a steady wind up to 5 m/s and 2 m/s RMS gusts."""

RIGID_BODY_SCENARIO = BoosterLandingScenario(
    tilt_range_deg=(0.0, 5.0), angular_rate_range=(0.0, 0.05), steady_wind=8.0, gust_rms=2.0
)
"""Default scenario of the 6-DOF booster. It starts up to 50 m from the pad, 5 m/s
sideways, with 5 degrees of tilt and 0.05 rad/s about a random axis. A steady wind of up
to 8 m/s blows from a random direction, with 2 m/s RMS gusts."""


@dataclasses.dataclass(frozen=True)
class PointMassScenario:
    """Start states of the point-mass lander spread uniformly around a reference start.

    The defaults centre on the Mars reference scenario of
    :func:`~diffland.dynamics.presets.gfold_start_state`. No feasibility filter is
    applied. With the default spread all 200 states checked with :mod:`diffland.guidance`
    (the compared held-out states of ``experiments.convex_guidance``) had a minimum-fuel
    descent, but a wider spread may include states that cannot land.
    """

    position: tuple[float, float, float] = (450.0, -330.0, 2400.0)
    """Reference start position, m (world frame, z up, target at the origin)."""
    velocity: tuple[float, float, float] = (-40.0, 10.0, -10.0)
    """Reference start velocity, m/s."""
    mass: float = 2000.0
    """Start mass, kg."""
    position_spread: tuple[float, float, float] = (150.0, 150.0, 200.0)
    """Half width of the uniform offset of each position component, m."""
    velocity_spread: tuple[float, float, float] = (5.0, 5.0, 5.0)
    """Half width of the uniform offset of each velocity component, m/s."""

    def __post_init__(self):
        for name in ("position_spread", "velocity_spread"):
            values = getattr(self, name)
            if len(values) != 3 or not all(np.isfinite(v) and v >= 0 for v in values):
                raise ValueError(f"{name} = {values} must be three finite numbers >= 0.")
        if not (np.isfinite(self.mass) and self.mass > 0):
            raise ValueError(f"mass = {self.mass} must be a finite number > 0 (kg).")
        lowest = self.position[2] - self.position_spread[2]
        if lowest <= 0:
            raise ValueError(
                f"position[2] - position_spread[2] = {lowest} m: some start states would lie "
                "on or below the ground. Raise the position or narrow its spread."
            )


def sample_point_mass_states(
    key: jax.Array, count: int, scenario: PointMassScenario = PointMassScenario(), dtype=None
):
    """Return ``count`` start states of :class:`~diffland.dynamics.point_mass.PointMassLander`
    (a batch: every leaf has a leading axis of length ``count``)."""
    from diffland.dynamics.point_mass import PointMassState

    dtype = jnp.zeros(()).dtype if dtype is None else dtype
    k_position, k_velocity = jax.random.split(key)

    def around(k, centre, spread):
        unit = jax.random.uniform(k, (count, 3), dtype, -1.0, 1.0)
        return jnp.asarray(centre, dtype) + unit * jnp.asarray(spread, dtype)

    return PointMassState(
        position=around(k_position, scenario.position, scenario.position_spread),
        velocity=around(k_velocity, scenario.velocity, scenario.velocity_spread),
        mass=jnp.full((count,), scenario.mass, dtype),
    )
