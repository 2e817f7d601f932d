"""Behaviour cloning: fit a memoryless controller to the actions of a teacher controller.

A policy network trained by analytic policy gradients from a random start crashes every
lander at first. On a vehicle with fast attitude dynamics (the boosters) the gradient
of those crashes can fail to lead it to any landing. Fitting the network first to a
working controller (the teacher) along the teacher's own rollouts gives it a start
from which gradient training improves on the teacher instead.

The fit minimises the squared action error, each action divided by its half range and
the squares summed over the action's components, averaged over every active control
step of the teacher's rollouts. The student is fitted only on the states the teacher
visits, so its own rollouts can drift from them. The policy-gradient training that
follows corrects that drift, because it runs the student's own rollouts. A teacher with
memory (a PID carries its integral and last error) cannot be matched exactly by a
memoryless student, so some error remains.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from diffland.training.task import LandingTask, batch_rollout, init_controller

logger = logging.getLogger(__name__)

_EVALUATION_CHUNK = 65_536
"""Pairs per forward pass when the error over every pair is computed."""


@dataclasses.dataclass(frozen=True)
class ImitationConfig:
    """Settings of a behaviour-cloning fit."""

    steps: int = 2000
    """Adam updates."""
    batch_size: int = 4096
    """State-action pairs per update, drawn with replacement."""
    learning_rate: float = 1e-3
    """Peak Adam step size, decayed to a tenth of it on a cosine schedule."""
    seed: int = 0
    """Seed of the student's initialisation and of the batch draws."""

    def __post_init__(self):
        for name in ("steps", "batch_size", "seed"):
            value = getattr(self, name)
            minimum = 0 if name == "seed" else 1
            if isinstance(value, bool) or not (isinstance(value, int) and value >= minimum):
                raise ValueError(
                    f"ImitationConfig.{name} = {value!r} is invalid: pass an integer >= {minimum}."
                )
        rate = self.learning_rate
        valid = isinstance(rate, int | float) and not isinstance(rate, bool)
        if not (valid and math.isfinite(rate) and rate > 0):
            raise ValueError(
                f"ImitationConfig.learning_rate = {rate!r} is invalid: pass a positive number."
            )


@dataclasses.dataclass(frozen=True)
class ImitationResult:
    """The fitted parameters and how well they match the teacher."""

    params: Any
    """The student's ``params`` collection."""
    initial_error: float
    """Action error over every pair before the fit (squares of the errors in half
    ranges, summed over the action's components, averaged over pairs)."""
    final_error: float
    """The same action error after the fit."""
    pairs: int
    """Number of state-action pairs fitted."""
    seconds: float
    """Wall time of the fit, compilation included, s."""


def teacher_pairs(
    task: LandingTask, teacher: nn.Module, teacher_variables: Any, states: Any
) -> tuple[Any, jax.Array]:
    """Roll out ``teacher`` from ``states`` and return its active states and actions.

    The result is a batch of states (leading axis: pairs) and the matching actions,
    one pair per control step before touchdown, lander by lander in time order.
    """
    task.validate(states)
    rollout = jax.jit(lambda variables, states: batch_rollout(task, teacher, variables, states))
    trajectory = rollout(teacher_variables, states)
    active = np.asarray(trajectory.active).reshape(-1)

    def flat(x):
        x = np.asarray(x)
        return jnp.asarray(x.reshape(-1, *x.shape[2:])[active])

    return jax.tree_util.tree_map(flat, trajectory.states), flat(trajectory.actions)


def _check_memoryless(student: nn.Module) -> None:
    if jax.tree_util.tree_leaves(student.initial_carry()):
        raise ValueError(
            f"{type(student).__name__} carries a state between control steps, but behaviour "
            "cloning fits memoryless controllers only. Use a controller without memory, "
            "such as MLPPolicy."
        )


