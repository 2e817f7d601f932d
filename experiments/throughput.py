"""Throughput benchmark: environment steps per second, the cost of a gradient, backward
memory, compile time, distance to the CPU's peak, and time to a success threshold.

Rules: one process, float32, compilation done ahead of time and reported apart, every
timed call ends with ``block_until_ready``, and each time is the median of at least 5
calls. The batch is split over a one-axis mesh of all local devices when it divides by
their count. On a CPU the process asks for ``--host-devices`` devices (default: one per
usable core) before JAX starts its backend.

A "step" is one control step of one lander (the controller runs once and the action is
held over ``substeps`` physics steps), so steps per second = control steps x batch /
seconds. With sub-steps the physics steps per second are reported too.

Figures (``--figures``, comma-separated):

- ``throughput``: steps per second of the 1-D, planar and 6-DOF vehicles over a scan of
  ``--horizon`` control steps (1,000 by default), with a fixed action and with the
  experiments' MLP in the loop, in the ``core`` configuration (semi-implicit Euler, one
  sub-step, no drag, no wind) and the ``full`` one (as the experiments run them).
- ``anchors``: gymnax CartPole-v1 and Pendulum-v1 (random actions, gymnax's own
  auto-reset) at the same batch sizes and scan length, and brax ``inverted_pendulum``
  (generalized backend, zero actions, no wrappers) over 100 steps. Skipped, with a
  message, where gymnax or brax is missing or with ``--no-anchors``.
- ``gradient``: time of the trainer's loss with its gradient over the loss alone and
  over the bare forward rollout, 6-DOF booster with the cascaded PID, remat none/step.
  The loss and the loss with its gradient are compiled as the trainer compiles its
  update (``diffland.training.lower_training_function``), so the figure times what
  training runs. The rollout is a plain ``jax.jit`` of ``jax.vmap``.
- ``memory``: XLA's memory analysis of that gradient, compiled the same way, per
  lander-step, remat none/step/nested.
- ``compile``: compile time of the trainer's jitted update per vehicle.
- ``hardware_limit``: XLA's FLOP count of one step times the measured steps per second,
  against the CPU's peak estimated from /proc/cpuinfo.
- ``time_to_threshold`` (only on request): wall time and environment steps for APG and
  for brax's PPO to reach the held-out success threshold on the planar booster.

Run ``python -m experiments.throughput [--quick] [--figures ...] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import io
import logging
import math
import os
import pathlib
import re
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffland import benchmarking
from diffland.controllers import CascadedPID, MLPPolicy, VerticalPID
from diffland.dynamics import (
    RK4,
    PlanarBooster,
    RigidBody,
    SemiImplicitEuler,
    SimConfig,
    Vehicle,
    VerticalLander,
    falcon9_like,
    falcon9_like_planar,
    falcon9_like_rigid_body,
    final_state,
    final_state_batch,
    initial_sim_state,
    lower_final_state_batch,
    physics_step,
)
from diffland.scenarios import (
    PLANAR_SCENARIO,
    RIGID_BODY_SCENARIO,
    LandingBurnScenario,
    sample_booster_states,
    sample_landing_burn_states,
)
from diffland.training.parallel import DataParallel
from experiments import common

EXPERIMENT = "throughput"
BENCHMARK = True
"""Marks a benchmark: ``diffland bench`` runs it, and ``diffland train`` does not offer it."""
FIGURES = (
    "throughput",
    "anchors",
    "gradient",
    "memory",
    "compile",
    "hardware_limit",
    "time_to_threshold",
)
DEFAULT_FIGURES = FIGURES[:-1]
"""Figures run without ``--figures``; time_to_threshold takes up to an hour and more."""
VEHICLES = ("vertical", "planar", "rigid_body")
CONFIGURATIONS = ("core", "full")
CONTROLLERS = ("fixed", "mlp")
ANCHOR_NAMES = ("CartPole-v1", "Pendulum-v1", "inverted_pendulum")
"""Anchors the harness measures: two gymnax environments and brax's ``inverted_pendulum``."""
START_SEED = 20_261_207
"""Seed of the start states of the throughput and gradient figures."""

logger = logging.getLogger(EXPERIMENT)


