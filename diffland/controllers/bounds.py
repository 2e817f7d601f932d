"""The map from an unbounded command to an action inside its bounds."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def bounded_action(command: jax.Array, low: jax.Array, high: jax.Array) -> jax.Array:
    """Map a command in action units into ``[low, high]`` with a scaled tanh.

    ``action = mid + half * tanh((command - mid) / half)`` with ``mid = (low + high) / 2``
    and ``half = (high - low) / 2``. At the middle of the range the map has slope 1, so a
    command well inside the bounds passes almost unchanged, and it never reaches the bounds
    exactly. Its slope ``1 - tanh^2`` is positive everywhere: a command beyond a bound still
    receives a gradient (0.42 at 0.3 half-ranges past a bound, 0.07 at one half-range),
    which a hard clip would cut to zero.
    """
    mid = 0.5 * (low + high)
    half = 0.5 * (high - low)
    return mid + half * jnp.tanh((command - mid) / half)
