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
        """Raise ``ValueError`` for invalid parameters or a batch of initial states.

        Every state field must be a floating-point array with the same leading batch
        axis; the vehicle then checks the values (concrete values only).
        """
        validate_state_batch(initial_states)
        self.vehicle.validate(initial_states, self.params)


def validate_state_batch(states: Any) -> int:
    """Return the batch size of ``states``, or raise ``ValueError`` naming the bad field."""
    leaves = jax.tree_util.tree_leaves_with_path(states)
    if not leaves:
        raise ValueError("the batch of start states has no fields.")
    sizes = {}
    for path, leaf in leaves:
        name = jax.tree_util.keystr(path)
        shape = getattr(leaf, "shape", None)
        dtype = getattr(leaf, "dtype", None)
        if shape is None or len(shape) == 0:
            raise ValueError(
                f"start-state field {name} = {leaf!r} has no batch axis; pass arrays whose "
                "first axis indexes the landers (use shape (1,) for a single lander)."
            )
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(
                f"start-state field {name} has dtype {dtype}; pass floating-point arrays "
                "(for example with dtype=jnp.float32)."
            )
        if jnp.finfo(dtype).bits < 32:
            raise ValueError(
                f"start-state field {name} has dtype {dtype}; the dynamics state must be "
                "float32 or float64 (half precision is only for controller networks, through "
                "their dtype setting). Cast the states with .astype(jnp.float32)."
            )
        sizes[name] = shape[0]
    if len(set(sizes.values())) > 1:
        raise ValueError(
            f"start-state fields have different batch sizes {sizes}; every field needs the "
            "same first axis, one entry per lander."
        )
    return next(iter(sizes.values()))


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