@dataclasses.dataclass(frozen=True)
class ThroughputConfig:
    """All settings of a run; saved as ``config.json`` in the run folder."""

    quick: bool = False
    figures: tuple[str, ...] = DEFAULT_FIGURES
    host_devices: int = 1
    batch_sizes: tuple[int, ...] = (1, 64, 1024, 4096, 16384)
    horizon: int = 1000
    """Control steps per timed scan."""
    repeats: int = 5
    """Timed calls per measurement; the median is reported."""
    start_pool: int = 4096
    """Feasible start states drawn per vehicle; larger batches repeat them in order."""
    vehicles: tuple[str, ...] = VEHICLES
    controllers: tuple[str, ...] = CONTROLLERS
    until_oom: bool = False
    """Stop a case's batch sweep at its first out-of-memory error instead of failing."""
    max_call_seconds: float | None = None
    """Stop a case's batch sweep after the first batch whose median call takes longer,
    s; None measures every batch size."""
    anchors: bool = True
    anchor_names: tuple[str, ...] = ANCHOR_NAMES
    """gymnax environment names, and ``inverted_pendulum`` for the brax anchor."""
    brax_batch_sizes: tuple[int, ...] = (1024, 4096)
    brax_horizon: int = 100
    gradient_vehicle: str = "rigid_body"
    """Vehicle of the gradient and memory figures, with its experiment's PID."""
    gradient_batch: int = 4096
    gradient_horizons: tuple[int, ...] = (32, 128, 512)
    memory_batch: int = 256
    memory_horizons: tuple[int, ...] = (32, 128, 512)
    compile_batch: int = 256
    compile_controllers: tuple[str, ...] = ("pid", "mlp")
    fma_units: int = 2
    """FMA units per core assumed for the CPU peak."""
    threshold: float = 0.99
    """Held-out success rate that time_to_threshold waits for."""
    ppo_cap_seconds: float = 3600.0
    apg_cap_seconds: float = 3600.0
    threshold_pool: int = 16_384
    threshold_held_out: int = 4096
    threshold_eval_every: int = 10
    """APG updates between held-out evaluations."""
    apg_batch: int = 256
    apg_pid_steps: int = 60
    apg_mlp_steps: int = 1000
    imitation_steps: int = 8000
    imitation_states: int = 2048
    ppo_num_envs: int = 512
    ppo_batch_size: int = 256
    ppo_minibatches: int = 8
    ppo_unroll: int = 20
    ppo_updates_per_batch: int = 4
    ppo_eval_every_steps: int = 2_000_000
    """Environment steps between PPO's held-out evaluations."""
    ppo_hidden: tuple[int, ...] = (64, 64)

    @classmethod
    def create(cls, quick: bool, **changes: Any) -> ThroughputConfig:
        config = cls(quick=quick)
        if quick:
            config = dataclasses.replace(
                config,
                batch_sizes=(1, 64, 1024),
                start_pool=1024,
                brax_batch_sizes=(1024,),
                gradient_batch=256,
                gradient_horizons=(32,),
                memory_batch=64,
                memory_horizons=(32,),
                compile_batch=64,
                compile_controllers=("pid",),
            )
        return dataclasses.replace(config, **changes)

    def validate(self) -> None:
        unknown = sorted(set(self.figures) - set(FIGURES))
        if unknown or not self.figures:
            raise ValueError(
                f"--figures {','.join(self.figures)} is invalid: choose from {', '.join(FIGURES)}."
            )
        for name in ("batch_sizes", "brax_batch_sizes", "gradient_horizons", "memory_horizons"):
            values = getattr(self, name)
            if not values or any(not isinstance(v, int) or v < 1 for v in values):
                raise ValueError(f"{name} = {values!r} is invalid: pass integers >= 1.")
        if self.repeats < benchmarking.MIN_REPEATS:
            raise ValueError(
                f"--repeats {self.repeats} is invalid: the median needs at least "
                f"{benchmarking.MIN_REPEATS} calls."
            )
        if set(self.vehicles) - set(VEHICLES) or self.gradient_vehicle not in VEHICLES:
            raise ValueError(
                f"vehicles = {self.vehicles!r} and gradient_vehicle = {self.gradient_vehicle!r}: "
                f"choose from {', '.join(VEHICLES)}."
            )
        if set(self.controllers) - set(CONTROLLERS):
            raise ValueError(
                f"controllers = {self.controllers!r}: choose from {', '.join(CONTROLLERS)}."
            )
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold = {self.threshold} is invalid: pass a rate in (0, 1].")
        if self.host_devices < 1 or self.horizon < 1 or self.start_pool < 1:
            raise ValueError("host_devices, horizon and start_pool must be integers >= 1.")
        self._validate_choices()
        self._validate_counts()

    def _validate_choices(self) -> None:
        for name, choices in (
            ("vehicles", VEHICLES),
            ("controllers", CONTROLLERS),
            ("compile_controllers", ("pid", "mlp")),
            ("anchor_names", ANCHOR_NAMES),
        ):
            values = getattr(self, name)
            if not values or set(values) - set(choices):
                raise ValueError(
                    f"{name} = {values!r} is invalid: pass one or more of {', '.join(choices)}."
                )

    def _validate_counts(self) -> None:
        for name in (
            "fma_units",
            "threshold_eval_every",
            "apg_batch",
            "apg_pid_steps",
            "apg_mlp_steps",
            "imitation_steps",
            "imitation_states",
            "threshold_pool",
            "threshold_held_out",
            "gradient_batch",
            "memory_batch",
            "compile_batch",
            "brax_horizon",
            "ppo_num_envs",
            "ppo_batch_size",
            "ppo_minibatches",
            "ppo_unroll",
            "ppo_updates_per_batch",
            "ppo_eval_every_steps",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} = {value!r} is invalid: pass an integer >= 1.")
        if any(isinstance(v, bool) or not (isinstance(v, int) and v >= 1) for v in self.ppo_hidden):
            raise ValueError(
                f"ppo_hidden = {self.ppo_hidden!r} is invalid: pass layer widths, integers >= 1."
            )
        # The PPO of brax 0.14.2 (brax/training/agents/ppo/train.py) asserts this.
        if (self.ppo_batch_size * self.ppo_minibatches) % self.ppo_num_envs:
            raise ValueError(
                f"ppo_num_envs = {self.ppo_num_envs} is invalid: ppo_batch_size x "
                f"ppo_minibatches = {self.ppo_batch_size * self.ppo_minibatches} must be a "
                "multiple of it, as brax's PPO requires."
            )
        for name in ("max_call_seconds", "ppo_cap_seconds", "apg_cap_seconds"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"{name} = {value!r} is invalid: pass a positive number of seconds"
                    + (" or leave it unset." if name == "max_call_seconds" else ".")
                )


# -- devices ------------------------------------------------------------------------------


