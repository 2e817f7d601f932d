"""Tiny training runs shared by the subprocess tests of data parallelism and faults.

The tests import :func:`make_trainer` so that a run in the test process trains exactly
like one in a subprocess. As a script::

    python tests/training_scenarios.py train FOLDER [--resume] [--pause-at STEP]
        [--reference OTHER]
    python tests/training_scenarios.py devices FOLDER
    python tests/training_scenarios.py distributed FOLDER --coordinator HOST:PORT
        --process-id I --num-processes N --local-devices D

``train`` trains into ``FOLDER/checkpoints`` and writes the final state to
``FOLDER/final.npz``. With ``--pause-at`` it writes ``FOLDER/paused`` while step STEP is
logged and waits there until ``FOLDER/release`` exists, so a test can signal or kill it
at a known step. A stop by SIGINT or SIGTERM exits with status 128 plus the signal
number. ``--reference OTHER`` then trains the same task again without checkpoints or
interruptions and writes ``OTHER/final.npz``.

``devices`` compares data-parallel training on every device with one-device training,
restores the checkpoint written on every device on two of them, scores the trained
controller with ``rollout_outcomes`` on every device and on one, and builds a trainer
whose batch of 6 does not split over the devices. It writes the parameters, device
counts and that error message to ``FOLDER/devices.npz`` for the tests to check.

``distributed`` is one process of a multi-process job on the CPU: it asks for D CPU
devices, calls ``jax.distributed.initialize`` with the coordinator address, then trains
on the global mesh of all processes' devices with checkpoints in ``FOLDER/checkpoints``
and restores the newest one. It writes the process and device counts, the final state
and the restored parameters to ``FOLDER/process<I>.npz``.
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import signal
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from diffland.controllers import MLPPolicy
from diffland.dynamics import SimConfig, VerticalLander, falcon9_like, make_vertical_state
from diffland.training import (
    LandingTask,
    TrainConfig,
    Trainer,
    TrainingInterrupted,
    rollout_outcomes,
)

VEHICLE = VerticalLander()
STEPS = 8
CHECKPOINT_EVERY = 2


def subprocess_environment(cache_dir: pathlib.Path, devices: int | None = None) -> dict:
    """Return the environment for running this script from a test.

    The runs share a persistent compilation cache, so only the first one of each device
    count compiles the update. ``devices`` forces that many CPU devices.
    """
    env = dict(os.environ)
    env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    if devices is not None:
        flag = f"--xla_force_host_platform_device_count={devices}"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
        env["JAX_PLATFORMS"] = "cpu"
    return env


def start_pool(count=16, seed=0):
    rng = np.random.default_rng(seed)
    return make_vertical_state(
        rng.uniform(1500.0, 3000.0, count),
        -rng.uniform(200.0, 300.0, count),
        25_600.0 + rng.uniform(4000.0, 9000.0, count),
        dtype=jnp.float32,
    )


def make_trainer(checkpoint_dir=None, callbacks=(), eval_states=None, **overrides):
    """Return an MLP trainer on a 6 s landing-burn task (8 updates of 8 landers)."""
    settings = dict(
        steps=STEPS,
        batch_size=8,
        learning_rate=0.02,
        warmup_steps=1,
        seed=5,
        checkpoint_every=CHECKPOINT_EVERY,
        eval_every=100,
        checks=False,
    )
    settings.update(overrides)
    task = LandingTask(VEHICLE, falcon9_like(), SimConfig(control_dt=0.1, substeps=1, horizon=60))
    return Trainer(
        task,
        MLPPolicy(VEHICLE, hidden=(8,)),
        TrainConfig(**settings),
        start_pool(),
        eval_states=eval_states,
        checkpoint_dir=checkpoint_dir,
        callbacks=callbacks,
    )


def flat_params(params) -> dict[str, np.ndarray]:
    """Return the parameter leaves as host arrays keyed by their tree path."""
    return {
        jax.tree_util.keystr(path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    }


def entries_under(arrays, prefix: str) -> dict:
    """Return the entries of ``arrays`` stored as ``prefix/<name>``, keyed by name."""
    start = f"{prefix}/"
    return {name[len(start) :]: value for name, value in arrays.items() if name.startswith(start)}


def flat_state(state) -> dict[str, np.ndarray]:
    """Return the parameters, optimiser state and key of a TrainState as host arrays."""
    arrays = {"step": np.asarray(state.step), "key": np.asarray(state.key)}
    for part in ("params", "opt_state"):
        for path, leaf in jax.tree_util.tree_leaves_with_path(getattr(state, part)):
            arrays[f"{part}{jax.tree_util.keystr(path)}"] = np.asarray(leaf)
    return arrays


def pause_at(step: int, folder: pathlib.Path):
    """Return a callback that waits inside step ``step`` until ``folder/release`` exists."""

    def callback(current, metrics):
        if current != step:
            return
        (folder / "paused").write_text(str(step))
        while not (folder / "release").exists():
            time.sleep(0.02)

    return callback


def run_train(
    folder: pathlib.Path, resume: bool, pause_step: int | None, reference: pathlib.Path | None
) -> int:
    callbacks = [pause_at(pause_step, folder)] if pause_step is not None else []
    trainer = make_trainer(folder / "checkpoints", callbacks)
    try:
        result = trainer.train(resume=resume)
    except TrainingInterrupted as interrupt:
        return interrupt.exit_status
    resumed_from = -1 if result.resumed_from is None else result.resumed_from
    np.savez(folder / "final.npz", resumed_from=resumed_from, **flat_state(result.state))
    if reference is not None:
        reference.mkdir(parents=True, exist_ok=True)
        np.savez(reference / "final.npz", **flat_state(make_trainer().train().state))
    return 0


def run_devices(folder: pathlib.Path) -> int:
    """Train on every device and on one, then restore the first run's checkpoint on two."""
    parallel = make_trainer(folder / "checkpoints")
    parallel_result = parallel.train()
    single = make_trainer(num_devices=1).train()
    restored_on_two = make_trainer(folder / "checkpoints", num_devices=2).restore()

    arrays = {}
    for prefix, params in (
        ("parallel", parallel_result.state.params),
        ("single", single.state.params),
        ("restored_on_two", restored_on_two.params),
    ):
        for name, value in flat_params(params).items():
            arrays[f"{prefix}/{name}"] = value
    leaf = jax.tree_util.tree_leaves(restored_on_two.params)[0]
    arrays["device_count"] = np.asarray(parallel.parallel.device_count)
    arrays["restored_step"] = np.asarray(restored_on_two.step)
    arrays["restored_devices"] = np.asarray(len(leaf.sharding.device_set))
    arrays["parallel_param_devices"] = np.asarray(
        len(jax.tree_util.tree_leaves(parallel_result.state.params)[0].sharding.device_set)
    )
    for devices in (None, 1):
        _, outcome = rollout_outcomes(
            parallel.task,
            parallel.controller,
            {"params": parallel_result.state.params},
            start_pool(),
            num_devices=devices,
        )
        label = "all" if devices is None else devices
        arrays[f"outcome_on_{label}/propellant"] = np.asarray(outcome.propellant_used)
        arrays[f"outcome_on_{label}/devices"] = np.asarray(
            len(outcome.propellant_used.sharding.device_set)
        )
    try:
        make_trainer(batch_size=6)
    except ValueError as error:
        arrays["indivisible_batch_error"] = np.asarray(str(error))
    # A compiled update that sums gradients across devices shows that the batch is split.
    arrays["update_all_reduces"] = np.asarray(parallel._update.as_text().count("all-reduce"))
    np.savez(folder / "devices.npz", **arrays)
    return 0


