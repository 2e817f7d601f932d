"""The map from an unbounded command to an action inside its bounds."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def bounded_action(command: jax.Array, low: jax.Array, high: jax.Array) -> jax.Array:
    """Map a command in action units into ``[low, high]`` with a scaled tanh.

    ``action = mid + half * tanh((command - mid) / half)`` with ``mid = (low + high) / 2``
    and ``half = (high - low) / 2``. The map has slope 1 at the middle of the range and
    reaches the bounds only in the limit (in floating point a far saturated command rounds
    to the bound). Its slope ``1 - tanh^2`` is positive everywhere, so a saturated command
    still passes a gradient: 0.42 at a bound, 0.26 at 0.3 half-ranges beyond it and 0.07
    at one half-range beyond it, where a hard clip would pass none.
    """
    mid = 0.5 * (low + high)
    half = 0.5 * (high - low)
    return mid + half * jnp.tanh((command - mid) / half)