def default_host_devices() -> int:
    """Return the number of CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def configure_host_devices(count: int) -> int:
    """Ask JAX for ``count`` CPU devices; return the device count JAX then lists.

    This works only before JAX starts its backend. Later (for example inside a test
    process that already ran JAX) the count stays as it is, with a warning.
    """
    flag = f"--xla_force_host_platform_device_count={count}"
    flags = re.sub(
        r"--xla_force_host_platform_device_count=\S+", "", os.environ.get("XLA_FLAGS", "")
    )
    os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError as error:
        logger.warning(
            "JAX's backend already started, so the %d host devices requested are not "
            "created (%s); measuring on the %d device(s) it has",
            count,
            error,
            jax.device_count(),
        )
    return jax.device_count()


def _is_out_of_memory(error: Exception) -> bool:
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def _place(states: Any, devices: int) -> tuple[Any, int]:
    """Split the batch over ``devices`` devices when it divides, else keep it on one."""
    batch = jax.tree_util.tree_leaves(states)[0].shape[0]
    if devices > 1 and batch % devices == 0:
        return DataParallel.create(devices).shard_batch(states), devices
    return jax.device_put(states, jax.devices()[0]), 1


# -- vehicles -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VehicleSetup:
    """A vehicle with its parameters and simulation settings in one configuration."""

    name: str
    configuration: str
    vehicle: Vehicle
    params: Any
    sim: SimConfig
    sample: Callable[[jax.Array, int], Any]
    """Returns ``count`` feasible start states."""


def _chunk(count: int) -> int:
    chunk = 256
    while chunk < 4 * count and chunk < 8192:
        chunk *= 2
    return chunk


def _calm(states: Any) -> Any:
    """Return booster states with the wind set to zero."""
    return states.replace(wind=jax.tree_util.tree_map(jnp.zeros_like, states.wind))


def vehicle_setup(name: str, configuration: str, horizon: int) -> VehicleSetup:
    """Return the vehicle ``name`` in ``configuration`` for a scan of ``horizon`` steps.

    ``core``: semi-implicit Euler, one physics step per control step, no drag, no wind.
    ``full``: as the experiments run them. The 1-D lander has no drag and one RK4 step
    of 0.05 s per control step (vertical_landing). The boosters have drag and two RK4
    steps of 0.05 s per control step of 0.1 s, in the scenarios' wind (planar_landing,
    rigid_body_landing). Touchdown handling is part of every physics step in both.
    """
    core = configuration == "core"
    drag = not core and name != "vertical"
    if name == "vertical":
        vehicle, params = VerticalLander(drag=False), falcon9_like(drag=False)
        control_dt, substeps = 0.05, 1

        def sample(key, count):
            states, _ = sample_landing_burn_states(
                key, count, vehicle, params, LandingBurnScenario(), chunk=_chunk(count)
            )
            return states

    else:
        if name == "planar":
            vehicle, params = PlanarBooster(drag=drag), falcon9_like_planar(drag=drag)
            scenario = PLANAR_SCENARIO
        else:
            vehicle, params = RigidBody(drag=drag), falcon9_like_rigid_body(drag=drag)
            scenario = RIGID_BODY_SCENARIO
        control_dt, substeps = 0.1, 1 if core else 2

        def sample(key, count):
            states = sample_booster_states(
                key, count, vehicle, params, scenario, chunk=_chunk(count)
            )
            return _calm(states) if core else states

    integrator = SemiImplicitEuler() if core else RK4()
    sim = SimConfig(
        control_dt=control_dt, substeps=substeps, horizon=horizon, integrator=integrator
    )
    return VehicleSetup(name, configuration, vehicle, params, sim, sample)


def _controller(setup: VehicleSetup, kind: str, example: Any):
    """Return ``(make_policy, variables, carry)`` for a fixed action or the experiments' MLP.

    ``make_policy(variables)`` returns the policy, and ``carry`` is its initial memory.
    The fixed action is the middle of the action bounds (mid throttle, zero gimbal).
    """
    vehicle, params = setup.vehicle, setup.params
    if kind == "fixed":
        low, high = vehicle.action_bounds(params)
        variables = {"action": 0.5 * (jnp.asarray(low) + jnp.asarray(high))}

        def make_policy(variables):
            return lambda state, params, carry: (variables["action"], carry)

        return make_policy, variables, ()
    module = MLPPolicy(vehicle)
    variables = module.init(jax.random.PRNGKey(0), example, params, module.initial_carry())

    def make_policy(variables):
        return lambda state, params, carry: module.apply(variables, state, params, carry)

    return make_policy, variables, module.initial_carry()


def draw_starts(setup: VehicleSetup, pool: int, batch: int) -> Any:
    """Return ``batch`` start states: ``min(pool, batch)`` drawn ones, repeated in order."""
    drawn = setup.sample(jax.random.PRNGKey(START_SEED), min(pool, batch))
    count = jax.tree_util.tree_leaves(drawn)[0].shape[0]
    index = np.arange(batch) % count
    return jax.tree_util.tree_map(lambda x: np.asarray(x)[index], drawn)


def rollout_function(setup: VehicleSetup, make_policy, carry) -> Callable:
    """Return ``run(variables, states)``: the batched final state after the scan."""

    def run(variables, states):
        policy = make_policy(variables)
        return jax.vmap(
            lambda s: final_state(setup.vehicle, setup.sim, policy, s, setup.params, carry)
        )(states)

    return run


# -- figure 1: throughput --------------------------------------------------------------


def _rate_row(base: dict[str, Any], batch: int, horizon: int, substeps: int, timing, compile_s):
    seconds = timing["median_seconds"]
    steps = batch * horizon / seconds
    row = dict(base)
    row.update(
        batch=batch,
        horizon=horizon,
        substeps=substeps,
        compile_seconds=compile_s,
        median_seconds=seconds,
        min_seconds=timing["min_seconds"],
        steps_per_second=steps,
        physics_steps_per_second=steps * substeps,
    )
    return row


def measure_rollout(setup, kind, states, devices, config, path="batched") -> dict[str, Any]:
    """Time the scan of ``setup`` under controller ``kind`` for one batch of ``states``.

    ``path`` ``"batched"`` times :func:`~diffland.dynamics.final_state_batch` (the batch
    in the component layout, split over the devices), ``"vmap"`` a jitted ``jax.vmap`` of
    :func:`~diffland.dynamics.final_state`. The batched path compiles on its first call,
    so its compile time is that call's time minus the median of the timed calls.
    """
    example = jax.tree_util.tree_map(lambda x: x[0], states)
    make_policy, variables, carry = _controller(setup, kind, example)
    batch = jax.tree_util.tree_leaves(states)[0].shape[0]
    if path == "batched":
        used = devices if devices > 1 and batch % devices == 0 else 1
        policy = make_policy(variables)
        chosen = jax.local_devices()[:used]
        inputs, _ = _place(states, used)
        # Check the inputs once, so that the timed calls leave out final_state_batch's own
        # check, which reads the whole batch on the host.
        setup.vehicle.validate(inputs, setup.params)

        def run(states):
            return final_state_batch(
                setup.vehicle,
                setup.sim,
                policy,
                states,
                setup.params,
                carry,
                devices=chosen,
                validate=False,
            )

        start = time.perf_counter()
        jax.block_until_ready(run(inputs))
        first = time.perf_counter() - start
        timing = benchmarking.time_call(run, inputs, repeats=config.repeats)
        compile_s = max(first - timing["median_seconds"], 0.0)
    else:
        placed, used = _place(states, devices)
        run = rollout_function(setup, make_policy, carry)
        compiled, compile_s = benchmarking.compile_timed(run, variables, placed)
        timing = benchmarking.time_call(compiled, variables, placed, repeats=config.repeats)
    base = {
        "vehicle": setup.name,
        "configuration": setup.configuration,
        "controller": kind,
        "path": path,
        "devices": used,
    }
    return _rate_row(base, batch, setup.sim.horizon, setup.sim.substeps, timing, compile_s)


def throughput_figure(
    config: ThroughputConfig,
    device_count: int,
    on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Measure every vehicle, configuration, controller and batch size.

    Each batch runs on all devices when it divides by their count. The 6-DOF core case
    with a fixed action runs on one device as well, so the ratio of the two shows.
    ``on_rows``, when given, receives the rows measured so far after each batch size.
    """
    rows = []
    report = on_rows if on_rows is not None else lambda rows: None
    for name in config.vehicles:
        for configuration in CONFIGURATIONS:
            setup = vehicle_setup(name, configuration, config.horizon)
            all_states = draw_starts(setup, config.start_pool, max(config.batch_sizes))
            for kind in config.controllers:
                for batch in config.batch_sizes:
                    states = jax.tree_util.tree_map(lambda x, b=batch: x[:b], all_states)
                    runs = [(device_count, "batched")]
                    compare = name == "rigid_body" and configuration == "core" and kind == "fixed"
                    if compare and device_count > 1 and batch % device_count == 0:
                        runs.append((1, "batched"))
                    if compare:
                        runs.append((1, "vmap"))
                    try:
                        measured = [
                            measure_rollout(setup, kind, states, devices, config, path)
                            for devices, path in runs
                        ]
                    except Exception as error:
                        if not (config.until_oom and _is_out_of_memory(error)):
                            raise
                        logger.warning(
                            "%s %s %s: out of memory at batch %d; larger batches skipped",
                            name,
                            configuration,
                            kind,
                            batch,
                        )
                        rows.append(
                            {
                                "vehicle": name,
                                "configuration": configuration,
                                "controller": kind,
                                "batch": batch,
                                "error": "out of memory",
                            }
                        )
                        report(rows)
                        break
                    for row in measured:
                        logger.info(
                            "%s %s %s batch %d on %d device(s): %.3g steps/s",
                            name,
                            configuration,
                            kind,
                            batch,
                            row["devices"],
                            row["steps_per_second"],
                        )
                    rows.extend(measured)
                    report(rows)
                    limit = config.max_call_seconds
                    slowest = max(row["median_seconds"] for row in measured)
                    if limit is not None and slowest > limit:
                        logger.info(
                            "%s %s %s: a call took over %.3g s at batch %d; larger batches skipped",
                            name,
                            configuration,
                            kind,
                            limit,
                            batch,
                        )
                        break
    return rows


