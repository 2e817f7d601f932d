"""The landing outcome of a rollout and the differentiable landing cost built from it."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from diffland.dynamics.base import Params, Vehicle
from diffland.dynamics.simulate import Trajectory


@dataclasses.dataclass(frozen=True)
class LandingCost:
    """Weights and limits of the landing cost; every term is logged separately.

    A landing succeeds when the vehicle touches down within the horizon at a speed of at
    most ``speed_limit`` with propellant left.
    """

    speed_limit: float = 2.0
    """Highest touchdown speed of a successful landing, m/s."""
    exhaustion_tolerance: float = 1.0
    """Propellant below which the tanks count as empty, kg."""

    touchdown_speed: float = 1.0
    """Weight of ``((speed - target_speed) / speed_limit)^2`` at touchdown."""
    target_speed: float = 1.0
    """Touchdown speed the cost prefers, m/s. Aiming inside the success band keeps
    landers away from its two edges: a crash above ``speed_limit`` and, for a vehicle
    that cannot hover, stopping above the ground and climbing away below zero speed."""
    crash: float = 4.0
    """Weight of ``max(speed - crash_margin * speed_limit, 0) / speed_limit``."""
    crash_margin: float = 0.75
    """Fraction of the speed limit where the crash penalty starts."""
    propellant: float = 0.5
    """Weight of the propellant used divided by ``propellant_scale``."""
    propellant_scale: float = 1000.0
    """Propellant mass that costs one unit, kg."""
    control_effort: float = 0.01
    """Weight of the mean squared action, normalised to [0, 1] over the bounds."""
    smoothness: float = 0.1
    """Weight of the mean squared change of the normalised action between control steps."""
    exhaustion: float = 10.0
    """Weight of ``max(1 - propellant_left / exhaustion_reserve, 0)``."""
    exhaustion_reserve: float = 100.0
    """Propellant margin below which the exhaustion penalty grows, kg."""
    no_touchdown: float = 1.0
    """Weight of ``lowest_height / no_touchdown_height_scale`` for landers still in flight
    at the end of the horizon. The lowest height of the rollout is where a booster that
    cannot hover stopped before climbing away. The penalty adds the touchdown-speed cost
    of a touchdown at zero speed, so stopping just above the ground costs about as much as
    touching it at almost zero speed. A small jump remains (about 5 % of the total for a
    0.05 s step) because the lowest height and its propellant are sampled at control
    steps, not at the exact lowest point."""
    no_touchdown_height_scale: float = 1.0
    """Height that adds one unit to the no-touchdown penalty, m."""


@struct.dataclass
class LandingOutcome:
    """Per-lander results of a rollout; fields have the batch shape."""

    touched_down: jax.Array
    touchdown_speed: jax.Array
    """Speed at touchdown, m/s (speed at the end of the horizon if no touchdown)."""
    propellant_used: jax.Array
    """Propellant used until the end of the descent, kg."""
    propellant_left: jax.Array
    """Propellant left at the end of the descent, kg."""
    exhausted: jax.Array
    """True if the propellant ran out before touchdown or the end of the horizon."""
    success: jax.Array
    final_height: jax.Array
    """m."""
    lowest_height: jax.Array
    """Lowest height over the control steps and the final state, m."""


def landing_outcome(
    vehicle: Vehicle, trajectory: Trajectory, params: Params, cost: LandingCost
) -> LandingOutcome:
    """Summarise one rollout (use ``jax.vmap`` for a batch).

    The descent ends at touchdown or, for a lander still in flight at the end of the
    horizon, at its lowest point. Propellant used is counted to the end of the descent,
    so a booster that stops above the ground and climbs away is not charged for the
    climb.
    """
    final = trajectory.final.vehicle
    speed = vehicle.touchdown_speed(final, params)
    touched = trajectory.final.touched_down
    heights = jax.vmap(lambda state: vehicle.height(state, params))(trajectory.states)
    final_height = vehicle.height(final, params)
    lowest = jnp.argmin(heights)
    final_is_lowest = final_height <= heights[lowest]
    descent_end = jax.tree_util.tree_map(
        lambda states, last: jnp.where(final_is_lowest, last, states[lowest]),
        trajectory.states,
        final,
    )
    left = vehicle.propellant_mass(descent_end, params)
    used = vehicle.propellant_mass(trajectory.initial, params) - left
    exhausted = vehicle.propellant_mass(final, params) < cost.exhaustion_tolerance
    return LandingOutcome(
        touched_down=touched,
        touchdown_speed=speed,
        propellant_used=used,
        propellant_left=left,
        exhausted=exhausted,
        success=touched & (speed <= cost.speed_limit) & ~exhausted,
        final_height=final_height,
        lowest_height=jnp.minimum(heights[lowest], final_height),
    )


def _active_mean(values: jax.Array, active: jax.Array) -> jax.Array:
    weights = active.astype(values.dtype)
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def landing_cost_terms(
    vehicle: Vehicle, trajectory: Trajectory, params: Params, cost: LandingCost
) -> tuple[dict[str, jax.Array], LandingOutcome]:
    """Return the weighted cost terms of one rollout (scalars) and its outcome.

    Where the cost is not smooth: the crash and exhaustion hinges have a kink, the
    touchdown terms switch on at the (interpolated, so continuous) touchdown, and the
    thrust cut at the dry mass is a step.
    """
    outcome = landing_outcome(vehicle, trajectory, params, cost)
    touched = outcome.touched_down.astype(outcome.touchdown_speed.dtype)
    speed = outcome.touchdown_speed

    low, high = vehicle.action_bounds(params)
    normalised = (trajectory.actions - low) / (high - low)
    effort = _active_mean(jnp.sum(normalised**2, axis=-1), trajectory.active)
    changes = jnp.sum(jnp.diff(normalised, axis=0) ** 2, axis=-1)
    smooth = _active_mean(changes, trajectory.active[1:])

    excess = jnp.maximum(speed - cost.crash_margin * cost.speed_limit, 0.0)
    shortage = jnp.maximum(1.0 - outcome.propellant_left / cost.exhaustion_reserve, 0.0)
    height = jnp.maximum(outcome.lowest_height, 0.0)
    speed_error = (speed - cost.target_speed) / cost.speed_limit
    zero_speed_error = cost.target_speed / cost.speed_limit
    terms = {
        "touchdown_speed": cost.touchdown_speed * touched * speed_error**2,
        "crash": cost.crash * touched * excess / cost.speed_limit,
        "propellant": cost.propellant * outcome.propellant_used / cost.propellant_scale,
        "control_effort": cost.control_effort * effort,
        "smoothness": cost.smoothness * smooth,
        "exhaustion": cost.exhaustion * shortage,
        "no_touchdown": (1.0 - touched)
        * (
            cost.touchdown_speed * zero_speed_error**2
            + cost.no_touchdown * height / cost.no_touchdown_height_scale
        ),
    }
    return terms, outcome
