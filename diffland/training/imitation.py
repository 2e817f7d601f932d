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

A student with memory (a NeuroPID, whose PID carries its integral and last error) is
fitted with the memory it would have if it had seen the teacher's states. Its carry is
run along each teacher rollout with the student's starting parameters and stored with
every pair. That memory is exact only while the parameters that update it stay fixed,
so such a fit keeps them out of training (``ImitationConfig.fixed``, for example the
NeuroPID's ``pid`` gains) and trains the rest.
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
from diffland.training.trainer import matching_params

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
    fixed: tuple[str, ...] = ()
    """Top-level names in the student's ``params`` that the fit leaves unchanged, such as
    ``("pid",)`` to fit only a NeuroPID's network correction."""

    def __post_init__(self):
        fixed = self.fixed
        valid = isinstance(fixed, tuple | list) and all(isinstance(name, str) for name in fixed)
        if not valid:
            raise ValueError(
                f"ImitationConfig.fixed = {fixed!r} is invalid: pass a tuple of parameter "
                "names, such as ('pid',)."
            )
        # A config read back from JSON has a list here, so store a tuple to stay hashable.
        object.__setattr__(self, "fixed", tuple(fixed))
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
    task: LandingTask,
    teacher: nn.Module,
    teacher_variables: Any,
    states: Any,
    student: nn.Module | None = None,
    student_variables: Any = None,
) -> tuple[Any, ...]:
    """Roll out ``teacher`` from ``states`` and return its active states and actions.

    The result is a batch of states (leading axis: pairs) and the matching actions,
    one pair per control step before touchdown, lander by lander in time order. With a
    ``student`` and its ``student_variables`` a third entry follows: the student's carry
    at each pair, updated along the teacher's states with those variables. Pass the
    same parameters to :func:`fit_to_teacher` as ``initial_params``.
    """
    task.validate(states)
    if (student is None) != (student_variables is None):
        raise ValueError(
            "pass both student and student_variables to record the student's memory, or neither."
        )
    rollout = jax.jit(lambda variables, states: batch_rollout(task, teacher, variables, states))
    trajectory = rollout(teacher_variables, states)
    flat = _active_steps(trajectory)
    pair_states = jax.tree_util.tree_map(flat, trajectory.states)
    if student is None:
        return pair_states, flat(trajectory.actions)
    carries = _student_carries(task, student, student_variables, trajectory.states)
    return pair_states, flat(trajectory.actions), jax.tree_util.tree_map(flat, carries)


def _active_steps(trajectory: Any):
    """Return a function that flattens a (lander, step) leaf of ``trajectory`` into its
    active steps, lander by lander in time order."""
    active = np.asarray(trajectory.active).reshape(-1)

    def flat(x):
        x = np.asarray(x)
        return jnp.asarray(x.reshape(-1, *x.shape[2:])[active])

    return flat


def student_pairs(
    task: LandingTask,
    student: nn.Module,
    student_variables: Any,
    states: Any,
    teacher: nn.Module,
    teacher_variables: Any,
) -> tuple[Any, ...]:
    """Roll out ``student`` from ``states`` and label its active states with the
    teacher's actions.

    Fitting to these pairs as well as to :func:`teacher_pairs` teaches the student what
    the teacher does where the student's own rollouts drift from the teacher's (one
    round of dataset aggregation, DAgger: Ross, Gordon and Bagnell, AISTATS 2011). The
    teacher must be memoryless, because its memory along the student's states would
    differ from any memory it had in its own rollouts. The result has the layout of
    :func:`teacher_pairs`: with a student that has memory, its carries come third.
    """
    task.validate(states)
    if jax.tree_util.tree_leaves(teacher.initial_carry()):
        raise ValueError(
            f"{type(teacher).__name__} carries a state between control steps, so it cannot "
            "label the student's states. Use a memoryless teacher such as MLPPolicy."
        )
    rollout = jax.jit(lambda variables, states: batch_rollout(task, student, variables, states))
    trajectory = rollout(student_variables, states)
    flat = _active_steps(trajectory)
    pair_states = jax.tree_util.tree_map(flat, trajectory.states)
    memoryless = teacher.initial_carry()
    label = jax.jit(
        jax.vmap(lambda state: teacher.apply(teacher_variables, state, task.params, memoryless)[0])
    )
    actions = label(pair_states)
    if not jax.tree_util.tree_leaves(student.initial_carry()):
        return pair_states, actions
    carries = _student_carries(task, student, student_variables, trajectory.states)
    return pair_states, actions, jax.tree_util.tree_map(flat, carries)


def join_pairs(*pair_sets: tuple[Any, ...]) -> tuple[Any, ...]:
    """Concatenate pair tuples of the same layout (from :func:`teacher_pairs` or
    :func:`student_pairs`) into one."""
    if not pair_sets:
        raise ValueError("join_pairs needs at least one pair tuple.")
    if len({len(pairs) for pairs in pair_sets}) != 1:
        raise ValueError(
            "the pair tuples differ in length: join pairs recorded for the same student "
            "(all with its carries, or none)."
        )
    return jax.tree_util.tree_map(lambda *parts: jnp.concatenate(parts), *pair_sets)