# -- anchors --------------------------------------------------------------------------------


def gymnax_available() -> tuple[bool, str]:
    try:
        import gymnax  # noqa: F401
    except ImportError as error:
        return False, (
            f"gymnax is not installed ({error}); install the bench extra "
            '(pip install -c constraints.txt -e ".[bench]", or make bench) to measure the '
            "gymnax anchors"
        )
    return True, ""


def gymnax_rollout(name: str, horizon: int) -> Callable:
    """Return ``run(keys)``: one gymnax environment per key, ``horizon`` random steps each,
    with gymnax's ``step`` (which resets an episode that ends)."""
    import gymnax

    env, env_params = gymnax.make(name)
    space = env.action_space(env_params)

    def one(key):
        key, reset_key = jax.random.split(key)
        _, state = env.reset(reset_key, env_params)

        def body(carry, _):
            key, state = carry
            key, action_key, step_key = jax.random.split(key, 3)
            action = space.sample(action_key)
            # gymnax 1.0.1 returns (obs, state, reward, done, ...); the count of the
            # trailing entries differs between versions.
            state = env.step(step_key, state, action, env_params)[1]
            return (key, state), None

        (_, state), _ = jax.lax.scan(body, (key, state), None, length=horizon)
        return state

    return jax.vmap(one)


def brax_rollout(horizon: int) -> Callable:
    """Return ``run(keys)``: brax ``inverted_pendulum`` (generalized backend), one
    environment per key, ``horizon`` steps of zero action, without wrappers."""
    with contextlib.redirect_stdout(io.StringIO()):
        from brax import envs as brax_envs
    env = brax_envs.get_environment("inverted_pendulum", backend="generalized")

    def run(keys):
        state = jax.vmap(env.reset)(keys)
        action = jnp.zeros((keys.shape[0], env.action_size))

        def body(state, _):
            return jax.vmap(env.step)(state, action), None

        state, _ = jax.lax.scan(body, state, None, length=horizon)
        return state

    return run


def measure_keyed(name: str, run: Callable, batch: int, horizon: int, devices: int, config):
    keys = jax.random.split(jax.random.PRNGKey(START_SEED), batch)
    placed, used = _place(keys, devices)
    compiled, compile_s = benchmarking.compile_timed(run, placed)
    timing = benchmarking.time_call(compiled, placed, repeats=config.repeats)
    base = {"anchor": name, "devices": used}
    return _rate_row(base, batch, horizon, 1, timing, compile_s)


def anchors_figure(config: ThroughputConfig, device_count: int) -> dict[str, Any]:
    """Measure the gymnax and brax anchors, and record why any of them is skipped."""
    result: dict[str, Any] = {"rows": [], "skipped": []}
    available, reason = gymnax_available()
    if not available:
        logger.warning("gymnax anchors skipped: %s", reason)
        result["skipped"].append(reason)
    else:
        for name in [name for name in config.anchor_names if name != "inverted_pendulum"]:
            run = gymnax_rollout(name, config.horizon)
            for batch in config.batch_sizes:
                row = measure_keyed(name, run, batch, config.horizon, device_count, config)
                result["rows"].append(row)
                logger.info(
                    "gymnax %s batch %d: %.3g steps/s", name, batch, row["steps_per_second"]
                )
    if "inverted_pendulum" not in config.anchor_names:
        return result
    try:
        run = brax_rollout(config.brax_horizon)
    except ImportError as error:
        reason = f"brax is not installed ({error}); the brax anchor is skipped"
        logger.warning(reason)
        result["skipped"].append(reason)
        return result
    for batch in config.brax_batch_sizes:
        row = measure_keyed(
            "brax inverted_pendulum (generalized)",
            run,
            batch,
            config.brax_horizon,
            device_count,
            config,
        )
        result["rows"].append(row)
        logger.info("brax inverted_pendulum batch %d: %.3g steps/s", batch, row["steps_per_second"])
    return result


def add_cartpole_ratios(rows: list[dict[str, Any]], anchors: list[dict[str, Any]]) -> None:
    """Add ``ratio_to_cartpole``: steps per second over gymnax CartPole's at the same batch
    (None where CartPole was not measured at that batch)."""
    cartpole = {
        row["batch"]: row["steps_per_second"] for row in anchors if row["anchor"] == "CartPole-v1"
    }
    for row in rows:
        reference = cartpole.get(row.get("batch"))
        rate = row.get("steps_per_second")
        row["ratio_to_cartpole"] = rate / reference if reference and rate else None


