"""A landing task: the vehicle, its parameters, the simulation settings and the cost."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffland.dynamics.base import Params, Vehicle
from diffland.dynamics.simulate import SimConfig, Trajectory, rollout
from diffland.training.cost import LandingCost


@dataclasses.dataclass(frozen=True)
class LandingTask:
    """Everything the trainer needs about the physics, with nothing vehicle-specific in it.

    ``params`` is a pytree of arrays (one vehicle's parameters, shared by the batch).
    """

    vehicle: Vehicle
    params: Params
    sim: SimConfig = dataclasses.field(default_factory=SimConfig)
    cost: LandingCost = dataclasses.field(default_factory=LandingCost)

    def validate(self, initial_states: Any) -> None:
        """Raise ``ValueError`` for invalid parameters or initial states (concrete values)."""
        self.vehicle.validate(initial_states, self.params)


def controller_rollout(
    task: LandingTask, controller: nn.Module, variables: Any, initial_state: Any
) -> Trajectory:
    """Roll out one lander under ``controller`` with the given flax variables."""
    dtype = jax.tree_util.tree_leaves(initial_state)[0].dtype

    def policy(state, params, carry):
        return controller.apply(variables, state, params, carry)

    carry = controller.initial_carry(dtype)
    return rollout(task.vehicle, task.sim, policy, initial_state, task.params, carry)


def batch_rollout(
    task: LandingTask, controller: nn.Module, variables: Any, initial_states: Any
) -> Trajectory:
    """Roll out a batch of landers (leading axis of every state leaf) with ``jax.vmap``."""
    return jax.vmap(lambda s: controller_rollout(task, controller, variables, s))(initial_states)


def init_controller(
    task: LandingTask, controller: nn.Module, key: jax.Array, example_state: Any
) -> Any:
    """Initialise the controller's flax variables from one example (unbatched) state."""
    example = jax.tree_util.tree_map(jnp.asarray, example_state)
    dtype = jax.tree_util.tree_leaves(example)[0].dtype
    return controller.init(key, example, task.params, controller.initial_carry(dtype))