def _student_carries(task: LandingTask, student: nn.Module, variables: Any, states: Any) -> Any:
    """Return the student's carry before each step of the teacher's ``states``
    (leading axes: lander, step)."""
    dtype = jax.tree_util.tree_leaves(states)[0].dtype

    def along(lander_states):
        def step(carry, state):
            _, next_carry = student.apply(variables, state, task.params, carry)
            return next_carry, carry

        _, carries = jax.lax.scan(step, student.initial_carry(dtype), lander_states)
        return carries

    return jax.jit(jax.vmap(along))(states)


def _split_pairs(student: nn.Module, pairs: tuple[Any, ...]) -> tuple[Any, jax.Array, Any]:
    """Return states, actions and the student's carries, checking they suit ``student``."""
    if not isinstance(pairs, tuple) or len(pairs) not in (2, 3):
        raise ValueError(
            "pairs must be the tuple that teacher_pairs returns: (states, actions), or "
            "(states, actions, student carries) when the student has memory."
        )
    has_memory = bool(jax.tree_util.tree_leaves(student.initial_carry()))
    if len(pairs) == 3:
        return pairs
    states, actions = pairs
    if has_memory:
        raise ValueError(
            f"{type(student).__name__} carries a state between control steps, so the fit "
            "needs its carry at every pair. Build the pairs with teacher_pairs(..., "
            "student=..., student_variables=...) and pass those variables' params as "
            "initial_params."
        )
    return states, actions, None


def _check_fixed(params: Any, fixed: tuple[str, ...]) -> None:
    unknown = [name for name in fixed if name not in params]
    if unknown:
        raise ValueError(
            f"ImitationConfig.fixed names {unknown}, which the student's params do not "
            f"contain. Its top-level names are {sorted(params)}."
        )


def _check_pairs(task: LandingTask, states: Any, actions: jax.Array, carries: Any) -> int:
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
    for field, tree in (("states", states), ("student carries", carries)):
        for leaf in jax.tree_util.tree_leaves(tree):
            if leaf.shape[0] != count:
                raise ValueError(
                    f"the pair {field} have {leaf.shape[0]} entries but there are {count} "
                    "actions. Pass the entries of one teacher_pairs call."
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
    pairs: tuple[Any, ...],
    config: ImitationConfig = ImitationConfig(),
    initial_params: Any = None,
) -> ImitationResult:
    """Fit ``student`` to the teacher's ``pairs`` from :func:`teacher_pairs`.

    The student starts from ``initial_params`` if given, else from fresh parameters
    drawn with ``config.seed``. A student with memory needs pairs that record its carry,
    and ``initial_params`` equal to the parameters that recorded it.
    """
    states, actions, carries = _split_pairs(student, pairs)
    count = _check_pairs(task, states, actions, carries)
    start = time.perf_counter()
    low, high = task.vehicle.action_bounds(task.params)
    half = 0.5 * (high - low)
    init_key, batch_key = jax.random.split(jax.random.PRNGKey(config.seed))
    example = jax.tree_util.tree_map(lambda x: x[0], states)
    params = init_controller(task, student, init_key, example)["params"]
    if carries is None:
        carries = jax.tree_util.tree_map(
            lambda x: jnp.broadcast_to(x, (count, *x.shape)), student.initial_carry()
        )
    if initial_params is not None:
        params = matching_params(params, initial_params)
    _check_fixed(params, config.fixed)
    if len(pairs) == 3 and not config.fixed:
        logger.warning(
            "the student's carries were recorded with its starting parameters, and every "
            "parameter is trained, so the carries can drift from those the fitted student "
            "would have. Keep the parameters that update the carry fixed with "
            "ImitationConfig.fixed."
        )

    def squared_errors(params, batch_states, batch_actions, batch_carries):
        predicted = jax.vmap(lambda s, c: student.apply({"params": params}, s, task.params, c)[0])(
            batch_states, batch_carries
        )
        return jnp.sum(((predicted - batch_actions) / half) ** 2, axis=-1)

    schedule = optax.cosine_decay_schedule(config.learning_rate, config.steps, alpha=0.1)
    labels = {name: "fixed" if name in config.fixed else "trained" for name in params}
    optimizer = optax.multi_transform(
        {"trained": optax.adam(schedule), "fixed": optax.set_to_zero()}, labels
    )

    def update(carried, key, data):
        params, opt_state = carried
        index = jax.random.randint(key, (config.batch_size,), 0, count)
        batch_states, batch_actions, batch_carries = jax.tree_util.tree_map(
            lambda x: x[index], data
        )

        def loss(params):
            return jnp.mean(squared_errors(params, batch_states, batch_actions, batch_carries))

        grads = jax.grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    @jax.jit
    def fit(params, data):
        keys = jax.random.split(batch_key, config.steps)
        carried = (params, optimizer.init(params))
        (params, _), _ = jax.lax.scan(lambda c, k: update(c, k, data), carried, keys)
        return params

    chunk_errors = jax.jit(squared_errors)
    data = (states, actions, carries)

    def mean_error(params):
        total = 0.0
        for begin in range(0, count, _EVALUATION_CHUNK):
            part = slice(begin, begin + _EVALUATION_CHUNK)
            chunk = jax.tree_util.tree_map(lambda x, part=part: x[part], data)
            total += float(jnp.sum(chunk_errors(params, *chunk)))
        return total / count

    initial_error = mean_error(params)
    params = jax.block_until_ready(fit(params, data))
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