# -- figures 2 and 3: gradient cost and memory ------------------------------------------------


def _gradient_trainer(name: str, horizon: int, remat: str, batch: int, devices: int, pool: Any):
    """Return the trainer of the experiment's task of vehicle ``name`` (its PID, cost and
    simulation settings) at ``horizon`` control steps and ``remat``."""
    from diffland.training import LandingCost, LandingTask, TrainConfig, Trainer

    setup = vehicle_setup(name, "full", horizon)
    sim = dataclasses.replace(setup.sim, remat=remat)
    task = LandingTask(setup.vehicle, setup.params, sim, LandingCost())
    pid_class = VerticalPID if name == "vertical" else CascadedPID
    controller = pid_class(setup.vehicle, sim.control_dt)
    train = TrainConfig(batch_size=batch, num_devices=devices, checks=False)
    return Trainer(task, controller, train, pool), setup


def _compile_training_timed(function: Callable, *args: Any) -> tuple[Any, float]:
    """Compile ``function`` for ``args`` as the trainer compiles its update; return the
    compiled function and the seconds spent."""
    from diffland.training import lower_training_function

    start = time.perf_counter()
    compiled = lower_training_function(function, *args).compile()
    return compiled, time.perf_counter() - start


def _gradient_functions(trainer):
    def loss(params, batch):
        return trainer.loss(params, batch)[0]

    return loss, jax.value_and_grad(trainer.loss, has_aux=True)


def gradient_figure(config: ThroughputConfig, device_count: int) -> list[dict[str, Any]]:
    """Time the trainer's loss with and without its gradient, both compiled as the
    trainer compiles its update, and the bare rollout."""
    batch = config.gradient_batch
    devices = device_count if batch % device_count == 0 else 1
    rows = []
    pool = None
    for horizon in config.gradient_horizons:
        for remat in ("none", "step"):
            if pool is None:
                setup = vehicle_setup(config.gradient_vehicle, "full", horizon)
                pool = draw_starts(setup, batch, batch)
            trainer, setup = _gradient_trainer(
                config.gradient_vehicle, horizon, remat, batch, devices, pool
            )
            params = trainer.init().params
            states, used = _place(pool, devices)
            loss, gradient = _gradient_functions(trainer)
            times = {}
            compile_seconds = {}
            for label, function in (("loss", loss), ("loss_and_gradient", gradient)):
                compiled, compile_seconds[label] = _compile_training_timed(function, params, states)
                times[label] = benchmarking.time_call(
                    compiled, params, states, repeats=config.repeats
                )["median_seconds"]
            controller = trainer.controller
            policy_carry = controller.initial_carry()

            def forward(params, states, setup=setup, controller=controller, carry=policy_carry):
                def policy(state, vehicle_params, memory):
                    return controller.apply({"params": params}, state, vehicle_params, memory)

                return jax.vmap(
                    lambda s: final_state(setup.vehicle, setup.sim, policy, s, setup.params, carry)
                )(states)

            compiled, compile_seconds["rollout"] = benchmarking.compile_timed(
                forward, params, states
            )
            times["rollout"] = benchmarking.time_call(
                compiled, params, states, repeats=config.repeats
            )["median_seconds"]
            row = {
                "vehicle": config.gradient_vehicle,
                "controller": type(trainer.controller).__name__,
                "batch": batch,
                "devices": used,
                "horizon": horizon,
                "remat": remat,
                "seconds": times,
                "compile_seconds": compile_seconds,
                "gradient_over_loss": times["loss_and_gradient"] / times["loss"],
                "gradient_over_rollout": times["loss_and_gradient"] / times["rollout"],
            }
            rows.append(row)
            logger.info(
                "gradient horizon %d remat %s: %.2fx the loss, %.2fx the rollout",
                horizon,
                remat,
                row["gradient_over_loss"],
                row["gradient_over_rollout"],
            )
    return rows


def memory_figure(config: ThroughputConfig) -> list[dict[str, Any]]:
    """Read the memory analysis of the gradient, compiled as the trainer compiles its
    update, per horizon and remat mode.

    One device, so the sizes are those of the whole batch.
    """
    batch = config.memory_batch
    rows = []
    pool = None
    for horizon in config.memory_horizons:
        for remat in ("none", "step", "nested"):
            if pool is None:
                setup = vehicle_setup(config.gradient_vehicle, "full", horizon)
                pool = draw_starts(setup, batch, batch)
            trainer, _ = _gradient_trainer(config.gradient_vehicle, horizon, remat, batch, 1, pool)
            params = trainer.init().params
            _, gradient = _gradient_functions(trainer)
            compiled, compile_s = _compile_training_timed(gradient, params, pool)
            sizes = benchmarking.memory_figures(compiled)
            temp = sizes["temp_size_in_bytes"]
            row = {
                "vehicle": config.gradient_vehicle,
                "batch": batch,
                "horizon": horizon,
                "remat": remat,
                "segment": trainer.task.sim.segment_length if remat == "nested" else None,
                "compile_seconds": compile_s,
                **sizes,
                "temp_bytes_per_step": temp / (batch * horizon) if temp is not None else None,
            }
            rows.append(row)
            logger.info("memory horizon %d remat %s: temp %s bytes", horizon, remat, temp)
    return rows


# -- figure 5: compile time of the training step ----------------------------------------------


def experiment_task(name: str):
    """Return the landing task of the experiment of vehicle ``name``: the vehicle, its
    parameters, simulation settings and horizon as the experiments set them."""
    from diffland.training import LandingCost, LandingTask

    if name == "vertical":
        # vertical_landing: 25 s in control steps of 0.05 s.
        setup = vehicle_setup(name, "full", 500)
        return LandingTask(setup.vehicle, setup.params, setup.sim), setup
    # planar_landing and rigid_body_landing: 28 s in control steps of 0.1 s.
    setup = vehicle_setup(name, "full", 280)
    return LandingTask(setup.vehicle, setup.params, setup.sim, LandingCost()), setup


