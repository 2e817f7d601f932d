"""A landing task: the vehicle, its parameters, the simulation settings and the cost."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from diffland.dynamics.base import Params, Vehicle, check_state_dtypes
from diffland.dynamics.simulate import SimConfig, SimState, Trajectory, rollout
from diffland.randomization import Episode, SensorModel
from diffland.training.cost import (
    LandingCost,
    LandingSummary,
    landing_summary_batch,
    landing_summary_rollout,
)


@dataclasses.dataclass(frozen=True)
class LandingTask:
    """Everything the trainer needs about the physics, with nothing vehicle-specific in it.

    ``params`` is a pytree of arrays (one vehicle's parameters, shared by the batch).
    Everywhere a batch of start states is accepted, a batch of
    :class:`~diffland.randomization.Episode` may be passed instead (domain
    randomisation). Each episode's physics then uses its own parameters, while the
    controller is still given ``params``, the nominal model.
    """

    vehicle: Vehicle
    params: Params
    sim: SimConfig = dataclasses.field(default_factory=SimConfig)
    cost: LandingCost = dataclasses.field(default_factory=LandingCost)
    sensor: SensorModel | None = None
    """Noise and latency between the state and the controller; needs episodes, whose
    fields set each one's noise key, noise scale and latency. None: the controller receives
    the exact state."""

    def validate(self, initial_states: Any) -> None:
        """Raise ``ValueError`` for invalid parameters or a batch of initial states.

        Every state field must be a floating-point array with the same leading batch
        axis; the vehicle then checks the values (concrete values only).
        """
        if isinstance(initial_states, Episode):
            self._validate_episodes(initial_states)
            return
        if self.sensor is not None:
            raise ValueError(
                "the task has a sensor model, which takes each lander's noise key and "
                "latency from an Episode; pass a batch of episodes (see "
                "diffland.randomization.sample_episodes) or build the task with sensor=None."
            )
        validate_state_batch(initial_states)
        self.vehicle.validate(initial_states, self.params)

    def _validate_episodes(self, episodes: Episode) -> None:
        count = validate_state_batch(episodes.state)
        for path, leaf in jax.tree_util.tree_leaves_with_path(
            (episodes.params, episodes.sensor_key, episodes.noise_scale, episodes.latency)
        ):
            if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != count:
                raise ValueError(
                    f"episode field {jax.tree_util.keystr(path)} has shape {jnp.shape(leaf)}; "
                    f"every episode field needs the leading axis of the {count} start states."
                )
        self.vehicle.validate(episodes.state, episodes.params)
        if self.sensor is not None:
            self.sensor.check_state(episodes.state)
            latency = np.asarray(episodes.latency)
            if np.any(latency < 0) or np.any(latency > self.sensor.max_latency):
                raise ValueError(
                    f"episode latencies range over [{latency.min()}, {latency.max()}] control "
                    f"steps, outside [0, {self.sensor.max_latency}] of the sensor model; raise "
                    "SensorModel.max_latency or draw shorter latencies."
                )


def validate_state_batch(states: Any) -> int:
    """Return the batch size of ``states``, or raise ``ValueError`` naming the bad field."""
    leaves = jax.tree_util.tree_leaves_with_path(states)
    if not leaves:
        raise ValueError("the batch of start states has no fields.")
    sizes = {}
    for path, leaf in leaves:
        name = jax.tree_util.keystr(path)
        shape = getattr(leaf, "shape", None)
        if shape is None or len(shape) == 0:
            raise ValueError(
                f"start-state field {name} = {leaf!r} has no batch axis; pass arrays whose "
                "first axis indexes the landers (use shape (1,) for a single lander)."
            )
        sizes[name] = shape[0]
    check_state_dtypes(states, "start-state field ")
    if len(set(sizes.values())) > 1:
        raise ValueError(
            f"start-state fields have different batch sizes {sizes}; every field needs the "
            "same first axis, one entry per lander."
        )
    return next(iter(sizes.values()))


def episode_parts(task: LandingTask, initial: Any) -> tuple[Any, Params]:
    """Return the start state and the physical parameters of one lander or episode."""
    if isinstance(initial, Episode):
        return initial.state, initial.params
    return initial, task.params


def map_landers(fn, task: LandingTask, rollouts: Any, initial_states: Any):
    """Apply ``fn(rollout, params)`` to each lander of a batch with its physical
    parameters: the episode's own, or ``task.params`` for plain start states. ``rollouts``
    is any pytree with the batch on the first axis of every leaf (a batch of
    :class:`Trajectory`, or of final states and summaries)."""
    if isinstance(initial_states, Episode):
        return jax.vmap(fn)(rollouts, initial_states.params)
    return jax.vmap(lambda rollout: fn(rollout, task.params))(rollouts)


def _controller_policy(task: LandingTask, controller: nn.Module, variables: Any, initial_state):
    """Return the start state, the physical parameters, the policy and its initial carry
    of one lander or episode under ``controller``."""
    state, physics_params = episode_parts(task, initial_state)
    dtype = jax.tree_util.tree_leaves(state)[0].dtype

    def policy(state, params, carry):
        del params  # the physics parameters of an episode stay hidden from the controller
        return controller.apply(variables, state, task.params, carry)

    carry = controller.initial_carry(dtype)
    if task.sensor is not None:
        policy, carry = task.sensor.wrap(policy, carry, initial_state)
    return state, physics_params, policy, carry


def controller_rollout(
    task: LandingTask, controller: nn.Module, variables: Any, initial_state: Any
) -> Trajectory:
    """Roll out one lander or episode under ``controller`` with the given flax variables.

    The controller is given ``task.params``. For an episode the physics uses the
    episode's parameters, and ``task.sensor`` (if set) measures the state that
    the controller receives. The trajectory records the true states.
    """
    state, physics_params, policy, carry = _controller_policy(
        task, controller, variables, initial_state
    )
    return rollout(task.vehicle, task.sim, policy, state, physics_params, carry)


def batch_rollout(
    task: LandingTask, controller: nn.Module, variables: Any, initial_states: Any
) -> Trajectory:
    """Roll out a batch of landers (leading axis of every state leaf) with ``jax.vmap``."""
    return jax.vmap(lambda s: controller_rollout(task, controller, variables, s))(initial_states)


def controller_landing_summary(
    task: LandingTask, controller: nn.Module, variables: Any, initial_state: Any
) -> tuple[SimState, LandingSummary]:
    """Roll out one lander or episode like :func:`controller_rollout`, but return only the
    final simulation state and the :class:`LandingSummary` that the cost reads (see
    :func:`~diffland.training.cost.landing_summary_rollout`)."""
    state, physics_params, policy, carry = _controller_policy(
        task, controller, variables, initial_state
    )
    return landing_summary_rollout(task.vehicle, task.sim, policy, state, physics_params, carry)


def batch_landing_summary(
    task: LandingTask, controller: nn.Module, variables: Any, initial_states: Any
) -> tuple[SimState, LandingSummary]:
    """Run :func:`controller_landing_summary` on a batch of landers.

    A batch of plain start states runs through
    :func:`~diffland.training.cost.landing_summary_batch`. In the trainer's update on a
    CPU that uses the component layout of
    :func:`~diffland.dynamics.reduce_rollout_batch` for vehicles that support it
    (``component_tuples``), with a cheaper gradient. Episodes,
    which carry their own physical parameters and sensor settings, run with
    ``jax.vmap``. Both give the same values up to float rounding.
    """
    if isinstance(initial_states, Episode) or task.sensor is not None:
        return jax.vmap(lambda s: controller_landing_summary(task, controller, variables, s))(
            initial_states
        )
    # Without a sensor the policy is the same for every lander, so the whole batch is
    # passed where _controller_policy expects one start state. It returns the batch as it
    # is and reads only its dtype.
    states, physics_params, policy, carry = _controller_policy(
        task, controller, variables, initial_states
    )
    return landing_summary_batch(task.vehicle, task.sim, policy, states, physics_params, carry)


def init_controller(
    task: LandingTask, controller: nn.Module, key: jax.Array, example_state: Any
) -> Any:
    """Initialise the controller's flax variables from one example (unbatched) state or
    episode."""
    example, _ = episode_parts(task, example_state)
    example = jax.tree_util.tree_map(jnp.asarray, example)
    dtype = jax.tree_util.tree_leaves(example)[0].dtype
    return controller.init(key, example, task.params, controller.initial_carry(dtype))
