"""The landing outcome of a rollout and the differentiable landing cost built from it."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import struct

from diffland.dynamics.base import Params, TouchdownMeasures, Vehicle
from diffland.dynamics.simulate import Trajectory


@dataclasses.dataclass(frozen=True)
class LandingCost:
    """Weights and limits of the landing cost; every term is logged separately.

    A landing succeeds when the vehicle touches down within the horizon with propellant
    left and every touchdown measure within its limit: vertical speed, lateral speed,
    tilt, angular rate, distance from the pad centre, and the tip-over measure below 1.
    A vehicle that moves only vertically has zero lateral speed, tilt, angular rate and
    pad distance, so only the speed limit applies to it.
    """

    speed_limit: float = 2.0
    """Highest vertical touchdown speed of a successful landing, m/s."""
    lateral_speed_limit: float = 1.0
    """Highest horizontal speed at touchdown, m/s."""
    tilt_limit_deg: float = 5.0
    """Largest angle between the body axis and the vertical at touchdown, degrees."""
    angular_rate_limit: float = 0.1
    """Largest angular speed at touchdown, rad/s."""
    pad_radius: float = 10.0
    """Largest distance of the centre of mass from the pad centre at touchdown, m."""
    exhaustion_tolerance: float = 1.0
    """Propellant below which the tanks count as empty, kg."""

    touchdown_speed: float = 1.0
    """Weight of ``((speed - target_speed) / speed_limit)^2`` at touchdown."""
    target_speed: float = 1.0
    """Touchdown speed the cost prefers, m/s. Aiming inside the success band keeps
    landers away from its two edges: a crash above ``speed_limit`` and, for a vehicle
    that cannot hover, stopping above the ground and climbing away below zero speed."""
    touchdown_attitude: float = 1.0
    """Weight of the sum of the squared ratios of lateral speed, tilt, angular rate and
    pad distance to their limits at touchdown."""
    crash: float = 4.0
    """Weight of ``sum_i max(ratio_i - crash_margin, 0)`` over the ratios of every
    touchdown measure to its limit (the vertical one is ``speed / speed_limit``)."""
    crash_margin: float = 0.75
    """Fraction of each limit where the crash penalty starts."""
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

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            positive = field.name in self.limit_names
            valid = isinstance(value, int | float) and math.isfinite(value)
            if not valid or value < 0 or (positive and value == 0):
                bound = "> 0" if positive else ">= 0"
                raise ValueError(
                    f"LandingCost.{field.name} = {value!r} is invalid: pass a finite number "
                    f"{bound}."
                )
        if self.tilt_limit_deg > 90.0:
            raise ValueError(
                f"LandingCost.tilt_limit_deg = {self.tilt_limit_deg!r} is invalid: beyond 90 "
                "degrees the vehicle lies on its side or upside down. Pass a value in (0, 90]."
            )

    limit_names = (
        "speed_limit",
        "lateral_speed_limit",
        "tilt_limit_deg",
        "angular_rate_limit",
        "pad_radius",
        "propellant_scale",
        "exhaustion_reserve",
        "no_touchdown_height_scale",
    )

    def limit_ratios(self, measures: TouchdownMeasures) -> dict[str, jax.Array]:
        """Return each touchdown measure divided by its limit; a landing needs all <= 1."""
        return {
            "vertical_speed": measures.vertical_speed / self.speed_limit,
            "lateral_speed": measures.lateral_speed / self.lateral_speed_limit,
            "tilt": measures.tilt / math.radians(self.tilt_limit_deg),
            "angular_rate": measures.angular_rate / self.angular_rate_limit,
            "pad_distance": measures.pad_distance / self.pad_radius,
            "tip_over": measures.tip_over,
        }


@struct.dataclass
class LandingOutcome:
    """Per-lander results of a rollout; fields have the batch shape."""

    touched_down: jax.Array
    touchdown_speed: jax.Array
    """Vertical speed at touchdown, m/s (at the end of the horizon if no touchdown)."""
    lateral_speed: jax.Array
    """Horizontal speed at touchdown, m/s."""
    tilt: jax.Array
    """Tilt from the vertical at touchdown, rad."""
    angular_rate: jax.Array
    """Angular speed at touchdown, rad/s."""
    pad_distance: jax.Array
    """Distance of the centre of mass from the pad centre at touchdown, m."""
    tip_over: jax.Array
    """Tip-over measure at touchdown (falls over at 1 or more)."""
    within_limits: jax.Array
    """True if every touchdown measure is within its limit."""
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
    measures = vehicle.touchdown_measures(final, params)
    within = within_limits(cost, measures)
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
        touchdown_speed=measures.vertical_speed,
        lateral_speed=measures.lateral_speed,
        tilt=measures.tilt,
        angular_rate=measures.angular_rate,
        pad_distance=measures.pad_distance,
        tip_over=measures.tip_over,
        within_limits=within,
        propellant_used=used,
        propellant_left=left,
        exhausted=exhausted,
        success=touched & within & ~exhausted,
        final_height=final_height,
        lowest_height=jnp.minimum(heights[lowest], final_height),
    )


_ATTITUDE_RATIOS = ("lateral_speed", "tilt", "angular_rate", "pad_distance")


def within_limits(cost: LandingCost, measures: TouchdownMeasures) -> jax.Array:
    """Return True where every touchdown measure is within its limit (any batch shape)."""
    ratios = cost.limit_ratios(measures)
    return jnp.all(jnp.stack([ratio <= 1.0 for ratio in ratios.values()]), axis=0)


def touchdown_terms(cost: LandingCost, measures: TouchdownMeasures) -> dict[str, jax.Array]:
    """Return the weighted cost terms of a touchdown with ``measures``.

    ``touchdown_speed`` is the squared error from the preferred vertical speed,
    ``touchdown_attitude`` the sum of the squared ratios of lateral speed, tilt, angular
    rate and pad distance to their limits, and ``crash`` the hinge
    ``sum_i max(ratio_i - crash_margin, 0)`` over every limit ratio.
    """
    ratios = cost.limit_ratios(measures)
    speed_error = (measures.vertical_speed - cost.target_speed) / cost.speed_limit
    attitude = sum(ratios[name] ** 2 for name in _ATTITUDE_RATIOS)
    excess = sum(jnp.maximum(ratio - cost.crash_margin, 0.0) for ratio in ratios.values())
    return {
        "touchdown_speed": cost.touchdown_speed * speed_error**2,
        "touchdown_attitude": cost.touchdown_attitude * attitude,
        "crash": cost.crash * excess,
    }


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
    touchdown = touchdown_terms(cost, vehicle.touchdown_measures(trajectory.final.vehicle, params))
    touched = outcome.touched_down.astype(outcome.touchdown_speed.dtype)

    low, high = vehicle.action_bounds(params)
    normalised = (trajectory.actions - low) / (high - low)
    effort = _active_mean(jnp.sum(normalised**2, axis=-1), trajectory.active)
    changes = jnp.sum(jnp.diff(normalised, axis=0) ** 2, axis=-1)
    smooth = _active_mean(changes, trajectory.active[1:])

    shortage = jnp.maximum(1.0 - outcome.propellant_left / cost.exhaustion_reserve, 0.0)
    height = jnp.maximum(outcome.lowest_height, 0.0)
    zero_speed_error = cost.target_speed / cost.speed_limit
    terms = {
        "touchdown_speed": touched * touchdown["touchdown_speed"],
        "touchdown_attitude": touched * touchdown["touchdown_attitude"],
        "crash": touched * touchdown["crash"],
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