def compile_figure(config: ThroughputConfig) -> list[dict[str, Any]]:
    """Compile the trainer's update (loss, gradient and Adam step) for each vehicle."""
    from diffland.training import TrainConfig, Trainer

    rows = []
    for name in config.vehicles:
        task, setup = experiment_task(name)
        pool = draw_starts(setup, config.compile_batch, config.compile_batch)
        for kind in config.compile_controllers:
            if kind == "pid":
                pid_class = VerticalPID if name == "vertical" else CascadedPID
                controller = pid_class(setup.vehicle, setup.sim.control_dt)
            else:
                controller = MLPPolicy(setup.vehicle)
            train = TrainConfig(batch_size=config.compile_batch, num_devices=1, checks=False)
            trainer = Trainer(task, controller, train, pool)
            seconds = trainer.compile(trainer.init())
            rows.append(
                {
                    "vehicle": name,
                    "controller": type(controller).__name__,
                    "batch": config.compile_batch,
                    "horizon": setup.sim.horizon,
                    "substeps": setup.sim.substeps,
                    "compile_seconds": seconds,
                }
            )
            logger.info("%s %s: update compiled in %.1f s", name, kind, seconds)
    return rows


# -- figure 6: distance to the hardware limit -------------------------------------------------


STEP_COST_LANDERS = 1024
"""Landers per device in the programs that :func:`step_cost` compiles."""


def step_cost(setup: VehicleSetup, kind: str, devices: int) -> dict[str, Any]:
    """Count XLA's FLOPs and bytes accessed per lander and control step.

    ``flops_per_step`` and ``bytes_per_step`` come from the program that figure 1 times
    (:func:`~diffland.dynamics.lower_final_state_batch`), compiled for one control step
    with :data:`STEP_COST_LANDERS` landers per device. The bytes include one conversion
    of the state into the component layout and back. ``vmap_flops_per_step`` counts the
    same step written as ``jax.vmap`` of the controller and of ``substeps`` physics
    steps, each compiled alone. The difference is the work that XLA's fusion repeats
    there (see :func:`~diffland.dynamics.components.shared`).
    """
    batch = STEP_COST_LANDERS * devices
    states = draw_starts(setup, min(batch, 256), batch)
    example = jax.tree_util.tree_map(lambda x: x[0], states)
    make_policy, variables, carry = _controller(setup, kind, example)
    placed, used = _place(states, devices)
    one_step = dataclasses.replace(setup.sim, horizon=1)
    lowered = lower_final_state_batch(
        setup.vehicle,
        one_step,
        make_policy(variables),
        placed,
        setup.params,
        carry,
        devices=jax.local_devices()[:used],
    )
    cost = benchmarking.compiled_cost(lowered.compile())
    landers = batch // used

    def per_lander(value):
        return None if value is None else value / landers

    return {
        "flops_per_step": per_lander(cost["flops"]),
        "bytes_per_step": per_lander(cost["bytes_accessed"]),
        "vmap_flops_per_step": _vmap_step_flops(setup, make_policy, variables, carry, states),
    }


def _vmap_step_flops(setup: VehicleSetup, make_policy, variables, carry, states) -> float | None:
    """Return the FLOPs per lander of one control step as ``jax.vmap`` programs: the
    controller once plus ``substeps`` physics steps, each compiled alone so that no loop
    body stands for several trips."""
    batch = jax.tree_util.tree_leaves(states)[0].shape[0]
    sims = jax.vmap(initial_sim_state)(states)

    def act(variables, sims):
        policy = make_policy(variables)
        return jax.vmap(lambda sim: policy(sim.vehicle, setup.params, carry)[0])(sims)

    actions = jax.jit(act)(variables, sims)

    def physics(sims, actions):
        return jax.vmap(
            lambda sim, action: physics_step(
                setup.vehicle,
                setup.sim.integrator,
                sim,
                action,
                setup.params,
                setup.sim.physics_dt,
            )
        )(sims, actions)

    policy_flops = benchmarking.compiled_flops(jax.jit(act).lower(variables, sims).compile())
    physics_flops = benchmarking.compiled_flops(jax.jit(physics).lower(sims, actions).compile())
    if policy_flops is None or physics_flops is None:
        return None
    return (policy_flops + setup.sim.substeps * physics_flops) / batch


