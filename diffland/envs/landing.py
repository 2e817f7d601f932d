"""A brax environment for any diffland vehicle: reset from a pool of start states, step
with :func:`~diffland.dynamics.simulate.control_step`, and a reward that agrees with the
APG landing cost.

Episode. ``reset(rng)`` picks a random entry of a pool of feasible start states. The
pool is drawn once, on the host, when the environment is built, so ``reset`` and ``step``
are pure and jittable. The ``pipeline_state`` is the diffland :class:`SimState`. The episode ends
(``done = 1``) when the vehicle touches down or is lost in flight (see
:meth:`LandingEnv.is_lost`). The environment keeps no step counter: brax's
``EpisodeWrapper`` owns ``info['steps']`` and ends the episode at its ``episode_length``,
which should be :attr:`LandingEnv.episode_length`.

Actions. Brax's PPO and APG policies emit actions in ``[-1, 1]`` (by default a
tanh-squashed normal distribution, in brax 0.14.2). Each entry is clipped to ``[-1, 1]``
and mapped affinely onto the vehicle's action bounds: -1 is the lower bound (minimum
throttle, full negative gimbal) and +1 the upper bound. An action with a NaN or infinite
entry leaves the vehicle where it is and ends the episode as lost, with the lost
vehicle's terminal cost and the crash penalty, so a diverged policy cannot carry NaN
into the state or the return.

Reward. With the potential ``Phi`` of :class:`ShapingScales` the reward of a step from
``s`` to ``s'`` is::

    r = Phi(s') - Phi(s)                                    (shaping, gamma = 1)
        - propellant * (propellant burnt in the step) / propellant_scale
        - [episode ends] * terminal_cost(s')
        + [success] * success_bonus - [failure] * crash_penalty

with the weights ``propellant`` and ``propellant_scale`` of the :class:`LandingCost`.
``Phi`` is set to zero at every state where the episode has ended, so the shaping of an
episode that ends sums to ``-Phi(s_0)``, a constant of the start state. The shaping thus
makes the reward dense without changing which policy is optimal for the undiscounted
return.
Brax's PPO discounts rewards (``discounting`` defaults to 0.9 in brax 0.14.2), and then
the invariance is only approximate. An
episode that EpisodeWrapper truncates keeps ``Phi(s_T) <= 0``, which penalises height and
speed left at the end like the no-touchdown term of the APG cost.

The terminal cost at touchdown is the touchdown part of the landing cost:
``touchdown_speed + touchdown_attitude + crash`` of
:func:`~diffland.training.cost.landing_cost_terms`, computed from
:meth:`LandingCost.limit_ratios` of :meth:`Vehicle.touchdown_measures`. A lost vehicle
is charged as if it fell to the ground without thrust or drag: the same terms with its
vertical speed replaced by the impact speed ``sqrt(v_z^2 + 2 g h)``. This keeps flipping
over or climbing away from being a cheap way out of a crash. The APG cost's
control-effort and smoothness terms are left out. PPO has its own entropy term, and the
smoothness term would need the previous action, kept in ``info``, which brax 0.14.2's
``AutoResetWrapper`` does not reset (it restores only ``pipeline_state`` and ``obs``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from brax.envs.base import Env
from brax.envs.base import State as EnvState

from diffland.dynamics.base import Params, State, TouchdownMeasures, Vehicle
from diffland.dynamics.simulate import SimConfig, SimState, control_step, initial_sim_state
from diffland.training.cost import LandingCost, touchdown_terms, within_limits

logger = logging.getLogger(__name__)

METRIC_NAMES = ("success", "crashed", "lost", "touched_down", "terminal_cost")
"""Keys of ``State.metrics``. Each is nonzero only at the step where the episode ends, so
brax's ``EpisodeWrapper``, which sums metrics over an episode, reports one event per
episode: ``success`` (a touchdown within every limit with propellant left), ``crashed``
(any other touchdown), ``lost`` (ended in flight), ``touched_down`` and
``terminal_cost``. Exactly one of ``success``, ``crashed`` and ``lost`` is 1 at the end
of an episode that is not truncated."""

StartSampler = Callable[[jax.Array, int], State]
"""``sample(key, count) -> batch of start states`` (leading axis ``count`` on every leaf)."""


@dataclasses.dataclass(frozen=True)
class ShapingScales:
    """Scales of the shaping potential.

    ``Phi(s) = -(h / height + v_z / vertical_speed + v_lat / lateral_speed
    + d / pad_distance + tilt / tilt)`` with the height ``h`` of the feet (clipped at zero),
    the magnitudes of the vertical and horizontal velocity, the distance ``d`` of the
    centre of mass from the pad centre and the tilt from the vertical. The defaults make
    each term of a typical start state (2 km, 250 m/s, 50 m off the pad, 5 m/s sideways)
    between 1 and 25.
    """

    height: float = 100.0
    """Height that costs one unit of potential, m."""
    vertical_speed: float = 10.0
    """Vertical speed that costs one unit, m/s."""
    lateral_speed: float = 1.0
    """Horizontal speed that costs one unit, m/s."""
    pad_distance: float = 10.0
    """Distance from the pad centre that costs one unit, m."""
    tilt_deg: float = 5.0
    """Tilt that costs one unit, degrees."""

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(
                    f"ShapingScales.{field.name} = {value!r} must be a finite number > 0."
                )

    def potential(self, height: jax.Array, measures: TouchdownMeasures) -> jax.Array:
        """Return ``Phi`` (zero or negative) at a state with ``height`` and ``measures``."""
        return -(
            jnp.maximum(height, 0.0) / self.height
            + measures.vertical_speed / self.vertical_speed
            + measures.lateral_speed / self.lateral_speed
            + measures.pad_distance / self.pad_distance
            + measures.tilt / math.radians(self.tilt_deg)
        )


def touchdown_cost(cost: LandingCost, measures: TouchdownMeasures) -> jax.Array:
    """Return the touchdown terms of the landing cost at ``measures``, summed.

    The sum of ``touchdown_speed``, ``touchdown_attitude`` and ``crash`` of
    :func:`~diffland.training.cost.touchdown_terms` for a lander that touched down.
    """
    return sum(touchdown_terms(cost, measures).values())


def _safe_sqrt(x: jax.Array) -> jax.Array:
    """Return ``sqrt(max(x, 0))`` with gradient zero, not infinite, at zero."""
    positive = x > 0.0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def _as_dtype(tree: Any, dtype) -> Any:
    """Cast every floating-point leaf of ``tree`` to ``dtype`` and leave the others."""

    def cast(leaf):
        leaf = jnp.asarray(leaf)
        return leaf.astype(dtype) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf

    return jax.tree_util.tree_map(cast, tree)


class LandingEnv(Env):
    """A brax environment that lands one diffland vehicle from a random start state.

    Args:
      vehicle: the diffland vehicle.
      params: its physical parameters.
      starts: either a callable ``sample(key, count)`` that returns a batch of feasible
        start states, called once here with ``jax.random.PRNGKey(seed)`` and
        ``pool_size``, or a batch of start states used as the pool as it is (then
        ``pool_size`` and ``seed`` are ignored).
      config: control step, physics sub-steps and integrator; its ``horizon`` is the
        natural episode length, :attr:`episode_length`.
      cost: limits and weights shared with the APG landing cost.
      shaping: scales of the shaping potential.
      success_bonus: reward added at a successful landing.
      crash_penalty: reward subtracted when an episode ends without success.
      max_tilt_deg: tilt from the vertical beyond which the vehicle is lost, degrees.
      ceiling_factor: the vehicle is lost above this multiple of the highest start
        height in the pool.
      pool_size: number of start states to draw.
      seed: seed of the draw.
      dtype: float32 or float64, the type of the parameters, states, observations and
        rewards.
    """

    def __init__(
        self,
        vehicle: Vehicle,
        params: Params,
        starts: StartSampler | State,
        *,
        config: SimConfig | None = None,
        cost: LandingCost | None = None,
        shaping: ShapingScales | None = None,
        success_bonus: float = 10.0,
        crash_penalty: float = 10.0,
        max_tilt_deg: float = 90.0,
        ceiling_factor: float = 1.5,
        pool_size: int = 4096,
        seed: int = 0,
        dtype=jnp.float32,
    ):
        if not jnp.issubdtype(dtype, jnp.floating) or jnp.finfo(dtype).bits < 32:
            raise ValueError(
                f"dtype = {dtype!r} is invalid: the environment simulates its dynamics state "
                "in this dtype, which must be float32 or float64 (with jax_enable_x64). Train "
                "a network in bfloat16 through the network's own dtype setting instead."
            )
        for name, value in (("success_bonus", success_bonus), ("crash_penalty", crash_penalty)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} = {value!r} must be a finite number >= 0.")
        if not 0 < max_tilt_deg <= 180:
            raise ValueError(f"max_tilt_deg = {max_tilt_deg!r} must be in (0, 180] degrees.")
        if not ceiling_factor > 1:
            raise ValueError(
                f"ceiling_factor = {ceiling_factor!r} must be above 1, or start states would "
                "count as lost."
            )
        self.vehicle = vehicle
        self.dtype = jnp.dtype(dtype)
        self.params = _as_dtype(params, self.dtype)
        self.sim_config = config if config is not None else SimConfig()
        self.cost = cost if cost is not None else LandingCost()
        self.shaping = shaping if shaping is not None else ShapingScales()
        self.success_bonus = float(success_bonus)
        self.crash_penalty = float(crash_penalty)
        self.max_tilt = math.radians(max_tilt_deg)

        self.pool = self._build_pool(starts, pool_size, seed)
        self.pool_size = int(jax.tree_util.tree_leaves(self.pool)[0].shape[0])
        heights = jax.vmap(lambda state: vehicle.height(state, self.params))(self.pool)
        self.ceiling = float(ceiling_factor * np.max(np.asarray(heights)))
        """Height above which the vehicle is lost, m."""
        lost = np.asarray(jax.vmap(self.is_lost)(self.pool))
        if lost.any():
            first_lost = int(np.argmax(lost))
            raise ValueError(
                f"{int(lost.sum())} of {self.pool_size} start states (the first at index "
                f"{first_lost}) count as lost: tilted beyond max_tilt_deg = {max_tilt_deg} "
                f"or with less propellant than exhaustion_tolerance = "
                f"{self.cost.exhaustion_tolerance} kg. Remove them or relax those limits."
            )

        first = jax.tree_util.tree_map(lambda leaf: leaf[0], self.pool)
        observation = jax.eval_shape(lambda state: vehicle.observation(state, self.params), first)
        self._observation_size = int(observation.shape[-1])

    def _build_pool(self, starts, pool_size: int, seed: int) -> State:
        """Draw the pool of start states, or take a given batch, and validate it."""
        if callable(starts):
            if not (isinstance(pool_size, int) and pool_size >= 1):
                raise ValueError(f"pool_size = {pool_size!r} must be an integer >= 1.")
            logger.info(
                "drawing %d start states for %s (seed %d)",
                pool_size,
                type(self.vehicle).__name__,
                seed,
            )
            pool = starts(jax.random.PRNGKey(seed), pool_size)
        else:
            pool = starts
        pool = _as_dtype(pool, self.dtype)
        leaves = jax.tree_util.tree_leaves(pool)
        if not leaves or jnp.ndim(leaves[0]) == 0:
            raise ValueError(
                "the start states are not a batch: every leaf needs a leading batch axis "
                "(stack single states, or pass a sampler)."
            )
        counts = {int(leaf.shape[0]) for leaf in leaves}
        if len(counts) != 1:
            raise ValueError(f"the start-state leaves have different batch sizes {counts}.")
        self.vehicle.validate(pool, self.params)
        return pool

    @property
    def observation_size(self) -> int:
        return self._observation_size

    @property
    def action_size(self) -> int:
        return self.vehicle.action_size

    @property
    def backend(self) -> str:
        """Name of the physics: ``"diffland"``, not one of brax's pipelines."""
        return "diffland"

    @property
    def dt(self) -> float:
        """Time between actions, s."""
        return self.sim_config.control_dt

    @property
    def episode_length(self) -> int:
        """Natural episode length in control steps, the ``horizon`` of the SimConfig; pass
        it as ``episode_length`` to brax's wrappers and trainers."""
        return self.sim_config.horizon

    def physical_action(self, action: jax.Array) -> jax.Array:
        """Map an action in ``[-1, 1]`` (clipped first) onto the vehicle's action bounds."""
        low, high = self.vehicle.action_bounds(self.params)
        unit = jnp.clip(jnp.asarray(action, self.dtype), -1.0, 1.0)
        return low + 0.5 * (unit + 1.0) * (high - low)

    def is_lost(self, state: State) -> jax.Array:
        """Return True for a vehicle in flight that cannot land any more.

        It is lost when it tilts beyond ``max_tilt_deg`` (90 degrees by default), climbs
        above :attr:`ceiling`, or has less propellant than the cost's
        ``exhaustion_tolerance`` (with the engine out it can only fall).
        """
        measures = self.vehicle.touchdown_measures(state, self.params)
        height = self.vehicle.height(state, self.params)
        propellant = self.vehicle.propellant_mass(state, self.params)
        return (
            (measures.tilt > self.max_tilt)
            | (height > self.ceiling)
            | (propellant < self.cost.exhaustion_tolerance)
        )

    def _ended(self, sim: SimState) -> jax.Array:
        return sim.touched_down | self.is_lost(sim.vehicle)

    def _potential(self, state: State) -> jax.Array:
        measures = self.vehicle.touchdown_measures(state, self.params)
        return self.shaping.potential(self.vehicle.height(state, self.params), measures)

    def _observe(self, sim: SimState) -> jax.Array:
        return self.vehicle.observation(sim.vehicle, self.params).astype(self.dtype)

    def reset(self, rng: jax.Array) -> EnvState:
        """Start an episode from a random entry of the start-state pool."""
        index = jax.random.randint(rng, (), 0, self.pool_size)
        start = jax.tree_util.tree_map(lambda leaf: leaf[index], self.pool)
        sim = initial_sim_state(start)
        zero = jnp.zeros((), self.dtype)
        return EnvState(
            pipeline_state=sim,
            obs=self._observe(sim),
            reward=zero,
            done=zero,
            metrics={name: zero for name in METRIC_NAMES},
            info={},
        )

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        """Advance one control step; see the module docstring for the reward.

        A state where the episode has already ended is absorbing: it does not move and
        its reward is zero (this matters only without brax's ``AutoResetWrapper``).
        """
        vehicle, params, cost = self.vehicle, self.params, self.cost
        sim = state.pipeline_state
        ended_before = self._ended(sim)
        finite = jnp.all(jnp.isfinite(action))
        safe_action = jnp.where(finite, action, 0.0)
        moved = control_step(
            vehicle, self.sim_config, sim, self.physical_action(safe_action), params
        )
        next_sim = jax.tree_util.tree_map(
            lambda old, new: jnp.where(ended_before | ~finite, old, new), sim, moved
        )
        final = next_sim.vehicle

        touched = next_sim.touched_down
        lost = ~touched & (self.is_lost(final) | ~finite)
        ends_now = (touched | lost) & ~ended_before

        measures = vehicle.touchdown_measures(final, params)
        height = vehicle.height(final, params)
        impact_speed = _safe_sqrt(
            measures.vertical_speed**2 + 2.0 * params.gravity * jnp.maximum(height, 0.0)
        )
        charged = measures.replace(
            vertical_speed=jnp.where(lost, impact_speed, measures.vertical_speed)
        )
        terminal_cost = jnp.where(ends_now, touchdown_cost(cost, charged), 0.0)
        propellant_left = vehicle.propellant_mass(final, params)
        landed = touched & within_limits(cost, measures)
        success = ends_now & landed & (propellant_left >= cost.exhaustion_tolerance)
        failure = ends_now & ~success

        potential_before = jnp.where(ended_before, 0.0, self._potential(sim.vehicle))
        potential_after = jnp.where(touched | lost, 0.0, self._potential(final))
        burnt = vehicle.propellant_mass(sim.vehicle, params) - propellant_left
        reward = (
            potential_after
            - potential_before
            - cost.propellant * burnt / cost.propellant_scale
            - terminal_cost
            + self.success_bonus * success
            - self.crash_penalty * failure
        )

        def flag(condition):
            return condition.astype(self.dtype)

        # Keep the keys that wrappers add (brax's EvalWrapper adds "reward" at reset).
        metrics = {
            **state.metrics,
            "success": flag(success),
            "crashed": flag(ends_now & touched & ~success),
            "lost": flag(ends_now & lost),
            "touched_down": flag(ends_now & touched),
            "terminal_cost": terminal_cost.astype(self.dtype),
        }
        return state.replace(
            pipeline_state=next_sim,
            obs=self._observe(next_sim),
            reward=reward.astype(self.dtype),
            done=flag(touched | lost),
            metrics=metrics,
        )