def distributed_settings() -> dict:
    """Return the ``distributed`` run's settings beyond :func:`make_trainer`'s.

    8 validation states scored every 4 updates, split over the devices of every process.
    A function, not a constant, because building the states starts JAX's backend, which
    must happen after ``jax.distributed.initialize``.
    """
    return {"eval_states": start_pool(8, seed=1), "eval_every": 4}


def run_distributed(
    folder: pathlib.Path, coordinator: str, process_id: int, num_processes: int, devices: int
) -> int:
    """Train as process ``process_id`` of a ``num_processes``-process job on the CPU."""
    # Both settings must be made before the CPU backend starts. jax 0.10.2 uses gloo for
    # cross-process CPU collectives by default, and it is set here so the test does not
    # depend on that default.
    jax.config.update("jax_num_cpu_devices", devices)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
    trainer = make_trainer(folder / "checkpoints", **distributed_settings())
    result = trainer.train()
    restored = make_trainer(folder / "checkpoints", **distributed_settings()).restore()
    _, outcome = rollout_outcomes(
        trainer.task, trainer.controller, {"params": result.state.params}, start_pool()
    )

    arrays = {f"final/{name}": value for name, value in flat_state(result.state).items()}
    for name, value in flat_params(result.state.best_params).items():
        arrays[f"best/{name}"] = value
    for name, value in flat_params(restored.params).items():
        arrays[f"restored/{name}"] = value
    arrays["best_step"] = np.asarray(result.state.best_step)
    arrays["outcome/propellant"] = np.asarray(outcome.propellant_used)
    arrays["restored_step"] = np.asarray(restored.step)
    arrays["process_count"] = np.asarray(jax.process_count())
    arrays["process_index"] = np.asarray(jax.process_index())
    arrays["local_device_count"] = np.asarray(jax.local_device_count())
    arrays["mesh_device_count"] = np.asarray(trainer.parallel.device_count)
    leaf = jax.tree_util.tree_leaves(result.state.params)[0]
    arrays["param_devices"] = np.asarray(len(leaf.sharding.device_set))
    arrays["update_all_reduces"] = np.asarray(trainer._update.as_text().count("all-reduce"))
    np.savez(folder / f"process{process_id}.npz", **arrays)
    jax.distributed.shutdown()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=("train", "devices", "distributed"))
    parser.add_argument("folder", type=pathlib.Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--pause-at", type=int, default=None)
    parser.add_argument("--reference", type=pathlib.Path, default=None)
    parser.add_argument("--coordinator", default=None)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--local-devices", type=int, default=1)
    args = parser.parse_args(argv)
    # force=True: importing orbax already installs a root handler.
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True
    )
    args.folder.mkdir(parents=True, exist_ok=True)
    # As in an interactive shell: a test's background process may have SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.scenario == "train":
        return run_train(args.folder, args.resume, args.pause_at, args.reference)
    if args.scenario == "distributed":
        return run_distributed(
            args.folder, args.coordinator, args.process_id, args.num_processes, args.local_devices
        )
    return run_devices(args.folder)


if __name__ == "__main__":
    sys.exit(main())
