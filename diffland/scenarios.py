"""Randomised start states for landing scenarios, kept only where a landing is feasible."""

from __future__ import annotations

import dataclasses
import functools

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
    ``ValueError`` if ``max_draws`` chunks are not enough, because the ranges leave almost
    no feasible state.
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
        raise ValueError(
            f"only {total} of {max_draws * chunk} drawn states are feasible, fewer than the "
            f"{count} requested; widen the ranges of {scenario} or relax its margins."
        )

    def join(parts):
        return jax.tree_util.tree_map(lambda *xs: jnp.asarray(np.concatenate(xs)[:count]), *parts)

    return join(kept_states), join(kept_optima)