def hardware_limit_figure(
    config: ThroughputConfig, throughput_rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """Compare FLOPs x steps per second of each throughput case at its fastest batch with
    the CPU's estimated peak."""
    info = benchmarking.parse_cpuinfo(benchmarking.read_cpuinfo())
    peak = benchmarking.cpu_peak_flops(info, fma_units=config.fma_units)
    rows = []
    best: dict[tuple, dict[str, Any]] = {}
    for row in throughput_rows:
        # The comparison rows of the jax.vmap path are a different program.
        if "steps_per_second" not in row or row.get("path") == "vmap":
            continue
        key = (row["vehicle"], row["configuration"], row["controller"])
        if key not in best or row["steps_per_second"] > best[key]["steps_per_second"]:
            best[key] = row
    for (name, configuration, kind), row in best.items():
        setup = vehicle_setup(name, configuration, config.horizon)
        cost = step_cost(setup, kind, row["devices"])
        rate = row["steps_per_second"]
        achieved = cost["flops_per_step"] * rate if cost["flops_per_step"] else None
        traffic = cost["bytes_per_step"] * rate if cost["bytes_per_step"] else None
        device_share = row["devices"] / max(peak["cores"], 1)
        peak_used = peak["peak_flops"] * min(device_share, 1.0)
        rows.append(
            {
                "vehicle": name,
                "configuration": configuration,
                "controller": kind,
                "batch": row["batch"],
                "devices": row["devices"],
                "steps_per_second": rate,
                **cost,
                "achieved_flops": achieved,
                "bytes_per_second": traffic,
                "peak_flops_of_devices": peak_used,
                "fraction_of_peak": achieved / peak_used if achieved and peak_used else None,
            }
        )
    return {"peak": peak, "rows": rows}


# -- output -------------------------------------------------------------------------------------


def _format_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def format_throughput_table(rows: list[dict[str, Any]], anchors: list[dict[str, Any]]) -> str:
    lines = [
        f"{'case':<38} {'batch':>6} {'dev':>3} {'steps/s':>10} {'phys/s':>10} "
        f"{'x CartPole':>10} {'compile s':>9}"
    ]
    for row in rows + anchors:
        if "error" in row:
            lines.append(f"{row['vehicle']:<38} {row['batch']:>6}   {row['error']}")
            continue
        name = row.get("anchor") or f"{row['vehicle']} {row['configuration']} {row['controller']}"
        if row.get("path") == "vmap":
            name += " (vmap)"
        lines.append(
            f"{name:<38} {row['batch']:>6} {row['devices']:>3} "
            f"{_format_rate(row['steps_per_second']):>10} "
            f"{_format_rate(row['physics_steps_per_second']):>10} "
            f"{_format_rate(row.get('ratio_to_cartpole')):>10} {row['compile_seconds']:>9.1f}"
        )
    return "\n".join(lines)


def format_tables(results: dict[str, Any]) -> str:
    """Return every figure of ``results`` as text tables."""
    parts = []
    if "throughput" in results or "anchors" in results:
        anchors = results.get("anchors", {})
        parts.append(
            "Steps per second (control steps x batch / s; phys/s counts physics sub-steps)\n"
            + format_throughput_table(results.get("throughput", []), anchors.get("rows", []))
        )
        for reason in anchors.get("skipped", []):
            parts.append(f"anchor skipped: {reason}")
    if "gradient" in results:
        lines = ["Cost of a gradient (the trainer's loss with the experiment's PID)"]
        lines.append(
            f"{'horizon':>7} {'remat':>5} {'batch':>6} {'grad/loss':>9} {'grad/rollout':>12}"
        )
        for row in results["gradient"]:
            lines.append(
                f"{row['horizon']:>7} {row['remat']:>5} {row['batch']:>6} "
                f"{row['gradient_over_loss']:>9.2f} {row['gradient_over_rollout']:>12.2f}"
            )
        parts.append("\n".join(lines))
    if "memory" in results:
        lines = ["Backward-pass memory (temp_size_in_bytes of the compiled gradient)"]
        lines.append(
            f"{'horizon':>7} {'remat':>6} {'batch':>6} {'temp (MiB)':>10} {'bytes/step':>10}"
        )
        for row in results["memory"]:
            temp = row["temp_size_in_bytes"]
            per_step = row["temp_bytes_per_step"]
            lines.append(
                f"{row['horizon']:>7} {row['remat']:>6} {row['batch']:>6} "
                f"{(temp / 2**20 if temp is not None else math.nan):>10.2f} "
                f"{(per_step if per_step is not None else math.nan):>10.0f}"
            )
        parts.append("\n".join(lines))
    if "compile" in results:
        lines = ["Compile time of the training update"]
        for row in results["compile"]:
            lines.append(
                f"{row['vehicle']:<11} {row['controller']:<12} horizon {row['horizon']:>4}: "
                f"{row['compile_seconds']:.1f} s"
            )
        parts.append("\n".join(lines))
    if "hardware_limit" in results:
        limit = results["hardware_limit"]
        peak = limit["peak"]
        lines = [f"Distance to the CPU peak ({peak['peak_flops']:.3g} FLOP/s estimated; assumed:"]
        lines += [f"  - {text}" for text in peak["assumptions"]]
        lines[-1] += ")"
        for row in limit["rows"]:
            fraction = row["fraction_of_peak"]
            lines.append(
                f"{row['vehicle']:<11} {row['configuration']:<5} {row['controller']:<6} "
                f"{_format_rate(row.get('flops_per_step')):>8} FLOP/step "
                f"({_format_rate(row.get('vmap_flops_per_step'))} as jax.vmap), "
                f"{_format_rate(row['achieved_flops'])} FLOP/s, "
                f"{'-' if fraction is None else f'{fraction:.2%}'} of the peak, "
                f"{_format_rate(row.get('bytes_per_step'))} B/step, "
                f"{_format_rate(row.get('bytes_per_second'))} B/s"
            )
        parts.append("\n".join(lines))
    if "time_to_threshold" in results:
        entry = results["time_to_threshold"]
        lines = ["Time to the held-out success threshold (planar booster)"]
        for name in ("apg", "ppo"):
            record = entry[name]
            lines.append(
                f"{name:<4} {record['seconds']:>9.1f} s {record['env_steps']:>13,d} env steps "
                f"success {record['success_rate']} reached {record['reached']}"
            )
        lines.append(f"PPO / APG wall time: {entry['ppo_over_apg']['text']}")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def plot_throughput(results: dict[str, Any], path: pathlib.Path) -> pathlib.Path | None:
    """Plot steps per second against batch size; None where matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed, so no plot is written")
        return None
    figure, axes = plt.subplots(figsize=(10, 5))
    series: dict[str, list[tuple[int, float]]] = {}
    device_count = results["device_count"]
    for row in results.get("throughput", []) + results.get("anchors", {}).get("rows", []):
        if "steps_per_second" not in row:
            continue
        if row["devices"] != device_count and row["batch"] % device_count == 0:
            continue
        if row.get("path") == "vmap":
            continue
        name = row.get("anchor") or f"{row['vehicle']} {row['configuration']} {row['controller']}"
        series.setdefault(name, []).append((row["batch"], row["steps_per_second"]))
    # Colour: vehicle or anchor. Line: core solid, full dashed, anchors dotted.
    # Marker: circle for a fixed action, square for the MLP.
    colours = {"vertical": "C0", "planar": "C1", "rigid_body": "C2"}
    anchor_colours = iter(("C3", "C4", "C5", "C6"))
    for name, points in series.items():
        vehicle, _, rest = name.partition(" ")
        if vehicle in colours:
            colour = colours[vehicle]
            line = "-" if rest.startswith("core") else "--"
            marker = "s" if rest.endswith("mlp") else "o"
        else:
            colour, line, marker = next(anchor_colours, "k"), ":", "^"
        axes.plot(
            *zip(*sorted(points), strict=True),
            linestyle=line,
            marker=marker,
            color=colour,
            label=name,
        )
    axes.set(
        xscale="log",
        yscale="log",
        xlabel="batch size",
        ylabel="control steps per second",
        title=f"throughput, {device_count} device(s), {results['hardware']['cpu_model']}",
    )
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


# -- driver -------------------------------------------------------------------------------------


def run(config: ThroughputConfig, run_folder: pathlib.Path) -> dict[str, Any]:
    """Measure the requested figures, write ``results.json`` and the plot, return results.

    ``results.json`` is rewritten after each figure and after each batch size of figure 1,
    with ``complete`` false until the last figure is done, so that a run stopped by a
    time limit or a signal keeps what it measured.
    """
    start = time.perf_counter()
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device_count": jax.device_count(),
        "hardware": benchmarking.describe_hardware(),
        "versions": benchmarking.library_versions(),
        "step_definition": (
            "one control step of one lander: steps per second = control steps x batch / "
            "seconds; physics_steps_per_second multiplies by the sub-steps"
        ),
        "timing": (
            f"median of {config.repeats} calls after one untimed call, each ended by "
            "block_until_ready; compilation ahead of time, reported apart"
        ),
    }

    def save(complete: bool) -> None:
        timings = {"total": time.perf_counter() - start}
        entries = dict(results, complete=complete)
        common.write_results(run_folder, EXPERIMENT, dataclasses.asdict(config), timings, **entries)

    # Written before the first measurement, so that a run stopped at any point leaves one.
    save(False)
    _measure_figures(config, results, lambda: save(False))
    if results.get("throughput"):
        plot = plot_throughput(results, run_folder / "plots" / "throughput.png")
        results["plot"] = str(plot) if plot is not None else None
    save(True)
    return results


def _measure_figures(
    config: ThroughputConfig, results: dict[str, Any], save: Callable[[], None]
) -> None:
    """Add each figure of ``config.figures`` to ``results``, calling ``save`` after each
    figure and after each batch size of figure 1."""
    figures = set(config.figures)
    device_count = results["device_count"]

    def save_rows(rows: list[dict[str, Any]]) -> None:
        results["throughput"] = rows
        save()

    if "throughput" in figures:
        results["throughput"] = throughput_figure(config, device_count, save_rows)
    if "anchors" in figures and config.anchors:
        results["anchors"] = anchors_figure(config, device_count)
    elif "anchors" in figures:
        results["anchors"] = {"rows": [], "skipped": ["--no-anchors"]}
    if "throughput" in results and "anchors" in results:
        add_cartpole_ratios(results["throughput"], results["anchors"]["rows"])
        add_cartpole_ratios(results["anchors"]["rows"], results["anchors"]["rows"])
    save()
    if "gradient" in figures:
        results["gradient"] = gradient_figure(config, device_count)
        save()
    if "memory" in figures:
        results["memory"] = memory_figure(config)
        save()
    if "compile" in figures:
        results["compile"] = compile_figure(config)
        save()
    if "hardware_limit" in figures:
        if jax.default_backend() != "cpu":
            results["hardware_limit"] = {"skipped": "the peak estimate is for CPUs only"}
        else:
            rows = results.get("throughput") or throughput_figure(config, device_count)
            results["hardware_limit"] = hardware_limit_figure(config, rows)
        save()
    if "time_to_threshold" in figures:
        from experiments.time_to_threshold import time_to_threshold_figure

        results["time_to_threshold"] = time_to_threshold_figure(config)


def _integers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers"
        ) from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m experiments.{EXPERIMENT}", description=__doc__.split("\n\n")[0]
    )
    common.add_common_arguments(
        parser,
        quick_help="a reduced sweep: batch sizes up to 1,024, one gradient horizon",
        resumable=False,
    )
    parser.add_argument(
        "--figures",
        type=_names,
        default=None,
        help=f"comma-separated figures to run, from {','.join(FIGURES)} (default: all "
        "but time_to_threshold)",
    )
    parser.add_argument(
        "--host-devices",
        type=int,
        default=None,
        help="CPU devices to split batches over (default: the usable cores); set before "
        "JAX starts, so it has no effect when JAX already ran in this process",
    )
    parser.add_argument("--batch-sizes", type=_integers, default=None, help="e.g. 1,64,1024")
    parser.add_argument(
        "--horizon", type=int, default=None, help="control steps per timed scan (default 1000)"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed calls per median, at least 5 (default 5)"
    )
    parser.add_argument("--vehicles", type=_names, default=None, help=f"from {','.join(VEHICLES)}")
    parser.add_argument(
        "--controllers", type=_names, default=None, help=f"from {','.join(CONTROLLERS)}"
    )
    parser.add_argument(
        "--no-anchors",
        action="store_true",
        help="skip the gymnax and brax anchors (for a machine without them)",
    )
    parser.add_argument(
        "--until-oom",
        action="store_true",
        help="end each case's batch sweep at its first out-of-memory error",
    )
    parser.add_argument(
        "--max-call-seconds",
        type=float,
        default=None,
        help="end each case's batch sweep after the first batch whose median call takes "
        "longer than this, s",
    )
    parser.add_argument(
        "--ppo-cap-minutes",
        type=float,
        default=None,
        help="wall-time cap of PPO in time_to_threshold, minutes (default 60)",
    )
    parser.add_argument(
        "--fma-units",
        type=int,
        default=None,
        help="FMA units per core assumed for the CPU peak (default 2)",
    )
    common.add_override_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    common.configure_logging(args.log_level)
    if args.resume:
        parser.error("--resume is not supported: the benchmark trains nothing to continue.")
    host_devices = args.host_devices if args.host_devices is not None else default_host_devices()
    if host_devices < 1:
        parser.error(f"--host-devices {host_devices} is invalid: pass an integer >= 1.")
    changes: dict[str, Any] = {"host_devices": host_devices}
    options = {
        "figures": args.figures,
        "batch_sizes": args.batch_sizes,
        "horizon": args.horizon,
        "repeats": args.repeats,
        "vehicles": args.vehicles,
        "controllers": args.controllers,
        "fma_units": args.fma_units,
        "max_call_seconds": args.max_call_seconds,
    }
    changes.update({name: value for name, value in options.items() if value is not None})
    if args.no_anchors:
        changes["anchors"] = False
    if args.until_oom:
        changes["until_oom"] = True
    if args.ppo_cap_minutes is not None:
        changes["ppo_cap_seconds"] = 60.0 * args.ppo_cap_minutes
    try:
        config = ThroughputConfig.create(args.quick, **changes)
        config = common.apply_overrides(config, args.set)
        config.validate()
        # The plot creates plots/ when it is written. The benchmark writes no other
        # subfolder.
        run_folder = common.prepare_run_folder(
            args.out, False, EXPERIMENT, subfolders=(), resumable=False
        )
        common.save_config(run_folder, config, False)
    except (ValueError, common.RunFolderError) as error:
        parser.error(str(error))
    configure_host_devices(config.host_devices)
    folder_contents = 'results.json with the figures measured so far, marked "complete": false'
    results, status = common.run_unresumable(
        lambda: run(config, run_folder), run_folder, folder_contents
    )
    if results is None:
        return status
    print()
    print(format_tables(results))
    print(f"\nrun folder: {run_folder}")
    return 0


if __name__ == "__main__":
    common.run_entry_point(main)
