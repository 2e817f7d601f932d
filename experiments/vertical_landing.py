"""Train PID, NeuroPID and MLP landing controllers for a Falcon-9-like booster by
analytic policy gradients (backpropagation through the simulated landing).

The scenario starts at ignition of the landing burn: the engine is lit at t = 0 and
stays lit within its throttle bounds (40-100 %) until touchdown. Start states are drawn
uniformly (altitude 1.5-3 km, descent 200-300 m/s, 3-9 t of propellant). A state is kept
only where the fuel-optimal burn, computed on the same dynamics, switches to full thrust
at least 1 s after ignition and needs at most 1/1.2 of the propellant on board.

Three controllers train by backpropagation through the rollout: the PID's gains, then the
NeuroPID (starting from the tuned gains) and the MLP. Each keeps the parameters that
scored best on a validation set during training. They are compared on a held-out set of
4,096 start states (its own fixed seed) with the hand-tuned PID and with the
fuel-optimal burn from each start state.

Run ``python -m experiments.vertical_landing [--quick] [--seeds N] [--out DIR] [--resume]
[--set KEY=VALUE ...]``; ``--set`` changes any field of the config (``mlp.steps=300``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import pathlib
import time
from typing import Any

import jax
import numpy as np

from diffland.controllers import MLPPolicy, NeuroPID, VerticalPID
from diffland.dynamics import SimConfig, VerticalLander, falcon9_like
from diffland.scenarios import LandingBurnScenario, sample_landing_burn_states
from diffland.training import (
    JsonlWriter,
    LandingTask,
    ProgressBar,
    TensorBoardWriter,
    TrainConfig,
    Trainer,
    TrainResult,
    init_controller,
)
from diffland.training.callbacks import MetricsHistory
from diffland.training.evaluation import rollout_outcomes, summarize_outcomes
from diffland.viz.plots import plot_training_curves, plot_vertical_landings
from experiments import common

EXPERIMENT = "vertical_landing"
HELD_OUT_SEED = 20_261_204
"""Seed of the held-out start states; fixed so every run is scored on the same set."""

logger = logging.getLogger(EXPERIMENT)


@dataclasses.dataclass(frozen=True)
class ControllerSetting:
    """Training settings of one controller."""

    steps: int
    learning_rate: float
    batch_size: int = 256


@dataclasses.dataclass(frozen=True)
class VerticalLandingConfig:
    """All settings of the experiment; saved as ``config.json`` in the run folder."""

    quick: bool = False
    seeds: int = 1
    control_dt: float = 0.05
    """Controller period and RK4 physics step, s."""
    horizon_seconds: float = 25.0
    """Simulated time per rollout, s; a lander still flying then counts as no touchdown."""
    train_pool: int = 16_384
    """Feasible start states drawn per seed for training."""
    validation_states: int = 512
    """Start states, separate from training, scored during training."""
    held_out_states: int = 4096
    sampling_chunk: int = 8192
    """Candidate start states drawn per batch while filtering for feasible ones."""
    pid: ControllerSetting = ControllerSetting(steps=400, learning_rate=3e-3)
    neuro_pid: ControllerSetting = ControllerSetting(steps=500, learning_rate=1e-3)
    mlp: ControllerSetting = ControllerSetting(steps=1000, learning_rate=3e-3)
    num_devices: int | None = None
    """Number of devices that each training batch and the held-out rollouts are split
    over. None uses every local device when the batch size divides by their count, else one."""
    remat: str = "none"
    """Rematerialisation of the training rollouts' backward pass, passed to
    :attr:`~diffland.dynamics.SimConfig.remat`: "none", "step" or "nested". "step" and
    "nested" need less memory per training update and recompute more, and the gradients
    agree to rounding."""

    @classmethod
    def create(cls, quick: bool, seeds: int) -> VerticalLandingConfig:
        if seeds < 1:
            raise ValueError(f"--seeds {seeds} is invalid: pass an integer >= 1.")
        if not quick:
            return cls(quick=False, seeds=seeds)
        return cls(
            quick=True,
            seeds=seeds,
            train_pool=4096,
            pid=ControllerSetting(steps=200, learning_rate=3e-3),
            neuro_pid=ControllerSetting(steps=80, learning_rate=1e-3),
            mlp=ControllerSetting(steps=150, learning_rate=3e-3),
        )

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid setting (before anything compiles)."""
        for name in ("train_pool", "validation_states", "held_out_states", "sampling_chunk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} = {value!r} is invalid: pass an integer >= 1.")
        common.check_rollout_time(self.control_dt, self.horizon_seconds)
        common.check_remat(self.remat)
        check_settings(self, ("pid", "neuro_pid", "mlp"))


