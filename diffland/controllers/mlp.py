"""A multilayer perceptron policy on the vehicle's observation features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffland.controllers.bounds import bounded_action
from diffland.dynamics.base import Vehicle


class MLP(nn.Module):
    """Dense layers with tanh activations and a linear output layer.

    With ``zero_output=True`` the output layer's kernel and bias start at zero, so the
    network outputs exactly zero until it is trained.
    """

    hidden: Sequence[int]
    outputs: int
    zero_output: bool = False
    dtype: Any = None
    """Computation dtype (for example ``jnp.bfloat16``); None follows the inputs."""
    param_dtype: Any = jnp.float32
    """Parameter dtype; use ``jnp.float64`` (with x64 enabled) for float64 verification."""

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        x = features
        for width in self.hidden:
            x = nn.tanh(nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype)(x))
        init = nn.initializers.zeros if self.zero_output else nn.initializers.lecun_normal()
        out = nn.Dense(
            self.outputs,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=init,
            bias_init=nn.initializers.zeros,
        )(x)
        return out.astype(features.dtype)


class MLPPolicy(nn.Module):
    """Map the vehicle's observation to an action inside its bounds.

    The network output ``z`` gives ``action = mid + half * tanh(z)`` over the action
    range. The policy has no memory; its carry is an empty tuple.
    """

    vehicle: Vehicle
    hidden: Sequence[int] = (64, 64)
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, state, params, carry):
        features = self.vehicle.observation(state, params)
        z = MLP(
            self.hidden, self.vehicle.action_size, dtype=self.dtype, param_dtype=self.param_dtype
        )(features)
        low, high = self.vehicle.action_bounds(params)
        mid = 0.5 * (low + high)
        half = 0.5 * (high - low)
        return bounded_action(mid + half * z, low, high), carry

    def initial_carry(self, dtype=jnp.float32):
        del dtype
        return ()