def _check_pairs(task: LandingTask, states: Any, actions: jax.Array) -> int:
    count = int(actions.shape[0])
    if count == 0:
        raise ValueError(
            "no state-action pairs to fit. The start states are empty, or every rollout "
            "touched down before its first control step. Pass start states in flight."
        )
    size = task.vehicle.action_size
    if actions.ndim != 2 or actions.shape[1] != size:
        raise ValueError(
            f"teacher actions have shape {actions.shape}, expected ({count}, {size}) for "
            f"{type(task.vehicle).__name__}. Build the pairs with teacher_pairs."
        )
    for leaf in jax.tree_util.tree_leaves(states):
        if leaf.shape[0] != count:
            raise ValueError(
                f"the pair states have {leaf.shape[0]} entries but there are {count} actions. "
                "Pass the states and actions from one teacher_pairs call."
            )
    if not np.all(np.isfinite(np.asarray(actions))):
        raise ValueError(
            "the teacher's actions contain NaN or infinity. Check the teacher's parameters "
            "and start states."
        )
    return count


def fit_to_teacher(
    task: LandingTask,
    student: nn.Module,
    pairs: tuple[Any, jax.Array],
    config: ImitationConfig = ImitationConfig(),
) -> ImitationResult:
    """Fit the memoryless ``student`` to the teacher's ``pairs`` from :func:`teacher_pairs`.

    The student starts from fresh parameters drawn with ``config.seed``.
    """
    _check_memoryless(student)
    states, actions = pairs
    count = _check_pairs(task, states, actions)
    start = time.perf_counter()
    low, high = task.vehicle.action_bounds(task.params)
    half = 0.5 * (high - low)
    carry = student.initial_carry()
    init_key, batch_key = jax.random.split(jax.random.PRNGKey(config.seed))
    example = jax.tree_util.tree_map(lambda x: x[0], states)
    params = init_controller(task, student, init_key, example)["params"]

    def squared_errors(params, batch_states, batch_actions):
        predicted = jax.vmap(lambda s: student.apply({"params": params}, s, task.params, carry)[0])(
            batch_states
        )
        return jnp.sum(((predicted - batch_actions) / half) ** 2, axis=-1)

    schedule = optax.cosine_decay_schedule(config.learning_rate, config.steps, alpha=0.1)
    optimizer = optax.adam(schedule)

    def update(carried, key, states, actions):
        params, opt_state = carried
        index = jax.random.randint(key, (config.batch_size,), 0, count)
        batch = jax.tree_util.tree_map(lambda x: x[index], states)

        def loss(params):
            return jnp.mean(squared_errors(params, batch, actions[index]))

        grads = jax.grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    @jax.jit
    def fit(params, states, actions):
        keys = jax.random.split(batch_key, config.steps)
        carried = (params, optimizer.init(params))
        (params, _), _ = jax.lax.scan(lambda c, k: update(c, k, states, actions), carried, keys)
        return params

    chunk_errors = jax.jit(squared_errors)

    def mean_error(params):
        total = 0.0
        for begin in range(0, count, _EVALUATION_CHUNK):
            part = slice(begin, begin + _EVALUATION_CHUNK)
            chunk = jax.tree_util.tree_map(lambda x, part=part: x[part], states)
            total += float(jnp.sum(chunk_errors(params, chunk, actions[part])))
        return total / count

    initial_error = mean_error(params)
    params = jax.block_until_ready(fit(params, states, actions))
    final_error = mean_error(params)
    seconds = time.perf_counter() - start
    if not math.isfinite(final_error):
        raise FloatingPointError(
            f"behaviour cloning diverged: the action error is {final_error}. Lower "
            f"ImitationConfig.learning_rate (now {config.learning_rate})."
        )
    logger.info(
        "behaviour cloning of %s: %d pairs, action error %.4g -> %.4g in %.1f s",
        type(student).__name__,
        count,
        initial_error,
        final_error,
        seconds,
    )
    return ImitationResult(params, initial_error, final_error, count, seconds)