def sample_training_sets(
    seed: int, config: VerticalLandingConfig, task: LandingTask
) -> tuple[Any, Any]:
    """Draw this seed's training pool and validation states (disjoint streams)."""
    key = jax.random.PRNGKey(seed)
    sets = []
    for stream, count in ((0, config.train_pool), (1, config.validation_states)):
        states, _ = sample_landing_burn_states(
            jax.random.fold_in(key, stream),
            count,
            task.vehicle,
            task.params,
            LandingBurnScenario(),
            chunk=config.sampling_chunk,
        )
        sets.append(states)
    return sets[0], sets[1]


def trainer_config(
    setting: ControllerSetting, seed: int, num_devices: int | None = None
) -> TrainConfig:
    """Return the trainer settings of one controller and seed.

    ``num_devices`` None picks the device count with :func:`common.resolve_num_devices`.
    """
    return TrainConfig(
        steps=setting.steps,
        batch_size=setting.batch_size,
        learning_rate=setting.learning_rate,
        seed=seed,
        eval_every=50,
        checkpoint_every=100,
        num_devices=common.resolve_num_devices(num_devices, setting.batch_size),
    )


def check_settings(config: Any, names: tuple[str, ...]) -> None:
    """Raise ``ValueError`` when a controller setting in ``names`` of ``config`` is invalid,
    or when ``config.num_devices`` does not split every one of their batches."""
    for name in names:
        try:
            trainer_config(getattr(config, name), seed=0, num_devices=1)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
    batch_sizes = {f"{name}.batch_size": getattr(config, name).batch_size for name in names}
    common.check_num_devices(config.num_devices, batch_sizes)


def train_controller(
    name: str,
    controller: Any,
    setting: ControllerSetting,
    seed: int,
    task: LandingTask,
    training_sets: tuple[Any, Any],
    run_folder: pathlib.Path,
    resume: bool,
    initial_params: Any | None = None,
    num_devices: int | None = None,
) -> tuple[TrainResult, MetricsHistory]:
    """Train one controller with checkpoints, metrics files and a progress bar.

    ``initial_params`` replaces the controller's own initial parameters (a resumed run
    continues from its checkpoint instead). Each batch is split over ``num_devices``
    devices (None: see :func:`trainer_config`).
    """
    train_config = trainer_config(setting, seed, num_devices)
    history = MetricsHistory()
    board = TensorBoardWriter(run_folder / "tensorboard" / f"seed{seed}" / name)
    bar = ProgressBar(setting.steps, description=f"{name} (seed {seed})")
    pool, validation = training_sets
    trainer = Trainer(
        task,
        controller,
        train_config,
        pool,
        validation,
        checkpoint_dir=run_folder / "checkpoints" / f"seed{seed}" / name,
        callbacks=[
            JsonlWriter(run_folder / "metrics.jsonl", {"controller": name, "seed": seed}),
            board,
            history,
            bar,
        ],
        initial_params=initial_params,
    )
    try:
        result = trainer.train(resume=resume)
    finally:
        bar.close()
        board.close()
    if resume:
        # The whole curve, including steps logged before the resume.
        history = MetricsHistory.from_jsonl(
            run_folder / "metrics.jsonl", controller=name, seed=seed
        )
    return result, history


