"""The landing outcome of a rollout and the differentiable landing cost built from it.

The cost reads a few quantities reduced over the control steps (:class:`LandingSummary`).
They come either from a recorded :class:`~diffland.dynamics.Trajectory`
(:func:`summarize_trajectory`) or, without recording anything per step, from the carry of
the rollout's scan (:func:`landing_summary_rollout`). Both feed the same functions,
:func:`summary_outcome` and :func:`summary_cost_terms`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from diffland.dynamics.base import Params, State, TouchdownMeasures, Vehicle
from diffland.dynamics.simulate import (
    Policy,
    SimConfig,
    SimState,
    Trajectory,
    reduce_rollout,
    reduce_rollout_batch,
)


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


@struct.dataclass
class LandingSummary:
    """The per-step quantities of one rollout that the landing cost reads, reduced over
    its control steps. Fields have shape ``()`` except ``last_action``.

    "Active" steps are those that began before touchdown (:attr:`Trajectory.active`),
    and actions are normalised to [0, 1] over the vehicle's action bounds.
    """

    initial_propellant: jax.Array
    """Propellant mass of the initial state, kg."""
    lowest_height: jax.Array
    """Lowest height of the vehicle states at the start of the control steps, m."""
    lowest_propellant: jax.Array
    """Propellant mass of the first state with ``lowest_height``, kg (the ``jnp.argmin``
    rule)."""
    effort_sum: jax.Array
    """Sum over active steps of the squared normalised action, summed over its entries."""
    active_steps: jax.Array
    """Number of active steps (float)."""
    change_sum: jax.Array
    """Sum over active steps after the first of the squared change of the normalised
    action from the step before, summed over its entries."""
    change_steps: jax.Array
    """Number of active steps after the first (float)."""
    last_action: jax.Array
    """Normalised action of the last control step, shape ``(action_size,)``."""


def _normalised_action(vehicle: Vehicle, action: jax.Array, params: Params) -> jax.Array:
    low, high = vehicle.action_bounds(params)
    return (action - low) / (high - low)


def initial_landing_summary(
    vehicle: Vehicle, initial_state: State, params: Params, action_size: int
) -> LandingSummary:
    """Return the summary before the first control step of a rollout from
    ``initial_state``, for actions of ``action_size`` entries."""
    propellant = vehicle.propellant_mass(initial_state, params)
    zero = jnp.zeros_like(propellant)
    return LandingSummary(
        initial_propellant=propellant,
        lowest_height=vehicle.height(initial_state, params),
        lowest_propellant=propellant,
        effort_sum=zero,
        active_steps=zero,
        change_sum=zero,
        change_steps=zero,
        last_action=jnp.zeros((action_size,), propellant.dtype),
    )


def accumulate_landing_summary(
    vehicle: Vehicle,
    params: Params,
    summary: LandingSummary,
    step: jax.Array,
    state: State,
    action: jax.Array,
    active: jax.Array,
) -> LandingSummary:
    """Fold one control step (index ``step``, vehicle ``state`` at its start, ``action``
    over it, ``active``) into ``summary``. This is the accumulator that
    :func:`~diffland.dynamics.reduce_rollout` calls."""
    height = vehicle.height(state, params)
    # Strictly lower only, so that of equally low states the first one is kept.
    lower = height < summary.lowest_height
    normalised = _normalised_action(vehicle, action, params)
    weight = active.astype(summary.effort_sum.dtype)
    # Step 0 has no previous action, so its change gets weight zero.
    change_weight = weight * (step > 0).astype(weight.dtype)
    change = jnp.sum((normalised - summary.last_action) ** 2)
    updated = LandingSummary(
        initial_propellant=summary.initial_propellant,
        lowest_height=jnp.where(lower, height, summary.lowest_height),
        lowest_propellant=jnp.where(
            lower, vehicle.propellant_mass(state, params), summary.lowest_propellant
        ),
        effort_sum=summary.effort_sum + weight * jnp.sum(normalised**2),
        active_steps=summary.active_steps + weight,
        change_sum=summary.change_sum + change_weight * change,
        change_steps=summary.change_steps + change_weight,
        last_action=normalised,
    )
    # A scan carry keeps its dtypes, and an action or bounds of another float type would
    # promote the sums.
    return jax.tree_util.tree_map(lambda new, old: new.astype(old.dtype), updated, summary)


def landing_summary_rollout(
    vehicle: Vehicle,
    config: SimConfig,
    policy: Policy,
    initial_state: State,
    params: Params,
    policy_carry: Any,
) -> tuple[SimState, LandingSummary]:
    """Simulate like :func:`~diffland.dynamics.rollout` and return the final simulation
    state with the :class:`LandingSummary` accumulated in the scan carry.

    Nothing is recorded per step, so with ``config.remat = "nested"`` the backward pass
    of the cost keeps memory that grows about like ``sqrt(horizon)``. Batch with
    ``jax.vmap``.
    """
    low, _ = vehicle.action_bounds(params)
    summary = initial_landing_summary(vehicle, initial_state, params, jnp.shape(low)[-1])
    return reduce_rollout(
        vehicle,
        config,
        policy,
        initial_state,
        params,
        policy_carry,
        functools.partial(accumulate_landing_summary, vehicle, params),
        summary,
    )


def landing_summary_batch(
    vehicle: Vehicle,
    config: SimConfig,
    policy: Policy,
    initial_states: State,
    params: Params,
    policy_carry: Any,
) -> tuple[SimState, LandingSummary]:
    """Run :func:`landing_summary_rollout` for a batch of landers that share ``params``
    and start from ``policy_carry``, with
    :func:`~diffland.dynamics.reduce_rollout_batch`.

    ``initial_states`` has the batch on the first axis of every leaf, and so do the
    returned final states and summaries. They equal those of ``jax.vmap`` of
    :func:`landing_summary_rollout` up to float rounding.
    """
    low, _ = vehicle.action_bounds(params)
    summaries = jax.vmap(
        lambda state: initial_landing_summary(vehicle, state, params, jnp.shape(low)[-1])
    )(initial_states)
    return reduce_rollout_batch(
        vehicle,
        config,
        policy,
        initial_states,
        params,
        policy_carry,
        functools.partial(accumulate_landing_summary, vehicle, params),
        summaries,
    )


def summarize_trajectory(
    vehicle: Vehicle, trajectory: Trajectory, params: Params
) -> LandingSummary:
    """Return the :class:`LandingSummary` of one recorded rollout; the same values as
    :func:`landing_summary_rollout` up to the order of the sums."""
    heights = jax.vmap(lambda state: vehicle.height(state, params))(trajectory.states)
    lowest = jnp.argmin(heights)
    lowest_state = jax.tree_util.tree_map(lambda states: states[lowest], trajectory.states)
    normalised = _normalised_action(vehicle, trajectory.actions, params)
    weights = trajectory.active.astype(normalised.dtype)
    changes = jnp.sum(jnp.diff(normalised, axis=0) ** 2, axis=-1)
    return LandingSummary(
        initial_propellant=vehicle.propellant_mass(trajectory.initial, params),
        lowest_height=heights[lowest],
        lowest_propellant=vehicle.propellant_mass(lowest_state, params),
        effort_sum=jnp.sum(weights * jnp.sum(normalised**2, axis=-1)),
        active_steps=jnp.sum(weights),
        change_sum=jnp.sum(weights[1:] * changes),
        change_steps=jnp.sum(weights[1:]),
        last_action=normalised[-1],
    )


def summary_outcome(
    vehicle: Vehicle,
    final: SimState,
    summary: LandingSummary,
    params: Params,
    cost: LandingCost,
) -> LandingOutcome:
    """Return the outcome of one rollout from its final simulation state and summary.

    The descent ends at touchdown or, for a lander still in flight at the end of the
    horizon, at its lowest point. That point is the final state if it is at most as high
    as every control-step state, and else the first lowest control-step state.
    Propellant used is counted to the end of the descent, so a booster that stops above
    the ground and climbs away is not charged for the climb.
    """
    measures = vehicle.touchdown_measures(final.vehicle, params)
    within = within_limits(cost, measures)
    touched = final.touched_down
    final_height = vehicle.height(final.vehicle, params)
    final_propellant = vehicle.propellant_mass(final.vehicle, params)
    # A lander that touched down ends its descent there. Its frozen states tie with the
    # final one in height, and a tie decided by rounding would switch the propellant's
    # gradient between the final state and the summary.
    final_is_lowest = touched | (final_height <= summary.lowest_height)
    left = jnp.where(final_is_lowest, final_propellant, summary.lowest_propellant)
    exhausted = final_propellant < cost.exhaustion_tolerance
    return LandingOutcome(
        touched_down=touched,
        touchdown_speed=measures.vertical_speed,
        lateral_speed=measures.lateral_speed,
        tilt=measures.tilt,
        angular_rate=measures.angular_rate,
        pad_distance=measures.pad_distance,
        tip_over=measures.tip_over,
        within_limits=within,
        propellant_used=summary.initial_propellant - left,
        propellant_left=left,
        exhausted=exhausted,
        success=touched & within & ~exhausted,
        final_height=final_height,
        lowest_height=jnp.minimum(summary.lowest_height, final_height),
    )


def landing_outcome(
    vehicle: Vehicle, trajectory: Trajectory, params: Params, cost: LandingCost
) -> LandingOutcome:
    """Summarise one recorded rollout (use ``jax.vmap`` for a batch); see
    :func:`summary_outcome`."""
    summary = summarize_trajectory(vehicle, trajectory, params)
    return summary_outcome(vehicle, trajectory.final, summary, params, cost)


_ATTITUDE_RATIOS = ("lateral_speed", "tilt", "angular_rate", "pad_distance")


def within_limits(cost: LandingCost, measures: TouchdownMeasures) -> jax.Array:
    """Return True where every touchdown measure is within its limit (any batch shape)."""
    # A chain of elementwise ands, not a reduction over a stack: for vehicles whose
    # measures are constant (the 1-D lander's tilt), XLA folded that reduction at compile
    # time, and at batch 524,288 that took 3 s.
    within = None
    for ratio in cost.limit_ratios(measures).values():
        inside = ratio <= 1.0
        within = inside if within is None else within & inside
    return jnp.asarray(within)


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


def summary_cost_terms(
    vehicle: Vehicle,
    final: SimState,
    summary: LandingSummary,
    params: Params,
    cost: LandingCost,
) -> tuple[dict[str, jax.Array], LandingOutcome]:
    """Return the weighted cost terms of one rollout (scalars) and its outcome, from its
    final simulation state and summary.

    Where the cost is not smooth: the crash and exhaustion hinges have a kink, the
    touchdown terms switch on at the (interpolated, so continuous) touchdown, and the
    thrust cut at the dry mass is a step.
    """
    outcome = summary_outcome(vehicle, final, summary, params, cost)
    touchdown = touchdown_terms(cost, vehicle.touchdown_measures(final.vehicle, params))
    touched = outcome.touched_down.astype(outcome.touchdown_speed.dtype)
    effort = summary.effort_sum / jnp.maximum(summary.active_steps, 1.0)
    smooth = summary.change_sum / jnp.maximum(summary.change_steps, 1.0)

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


def landing_cost_terms(
    vehicle: Vehicle, trajectory: Trajectory, params: Params, cost: LandingCost
) -> tuple[dict[str, jax.Array], LandingOutcome]:
    """Return the weighted cost terms of one recorded rollout (scalars) and its outcome;
    see :func:`summary_cost_terms`."""
    summary = summarize_trajectory(vehicle, trajectory, params)
    return summary_cost_terms(vehicle, trajectory.final, summary, params, cost)
