"""Analytic policy gradient training: backpropagation through batched landing rollouts.

Each update draws a batch of initial states from a pool, rolls the batch out under the
controller with ``lax.scan`` (vmapped over landers), averages the landing cost, and
applies one ``optax`` update. The update is compiled once, ahead of time, so compile time
is reported apart from training time.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import pathlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.experimental import checkify

from diffland.dynamics import components
from diffland.dynamics.simulate import component_compiler_options
from diffland.training import memory
from diffland.training.checkpoint import CheckpointStore
from diffland.training.cost import landing_outcome, summary_cost_terms
from diffland.training.interrupts import StopSignals, TrainingInterrupted
from diffland.training.parallel import DataParallel
from diffland.training.task import (
    LandingTask,
    batch_landing_summary,
    batch_rollout,
    init_controller,
    map_landers,
)

logger = logging.getLogger(__name__)

CHECKS_ENV = "DIFFLAND_CHECKS"
"""Environment variable that turns runtime checks on (``1``) when a config leaves them unset."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run."""

    steps: int = 1000
    """Number of parameter updates."""
    batch_size: int = 256
    """Landers per update."""
    learning_rate: float = 3e-3
    """Peak Adam step size."""
    warmup_steps: int = 50
    """Linear warm-up from zero to ``learning_rate``."""
    final_learning_rate_fraction: float = 0.1
    """Cosine decay ends at this fraction of ``learning_rate``."""
    clip_norm: float = 1.0
    """Global gradient norm above which gradients are scaled down."""
    seed: int = 0
    """Seed of the controller initialisation and of the batch draws."""
    checkpoint_every: int = 200
    """Steps between checkpoints (the last step is always saved)."""
    eval_every: int = 100
    """Steps between evaluations on the validation states."""
    max_consecutive_nonfinite: int = 20
    """Non-finite updates in a row after which training stops with ``FloatingPointError``."""
    checks: bool | None = None
    """Runtime finiteness and retrace checks; None reads the DIFFLAND_CHECKS variable."""
    select_best: bool = True
    """Return the parameters with the best validation score (success rate, then lower
    propellant) rather than the last ones, when validation states are given. The
    starting parameters are scored too, before the first update. APG
    training of a landing controller is noisy: a late update can lose landings."""
    num_devices: int | None = None
    """Devices that each batch is split over (data parallelism). None uses every device
    in ``jax.devices()``, which after ``jax.distributed.initialize`` includes the other
    hosts' devices. 1 trains on the first device only. ``batch_size`` must be a multiple
    of it."""

    def __post_init__(self):
        integer_settings = (
            "steps",
            "batch_size",
            "checkpoint_every",
            "eval_every",
            "max_consecutive_nonfinite",
        )
        for name in integer_settings:
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"TrainConfig.{name} = {value!r} must be an integer >= 1.")
        for name in ("learning_rate", "clip_norm"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
                raise ValueError(f"TrainConfig.{name} = {value!r} must be a positive number.")
        if not (isinstance(self.warmup_steps, int) and self.warmup_steps >= 0):
            raise ValueError(
                f"TrainConfig.warmup_steps = {self.warmup_steps!r} must be an integer >= 0."
            )
        if self.num_devices is not None and not (
            isinstance(self.num_devices, int)
            and not isinstance(self.num_devices, bool)
            and self.num_devices >= 1
        ):
            raise ValueError(
                f"TrainConfig.num_devices = {self.num_devices!r} must be an integer >= 1, or "
                "None to use every device."
            )
        if not (isinstance(self.seed, int) and not isinstance(self.seed, bool)):
            raise ValueError(f"TrainConfig.seed = {self.seed!r} must be an integer.")
        fraction = self.final_learning_rate_fraction
        if not (isinstance(fraction, int | float) and 0.0 <= fraction <= 1.0):
            raise ValueError(
                "TrainConfig.final_learning_rate_fraction = "
                f"{self.final_learning_rate_fraction!r} must lie in [0, 1]."
            )

    @property
    def checks_enabled(self) -> bool:
        if self.checks is not None:
            return self.checks
        value = os.environ.get(CHECKS_ENV, "0").strip().lower()
        return value not in ("", "0", "false", "no", "off")


@struct.dataclass
class TrainState:
    """Everything needed to continue training exactly; saved in each checkpoint."""

    params: Any
    """The controller's ``params`` collection."""
    opt_state: Any
    key: jax.Array
    """Raw uint32 PRNG key for the next batch draw."""
    step: jax.Array
    """Number of updates applied so far, shape ``()``."""
    best_params: Any
    """Parameters with the best validation score so far (the initial ones before any)."""
    best_score: jax.Array
    """Validation success rate and negated mean propellant (kg) of ``best_params``, shape
    ``(2,)``, compared in that order; -inf before the first validation."""
    best_step: jax.Array
    """Step at which ``best_params`` were scored, shape ``()``."""
    train_seconds: jax.Array
    """Training time spent to reach this state over all sessions of a resumed run, s
    (compilation excluded), shape ``()``."""


def matching_params(expected: Any, initial: Any) -> Any:
    """Return ``initial`` cast to the dtypes of ``expected`` (the controller's own initial
    parameters), after checking that both have the same structure and shapes."""
    expected_leaves, expected_tree = jax.tree_util.tree_flatten(expected)
    initial_leaves, initial_tree = jax.tree_util.tree_flatten(initial)
    expected_shapes = [np.shape(x) for x in expected_leaves]
    initial_shapes = [np.shape(x) for x in initial_leaves]
    if expected_tree != initial_tree or expected_shapes != initial_shapes:
        raise ValueError(
            "initial_params differ in structure or shapes from the controller's parameters "
            f"(expected leaf shapes {expected_shapes}, got {initial_shapes}). Pass the params "
            "collection of a controller of the same class and settings."
        )
    return jax.tree_util.tree_map(lambda e, x: jnp.asarray(x, e.dtype), expected, initial)


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    compile_seconds: float
    """Compilation time of this session, s."""
    train_seconds: float
    """Training time of the whole run, s, including sessions before a resume."""
    resumed_from: int | None
    """Step of the checkpoint training resumed from, or None."""
    select_best: bool = False
    """Whether :attr:`selected_params` are the best-validation parameters."""

    @property
    def selected_params(self) -> Any:
        """The best-validation parameters when selection is on, else the final ones."""
        return self.state.best_params if self.select_best else self.state.params

    @property
    def selected_step(self) -> int:
        """Step of :attr:`selected_params`."""
        return int(self.state.best_step if self.select_best else self.state.step)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Return the one chain that owns all gradient processing.

    Global-norm clipping, Adam and a warm-up cosine schedule, wrapped so that an update
    with a non-finite gradient is skipped and counted instead of applied. optax would
    apply one after ``max_consecutive_errors`` skips in a row; the limit is set out of
    reach, and :meth:`Trainer.train` stops at ``config.max_consecutive_nonfinite`` instead.
    """
    schedule = learning_rate_schedule(config)
    chain = optax.chain(
        optax.clip_by_global_norm(config.clip_norm),
        optax.scale_by_adam(),
        optax.scale_by_learning_rate(schedule),
    )
    return optax.apply_if_finite(chain, max_consecutive_errors=2**31 - 1)


def learning_rate_schedule(config: TrainConfig) -> optax.Schedule:
    warmup = min(config.warmup_steps, max(config.steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(config.steps, warmup + 1),
        end_value=config.learning_rate * config.final_learning_rate_fraction,
    )


def lower_training_function(
    function: Callable, *args: Any, **jit_options: Any
) -> jax.stages.Lowered:
    """Jit ``function`` as the trainer jits its update and lower it for ``args``.

    On a CPU backend the function is traced inside :func:`components.materializing` and
    compiled with :func:`training_compiler_options`, so the :func:`components.shared`
    values of the vehicles and of the physics step stay optimization barriers through
    XLA's fusion. It traces a new wrapper of ``function``, so a later plain
    ``jax.jit(function)`` traces again instead of reusing this trace. Other backends get
    a plain ``jax.jit``, because the gain was measured on CPUs only.

    Measured on a 2-core AVX-512 Xeon with 2 CPU devices (jax 0.10.2), each variant
    compiled in one process and called in turn. With the barriers in the vehicles only,
    batch 1,024 and 64 control steps, the loss with its gradient ran 1.18 to 1.29 times
    faster than a plain ``jax.jit`` for the 6-DOF booster and 1.10 to 1.14 times for the
    planar one (medians of 12 rounds). Barriers in the physics step, the reuse of its
    start rate and the fusion option of :func:`training_compiler_options` then took the
    6-DOF gradient with its PID at batch 4,096 and 128 control steps from 2.16 to 0.99 s
    (medians of 8 rounds).

    Values and gradients equal those of a plain ``jax.jit`` up to float rounding. NOTE:
    in float32 that rounding grows along the rollout: with 64 control steps of the 6-DOF
    booster one gain's gradient (``kd``) differed by 1.7 % from the plain ``jax.jit``,
    which itself differed by 1.1 % from float64 on other start states.

    ``jit_options`` go to ``jax.jit``. Returns the ``jax.stages.Lowered`` program, to be
    compiled with ``.compile()``. Unlike
    :func:`~diffland.dynamics.simulate.final_state_batch`, which compiles shards of one
    1-D lander without the options because XLA 0.10.2 aborted on them, this needs no
    fallback: the loss with its gradient of all three vehicles compiled and ran with
    them at one lander per device.
    """
    if jax.default_backend() != "cpu":
        return jax.jit(function, **jit_options).lower(*args)
    jitted = jax.jit(
        _materializing(function), compiler_options=training_compiler_options(), **jit_options
    )
    return jitted.lower(*args)


def _materializing(function: Callable) -> Callable:
    """Return a new function that calls ``function`` inside :func:`components.materializing`.

    JAX caches a trace per function object, and the flag of
    :func:`components.materializing` is not part of its cache key. A plain ``jax.jit`` of
    ``function`` must not reuse a trace with the component layout and its barriers,
    because XLA compiled without :func:`training_compiler_options` removes the barriers
    and the program then runs much slower. A new function object has a cache entry of
    its own.
    """

    @functools.wraps(function)
    def traced(*args: Any, **kwargs: Any) -> Any:
        with components.materializing():
            return function(*args, **kwargs)

    return traced


_LIBRARY_FUSION_OPTION = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}
"""Hand only dot products to XLA's CPU library fusions (YNNPACK).

By default the XLA of jaxlib 0.10.2 also gives them reductions. Those of a vmapped
backward pass reduce short minor axes (the 3 components of a vector, the gust modes of
the wind). With 2 CPU devices (jaxlib 0.10.2), each variant compiled in one process
with the physics step's barriers in place and called in turn, the loss with its
gradient ran faster with this option: 6-DOF booster with its PID at batch 4,096 and
128 control steps 1.20 -> 0.95 s, planar booster at 2,048 and 64 steps 0.18 -> 0.07 s
with its PID and 0.26 -> 0.12 s with the MLP (medians of 5 calls). It only applies to
the trainer's update: with the MLP in the loop, the forward program of
:func:`~diffland.dynamics.simulate.final_state_batch` ran 1.7 times slower with it.
"""


@functools.cache
def _library_fusion_option_accepted() -> bool:
    """Return whether this XLA accepts :data:`_LIBRARY_FUSION_OPTION`, an experimental flag."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=_LIBRARY_FUSION_OPTION).lower(
            jnp.zeros((), jnp.float32)
        ).compile()
    except (jax.errors.JaxRuntimeError, ValueError) as error:
        logger.warning(
            "XLA rejected the compiler option %s (%s); the trainer's update compiles "
            "without it and may run slower on this CPU",
            _LIBRARY_FUSION_OPTION,
            error,
        )
        return False
    return True