def run_seed(
    seed: int,
    config: VerticalLandingConfig,
    task: LandingTask,
    held_out: Any,
    held_out_optimum: Any,
    run_folder: pathlib.Path,
    resume: bool,
) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Train the three controllers for one seed and score all five on the held-out set."""
    training_sets = sample_training_sets(seed, config, task)
    settings = {"pid_tuned": config.pid, "neuro_pid": config.neuro_pid, "mlp": config.mlp}
    timings = {"compile": 0.0, "train": 0.0, "eval": 0.0}
    results: dict[str, dict[str, Any]] = {}
    histories: dict[str, MetricsHistory] = {}
    trajectories = {}

    def score(name, controller, variables, train_seconds, compile_seconds):
        start = time.perf_counter()
        trajectories[name], outcome = rollout_outcomes(
            task, controller, variables, held_out, num_devices=config.num_devices
        )
        timings["eval"] += time.perf_counter() - start
        results[name] = summarize_outcomes(outcome, held_out_optimum.propellant)
        results[name].update(train_seconds=train_seconds, compile_seconds=compile_seconds)

    hand = VerticalPID(task.vehicle, config.control_dt)
    example = jax.tree_util.tree_map(lambda x: x[0], held_out)
    score("pid_hand", hand, init_controller(task, hand, jax.random.PRNGKey(0), example), 0.0, 0.0)

    # The NeuroPID starts from the gradient-tuned gains, so its network learns a
    # correction to a PID that already lands. It is built once the PID has trained.
    pid = VerticalPID(task.vehicle, config.control_dt)
    builders = {
        "pid_tuned": lambda: pid,
        "neuro_pid": lambda: NeuroPID(task.vehicle, config.control_dt, gains=tuned_gains),
        "mlp": lambda: MLPPolicy(task.vehicle),
    }
    for name, build in builders.items():
        controller = build()
        result, histories[name] = train_controller(
            name,
            controller,
            settings[name],
            seed,
            task,
            training_sets,
            run_folder,
            resume,
            num_devices=config.num_devices,
        )
        train_seconds, compile_seconds = common.controller_timings(run_folder, name, seed, result)
        timings["compile"] += compile_seconds
        timings["train"] += train_seconds
        variables = {"params": result.selected_params}
        score(name, controller, variables, train_seconds, compile_seconds)
        results[name]["selected_step"] = result.selected_step
        if name == "pid_tuned":
            tuned_gains = pid.gains_from_params(result.selected_params)
            results[name]["gains"] = dataclasses.asdict(tuned_gains)

    results["fuel_optimal"] = fuel_optimal_entry(held_out_optimum)
    plots = run_folder / "plots"
    plot_vertical_landings(trajectories, config.control_dt, plots / f"landings_seed{seed}.png")
    plot_training_curves(histories, plots / f"training_seed{seed}.png")
    return results, timings


def fuel_optimal_entry(optimum: Any) -> dict[str, Any]:
    """Results-file entry of the fuel-optimal burn: it stops exactly at the ground."""
    feasible = np.asarray(optimum.feasible)
    return {
        "n_eval": int(feasible.size),
        "success_rate": float(feasible.mean()),
        "no_touchdown_rate": 0.0,
        "touchdown_speed_mean": 0.0,
        "touchdown_speed_max": 0.0,
        "propellant_mean": float(np.asarray(optimum.propellant)[feasible].mean()),
        "propellant_ratio_to_optimal": 1.0,
        "train_seconds": 0.0,
        "compile_seconds": 0.0,
    }


def build_task(config: VerticalLandingConfig) -> LandingTask:
    """Return the landing task of the experiment: vehicle, parameters and rollout settings."""
    horizon = int(round(config.horizon_seconds / config.control_dt))
    return LandingTask(
        VerticalLander(),
        falcon9_like(),
        SimConfig(control_dt=config.control_dt, substeps=1, horizon=horizon, remat=config.remat),
    )


def draw_held_out(config: VerticalLandingConfig, task: LandingTask) -> tuple[Any, Any]:
    """Draw the held-out start states and their fuel-optimal burns from the fixed seed."""
    return sample_landing_burn_states(
        jax.random.PRNGKey(HELD_OUT_SEED),
        config.held_out_states,
        task.vehicle,
        task.params,
        LandingBurnScenario(),
        chunk=config.sampling_chunk,
    )


def load_run(run_folder: pathlib.Path) -> common.LoadedRun:
    """Rebuild a finished run's held-out set and controllers from its config and checkpoints."""
    run_folder = pathlib.Path(run_folder)
    config = common.read_run_config(run_folder, VerticalLandingConfig)
    task = build_task(config)
    held_out, optimum = draw_held_out(config, task)
    example = jax.tree_util.tree_map(lambda x: x[:1], held_out)
    settings = {"pid_tuned": config.pid, "neuro_pid": config.neuro_pid, "mlp": config.mlp}
    per_seed = []
    for seed in range(config.seeds):
        checkpoints = run_folder / "checkpoints" / f"seed{seed}"
        hand = VerticalPID(task.vehicle, config.control_dt)
        first = jax.tree_util.tree_map(lambda x: x[0], held_out)
        controllers = {
            "pid_hand": (hand, init_controller(task, hand, jax.random.PRNGKey(0), first))
        }
        pid = VerticalPID(task.vehicle, config.control_dt)
        for name in ("pid_tuned", "neuro_pid", "mlp"):
            if name == "pid_tuned":
                controller = pid
            elif name == "neuro_pid":
                gains = pid.gains_from_params(controllers["pid_tuned"][1]["params"])
                controller = NeuroPID(task.vehicle, config.control_dt, gains=gains)
            else:
                controller = MLPPolicy(task.vehicle)
            params = common.restore_selected_params(
                task, controller, trainer_config(settings[name], seed), checkpoints / name, example
            )
            controllers[name] = (controller, {"params": params})
        per_seed.append(controllers)
    return common.LoadedRun(
        experiment=EXPERIMENT,
        config=config,
        task=task,
        held_out=held_out,
        controllers=per_seed,
        optimal_propellant=optimum.propellant,
        fixed_entries={"fuel_optimal": fuel_optimal_entry(optimum)},
    )


