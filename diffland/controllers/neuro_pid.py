"""A PID with a learned neural correction added to its command."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from diffland.controllers.bounds import bounded_action
from diffland.controllers.mlp import MLP
from diffland.controllers.pid import HAND_TUNED_GAINS, PIDGains, VerticalPID, initial_pid_carry
from diffland.dynamics.vertical import VerticalLander


class NeuroPID(nn.Module):
    """:class:`VerticalPID` plus ``correction_scale * MLP(observation)`` on its command.

    The MLP's output layer starts at zero, so an untrained NeuroPID returns exactly the
    actions of its PID. The PID gains train together with the network.
    """

    vehicle: VerticalLander
    control_dt: float
    gains: PIDGains = HAND_TUNED_GAINS
    hidden: tuple[int, ...] = (64, 64)
    correction_scale: float = 0.1
    """Throttle units per unit of network output. A small scale keeps early updates of
    the network from undoing the PID's landings while the correction is learned."""
    dtype: Any = None
    """Computation dtype of the network only; the PID and the dynamics keep theirs."""
    param_dtype: Any = jnp.float32
    """Parameter dtype of the network."""

    def setup(self):
        self.pid = VerticalPID(self.vehicle, self.control_dt, self.gains)
        self.correction = MLP(
            self.hidden,
            self.vehicle.action_size,
            zero_output=True,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )

    def __call__(self, state, params, carry):
        command, carry = self.pid.command(state, params, carry)
        features = self.vehicle.observation(state, params)
        command = command + self.correction_scale * self.correction(features)
        low, high = self.vehicle.action_bounds(params)
        return bounded_action(command, low, high), carry

    def initial_carry(self, dtype=jnp.float32):
        return initial_pid_carry(dtype)