def training_compiler_options() -> dict[str, Any]:
    """Return the XLA options of the trainer's update on a CPU backend.

    They are :func:`~diffland.dynamics.simulate.component_compiler_options` plus, where
    this XLA accepts it, an option that keeps reductions out of XLA's CPU library
    fusions (see :data:`_LIBRARY_FUSION_OPTION`).
    """
    options = component_compiler_options()
    if _library_fusion_option_accepted():
        options.update(_LIBRARY_FUSION_OPTION)
    return options


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of ``values`` where ``mask`` is true (NaN when it is nowhere true).

    Touchdown speeds average over landers that touched down and propellant over
    successful landings, as in the results file.
    """
    weights = mask.astype(values.dtype)
    return jnp.sum(values * weights) / jnp.sum(weights)


def _check_finite(tree: Any, message: str) -> None:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    checkify.check(jnp.all(jnp.stack(leaves)), message)


class Trainer:
    """Train a flax controller on a :class:`LandingTask` by analytic policy gradients.

    ``train_states`` is a pool of initial states (every leaf has a leading batch axis);
    each update draws ``batch_size`` of them at random. ``eval_states`` (optional) is a
    fixed validation set scored every ``eval_every`` steps. ``initial_params`` (optional)
    replaces the controller's own initial parameters, for example with those of a
    behaviour-cloning fit; they must have the same structure and shapes.

    Each batch is split over ``config.num_devices`` devices (all of them by default), with
    the parameters, optimiser state and start-state pool copied to every device. The
    validation states are split too when their count divides by the device count, else
    every device scores all of them.
    """

    def __init__(
        self,
        task: LandingTask,
        controller: nn.Module,
        config: TrainConfig,
        train_states: Any,
        eval_states: Any | None = None,
        checkpoint_dir: str | pathlib.Path | None = None,
        callbacks: Sequence[Callable[[int, Mapping[str, float]], None]] = (),
        initial_params: Any | None = None,
    ):
        task.validate(train_states)
        if eval_states is not None:
            task.validate(eval_states)
        self.parallel = DataParallel.create(config.num_devices)
        self.parallel.check_divides(config.batch_size, "TrainConfig.batch_size")
        self.task = task
        self.controller = controller
        self.config = config
        self.train_states = self.parallel.replicate(train_states)
        self.eval_states = self._place_eval_states(eval_states)
        self.callbacks = list(callbacks)
        self.initial_params = initial_params
        self.optimizer = make_optimizer(config)
        self.schedule = learning_rate_schedule(config)
        self.store = CheckpointStore(checkpoint_dir) if checkpoint_dir is not None else None
        self.pool_size = jax.tree_util.tree_leaves(train_states)[0].shape[0]
        # Read once, so a later change of the environment cannot split compile and call.
        self.checks = config.checks_enabled
        self._update = None
        self._evaluate = None
        self.trace_count = 0

    def _place_eval_states(self, eval_states: Any | None) -> Any | None:
        if eval_states is None:
            return None
        count = jax.tree_util.tree_leaves(eval_states)[0].shape[0]
        if self.parallel.divides(count):
            return self.parallel.shard_batch(eval_states)
        logger.info(
            "%d validation states do not split evenly over %d devices; each device scores "
            "all of them",
            count,
            self.parallel.device_count,
        )
        return self.parallel.replicate(eval_states)

    # -- pieces -----------------------------------------------------------------------

    def init(self) -> TrainState:
        """Return the state before the first update (initial controller, fresh optimiser)."""
        root = jax.random.PRNGKey(self.config.seed)
        init_key, batch_key = jax.random.split(root)
        example = jax.tree_util.tree_map(lambda x: x[0], self.train_states)
        variables = init_controller(self.task, self.controller, init_key, example)
        params = variables["params"]
        if self.initial_params is not None:
            params = matching_params(params, self.initial_params)
        state = TrainState(
            params=params,
            opt_state=self.optimizer.init(params),
            key=batch_key,
            step=jnp.zeros((), jnp.int32),
            best_params=params,
            best_score=jnp.full((2,), -jnp.inf, jnp.float32),
            best_step=jnp.zeros((), jnp.int32),
            train_seconds=jnp.zeros((), jnp.float32),
        )
        return self.parallel.replicate(state)

    def loss(self, params: Any, batch: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Return the mean landing cost of ``batch`` and per-term metrics."""
        # The rollout keeps only the reduced quantities that the cost reads in its scan
        # carry, so the backward pass stores no per-step states or actions.
        finals, summaries = batch_landing_summary(
            self.task, self.controller, {"params": params}, batch
        )
        terms, outcome = map_landers(
            lambda rollout, p: summary_cost_terms(
                self.task.vehicle, rollout[0], rollout[1], p, self.task.cost
            ),
            self.task,
            (finals, summaries),
            batch,
        )
        means = {name: jnp.mean(value) for name, value in terms.items()}
        loss = sum(means.values())
        metrics = {f"train/cost/{name}": value for name, value in means.items()}
        metrics["train/success_rate"] = jnp.mean(outcome.success)
        metrics["train/no_touchdown_rate"] = jnp.mean(~outcome.touched_down)
        metrics["train/touchdown_speed_mean"] = _masked_mean(
            outcome.touchdown_speed, outcome.touched_down
        )
        metrics["train/propellant_mean"] = _masked_mean(outcome.propellant_used, outcome.success)
        return loss, metrics

    def _update_fn(self, state: TrainState, pool: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        self.trace_count += 1
        key, draw_key = jax.random.split(state.key)
        indices = jax.random.randint(draw_key, (self.config.batch_size,), 0, self.pool_size)
        batch = jax.tree_util.tree_map(lambda x: x[indices], pool)
        batch = self.parallel.constrain_batch(batch)
        for leaf in jax.tree_util.tree_leaves(batch):
            chex.assert_shape(leaf, (self.config.batch_size, *leaf.shape[1:]))

        (loss, metrics), grads = jax.value_and_grad(self.loss, has_aux=True)(state.params, batch)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if self.checks:
            _check_finite(batch, "non-finite initial state in the training batch")
            _check_finite(
                (loss, grads),
                "non-finite loss or gradient; with checks off such an update is skipped",
            )
            _check_finite(params, "non-finite controller parameters after the update")

        metrics["train/loss"] = loss
        metrics["train/grad_norm"] = optax.tree.norm(grads)
        metrics["train/learning_rate"] = self.schedule(state.step)
        metrics["train/nonfinite_skipped"] = opt_state.total_notfinite
        metrics["train/nonfinite_consecutive"] = opt_state.notfinite_count
        new_state = state.replace(params=params, opt_state=opt_state, key=key, step=state.step + 1)
        return new_state, metrics

    def _evaluate_fn(self, params: Any, states: Any) -> dict[str, jax.Array]:
        trajectory = batch_rollout(self.task, self.controller, {"params": params}, states)
        outcome = map_landers(
            lambda t, p: landing_outcome(self.task.vehicle, t, p, self.task.cost),
            self.task,
            trajectory,
            states,
        )
        return {
            "eval/success_rate": jnp.mean(outcome.success),
            "eval/touchdown_speed_mean": _masked_mean(
                outcome.touchdown_speed, outcome.touched_down
            ),
            "eval/propellant_mean": _masked_mean(outcome.propellant_used, outcome.success),
        }

    def compile(self, state: TrainState) -> float:
        """Compile the update (and the validation pass) ahead of time; return seconds."""
        start = time.perf_counter()
        update = self._update_fn
        if self.checks:
            update = checkify.checkify(update, errors=checkify.user_checks)
        # Every input and output is replicated except the batch inside the update, so a
        # returned state can be passed straight back in.
        replicated = self.parallel.replicated
        lowered = lower_training_function(
            update, state, self.train_states, in_shardings=replicated, out_shardings=replicated
        )
        self._update = lowered.compile()
        if self.eval_states is not None:
            evaluate = jax.jit(self._evaluate_fn, out_shardings=replicated)
            self._evaluate = evaluate.lower(state.params, self.eval_states).compile()
        self._check_memory()
        return time.perf_counter() - start

    def _check_memory(self) -> None:
        """Raise :class:`~diffland.training.memory.InsufficientMemoryError` before the
        first update when a compiled function needs more memory than is free."""
        devices = list(self.parallel.mesh.devices.flat)
        sim = self.task.sim
        memory.check_fits(
            memory.compiled_bytes(self._update),
            devices,
            f"one training update (batch {self.config.batch_size}, horizon {sim.horizon}, "
            f"remat {sim.remat!r})",
            'Lower batch_size or the horizon, or set SimConfig.remat to "step" or "nested".',
        )
        if self._evaluate is not None:
            count = jax.tree_util.tree_leaves(self.eval_states)[0].shape[0]
            memory.check_fits(
                memory.compiled_bytes(self._evaluate),
                devices,
                f"the validation pass over {count} start states",
                "Pass fewer validation states or shorten the horizon.",
            )

    def step(self, state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        """Apply one update with the compiled function."""
        if self._update is None:
            self.compile(state)
        if self.checks:
            error, (state, metrics) = self._update(state, self.train_states)
            error.throw()
            return state, metrics
        return self._update(state, self.train_states)

    def evaluate(self, params: Any) -> dict[str, float]:
        """Score ``params`` on the validation states."""
        if self.eval_states is None:
            return {}
        if self._evaluate is None:
            self._evaluate = jax.jit(self._evaluate_fn)
        return {
            k: float(v) for k, v in jax.device_get(self._evaluate(params, self.eval_states)).items()
        }

    # -- the loop ---------------------------------------------------------------------

    def restore(self) -> TrainState | None:
        """Return the state of the newest readable checkpoint, or None."""
        if self.store is None:
            return None
        restored = self.store.restore_latest(self.init())
        if restored is None:
            return None
        step, state = restored
        logger.info("resuming from checkpoint at step %d in %s", step, self.store.directory)
        return state

    def train(self, resume: bool = False) -> TrainResult:
        """Run the updates up to ``config.steps``; with ``resume``, continue a checkpoint.

        SIGINT (Ctrl-C) and SIGTERM stop training after the update in flight. Its state
        is saved as a checkpoint (when a checkpoint folder is set), a logged warning
        explains how to resume, and :class:`TrainingInterrupted`, a ``KeyboardInterrupt``,
        is raised. A ``KeyboardInterrupt`` raised by a callback saves the newest finished
        state the same way.
        """
        if not resume and self.store is not None and self.store.steps():
            raise ValueError(
                f"{self.store.directory} already contains checkpoints {self.store.steps()}; pass "
                "resume=True to continue them, or choose an empty checkpoint folder."
            )
        with StopSignals() as stop:
            return self._train(resume, stop)

    def _train(self, resume: bool, stop: StopSignals) -> TrainResult:
        state = self.restore() if resume else None
        resumed_from = int(state.step) if state is not None else None
        if state is None:
            if resume:
                logger.warning("no checkpoint to resume from; starting at step 0")
            state = self.init()
        if int(state.step) >= self.config.steps:
            # A finished run needs no compiled update, so resuming it costs no compile.
            logger.info(
                "the checkpoint of step %d completes the %d steps, so nothing is left to train",
                int(state.step),
                self.config.steps,
            )
            return TrainResult(
                state, 0.0, float(state.train_seconds), resumed_from, self._selects()
            )
        compile_seconds = self.compile(state)
        logger.info(
            "compiled the update in %.2f s; training on %s",
            compile_seconds,
            self.parallel.describe(),
        )

        first_metrics = {"train/compile_seconds": compile_seconds}
        if resumed_from is None:
            # Score the starting parameters too, so that selection can fall back to them
            # (a cloned policy or a zero-initialised correction) if every update is worse.
            evaluation = self.evaluate(state.params)
            state = self._keep_if_best(state, evaluation)
            first_metrics.update(evaluation)
        self._emit(int(state.step), first_metrics)
        start = time.perf_counter()
        earlier_seconds = float(state.train_seconds)

        def timed(state):
            elapsed = earlier_seconds + time.perf_counter() - start
            return state.replace(train_seconds=self.parallel.replicate(np.float32(elapsed)))

        # ``processed`` is the newest state whose update, evaluation and logging are all
        # done; an interruption saves it, never a state caught halfway through.
        processed = state
        saved_step = int(state.step)
        stop.mode = "defer"
        try:
            while int(processed.step) < self.config.steps:
                state, metrics = self.step(processed)
                step = int(state.step)
                host_metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                if step % self.config.eval_every == 0 or step == self.config.steps:
                    host_metrics.update(self.evaluate(state.params))
                    state = self._keep_if_best(state, host_metrics)
                self._emit(step, host_metrics)
                processed = state
                if self._diverged(host_metrics):
                    saved_step = self._save(timed(processed))
                    self._raise_diverged(step, host_metrics)
                if step % self.config.checkpoint_every == 0 or step == self.config.steps:
                    saved_step = self._save(timed(processed))
                if stop.pending is not None:
                    raise TrainingInterrupted(stop.pending)
        except KeyboardInterrupt as interrupt:
            stop.mode = "ignore"
            if int(processed.step) != saved_step:
                saved_step = self._save_after_interrupt(timed(processed), saved_step)
            self._log_interrupted(interrupt, int(processed.step), saved_step)
            raise
        finally:
            stop.mode = "raise"
        state = processed
        jax.block_until_ready(state)
        state = timed(state)
        return TrainResult(
            state, compile_seconds, float(state.train_seconds), resumed_from, self._selects()
        )

    def _selects(self) -> bool:
        """Return whether training keeps the best-validation parameters."""
        return self.config.select_best and self.eval_states is not None

    def _keep_if_best(self, state: TrainState, metrics: Mapping[str, float]) -> TrainState:
        """Record the current parameters as the best if their validation score is higher."""
        if "eval/success_rate" not in metrics:
            return state
        propellant = metrics["eval/propellant_mean"]
        # With no successful landing the mean propellant is NaN; rank such a score lowest.
        score = (
            metrics["eval/success_rate"],
            -propellant if math.isfinite(propellant) else -math.inf,
        )
        if score <= tuple(float(x) for x in state.best_score):
            return state
        return state.replace(
            best_params=state.params,
            best_score=self.parallel.replicate(np.asarray(score, np.float32)),
            best_step=state.step,
        )

    def _save(self, state: TrainState) -> int:
        """Checkpoint ``state`` if a checkpoint folder is set; return its step."""
        step = int(state.step)
        if self.store is not None:
            self.store.save(step, state)
        return step

    def _save_after_interrupt(self, state: TrainState, saved_step: int) -> int:
        """Checkpoint ``state``; return its step, or ``saved_step`` when the write failed."""
        try:
            return self._save(state)
        except OSError as error:
            # A signal that raised at once can land inside orbax's own write of this step.
            logger.warning("could not save step %d after the interrupt: %s", state.step, error)
            return saved_step

    def _log_interrupted(self, interrupt: KeyboardInterrupt, step: int, saved_step: int) -> None:
        cause = (
            f"by {interrupt}" if isinstance(interrupt, TrainingInterrupted) else "by an interrupt"
        )
        if self.store is None:
            logger.warning(
                "training stopped %s after step %d; no checkpoint folder was given, so this "
                "progress is not saved",
                cause,
                step,
            )
            return
        logger.warning(
            "training stopped %s after step %d; the newest checkpoint is step %d in %s. To "
            "continue, call Trainer.train(resume=True) with the same checkpoint folder and "
            "settings (for the experiments: the same command with --resume --out RUN_FOLDER)",
            cause,
            step,
            saved_step,
            self.store.directory,
        )

    def _diverged(self, metrics: Mapping[str, float]) -> bool:
        consecutive = int(metrics["train/nonfinite_consecutive"])
        return consecutive >= self.config.max_consecutive_nonfinite

    def _raise_diverged(self, step: int, metrics: Mapping[str, float]) -> None:
        consecutive = int(metrics["train/nonfinite_consecutive"])
        raise FloatingPointError(
            f"the last {consecutive} updates up to step {step} had non-finite gradients and "
            "were skipped, so training stopped. The skipped updates left the parameters "
            "unchanged, and the state of this step, with the best validation parameters, is "
            "saved as a checkpoint if a checkpoint folder was given. Lower the learning rate "
            "or clip_norm, shorten the horizon, or run with checks=True to find where the "
            "first NaN appears."
        )

    def _emit(self, step: int, metrics: Mapping[str, float]) -> None:
        for callback in self.callbacks:
            callback(step, metrics)