def run(config: VerticalLandingConfig, run_folder: pathlib.Path, resume: bool) -> dict:
    """Run every seed, write ``results.json`` and plots, and return the results."""
    total_start = time.perf_counter()
    task = build_task(config)
    start = time.perf_counter()
    held_out, held_out_optimum = draw_held_out(config, task)
    sampling_seconds = time.perf_counter() - start
    logger.info(
        "drew %d held-out start states and their fuel-optimal burns in %.1f s",
        config.held_out_states,
        sampling_seconds,
    )

    per_seed: dict[str, list[dict[str, Any]]] = {}
    timings = {"compile": 0.0, "train": 0.0, "eval": sampling_seconds}
    for seed in range(config.seeds):
        results, seed_timings = run_seed(
            seed, config, task, held_out, held_out_optimum, run_folder, resume
        )
        for name, entry in results.items():
            per_seed.setdefault(name, []).append(entry)
        for key, value in seed_timings.items():
            timings[key] += value
    controllers = {name: common.combine_seeds(entries) for name, entries in per_seed.items()}
    timings["total"] = time.perf_counter() - total_start
    common.write_results(run_folder, EXPERIMENT, dataclasses.asdict(config), timings, controllers)
    return {"controllers": controllers, "timings": timings}


def build_parser() -> argparse.ArgumentParser:
    return common.experiment_parser(EXPERIMENT, __doc__.split("\n\n")[0])


def resume_command(args: argparse.Namespace, run_folder: pathlib.Path) -> str:
    """Return the command line that continues this run."""
    return common.resume_command(EXPERIMENT, args, run_folder)


def print_summary(results: dict, run_folder: pathlib.Path) -> None:
    """Print the results table, the timings and the run folder."""
    print()
    print(common.format_table(results["controllers"]))
    timings = results["timings"]
    print(
        f"\ntimings (s): compile {timings['compile']:.1f}, train {timings['train']:.1f}, "
        f"eval {timings['eval']:.1f}, total {timings['total']:.1f}"
    )
    print(f"run folder: {run_folder}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    common.configure_logging(args.log_level)
    config, run_folder = common.prepare_run(parser, args, VerticalLandingConfig, EXPERIMENT)

    results, status = common.run_stoppable(
        lambda: run(config, run_folder, args.resume),
        run_folder,
        lambda: resume_command(args, run_folder),
    )
    if results is None:
        return status

    print_summary(results, run_folder)
    return 0


if __name__ == "__main__":
    common.run_entry_point(main)
