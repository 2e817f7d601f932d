"""The driver shared by the planar and 6-DOF booster landing experiments.

Each experiment names its vehicle, parameters and scenario in a :class:`BoosterSpec`;
everything else (sampling, training, scoring, results file, plots, command line) is here.
Three controllers are trained in turn by backpropagation through the rollout: the gains
of the cascaded PID, then the MLP, then the NeuroPID (the cascaded PID with the tuned
gains plus a network correction). The MLP starts from a behaviour-cloning fit to the
tuned cascaded PID. From a random start its rollouts crash every booster, and in a
measured full run (300 updates at learning rate 3e-3, 25 s horizon) it landed none of
the 4,096 held-out boosters on either vehicle. The NeuroPID's correction starts from a
fit to the trained MLP, with the PID gains held at their tuned values, optionally
followed by rounds of dataset aggregation on its own rollouts. Trained from a zero
correction instead, it levelled off at 95-97 % success on the held-out set. All
are scored on a held-out set with its own fixed seed, together with the untrained,
hand-tuned cascaded PID.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from diffland.controllers import MLPPolicy
from diffland.controllers.cascaded import CascadedPID, NeuroCascadedPID
from diffland.dynamics import SimConfig, TouchdownMeasures, Vehicle
from diffland.randomization import SensorModel
from diffland.scenarios import BoosterLandingScenario, sample_booster_states
from diffland.training import LandingCost, LandingTask, init_controller
from diffland.training.callbacks import MetricsHistory
from diffland.training.checkpoint import CheckpointStore
from diffland.training.evaluation import rollout_outcomes, summarize_outcomes
from diffland.training.imitation import (
    ImitationConfig,
    fit_to_teacher,
    join_pairs,
    student_pairs,
    teacher_pairs,
)
from diffland.viz.plots import plot_booster_landings, plot_training_curves
from experiments import common
from experiments.vertical_landing import (
    ControllerSetting,
    check_settings,
    train_controller,
    trainer_config,
)

HELD_OUT_SEED = 20_261_205
"""Seed of the held-out start states; fixed so every run is scored on the same set."""


@dataclasses.dataclass(frozen=True)
class BoosterSpec:
    """The vehicle, parameters and scenario of one booster experiment."""

    experiment: str
    """Module name under ``experiments``, also the results file's ``experiment``."""
    vehicle: Vehicle
    params: Callable[[], Any]
    """Returns the vehicle parameters (a function, so nothing is built at import)."""
    scenario: BoosterLandingScenario
    sample: Callable[[jax.Array, int, Any, int], Any] | None = None
    """Draws the batches of training, validation and held-out starts as
    ``sample(key, count, params, chunk)``, for example episodes with randomised
    parameters. None: :func:`~diffland.scenarios.sample_booster_states` with ``scenario``."""
    sensor: SensorModel | None = None
    """Sensor noise and latency of the task (needs ``sample`` to return episodes)."""
    neuro_pid_options: tuple[tuple[str, Any], ...] = ()
    """Keyword arguments of :class:`NeuroCascadedPID` beyond the vehicle, period, gains
    and ``action_features`` (set by the config), such as ``(("adaptive", True),)``."""

    def task(self, config: BoosterLandingConfig) -> LandingTask:
        """Return the landing task of a run with ``config``."""
        return LandingTask(
            self.vehicle, self.params(), config.sim(), config.cost(), sensor=self.sensor
        )


@dataclasses.dataclass(frozen=True)
class BoosterLandingConfig:
    """All settings of a booster experiment; saved as ``config.json`` in the run folder.

    The touchdown limits define success; their defaults are those of
    :class:`~diffland.training.cost.LandingCost`.
    """

    quick: bool = False
    seeds: int = 1
    control_dt: float = 0.1
    """Controller period, s."""
    substeps: int = 2
    """RK4 physics steps per control step."""
    horizon_seconds: float = 28.0
    """Simulated time per rollout, s; a lander still flying then counts as no touchdown.
    The slowest held-out landings of the hand-tuned cascaded PID took 24.9 s."""
    train_pool: int = 16_384
    validation_states: int = 512
    held_out_states: int = 4096
    sampling_chunk: int = 8192
    speed_limit: float = 2.0
    """Largest vertical touchdown speed of a success, m/s."""
    lateral_speed_limit: float = 1.0
    """Largest horizontal touchdown speed, m/s."""
    tilt_limit_deg: float = 5.0
    """Largest tilt from the vertical at touchdown, degrees."""
    angular_rate_limit: float = 0.1
    """Largest angular speed at touchdown, rad/s."""
    pad_radius: float = 10.0
    """Largest distance from the pad centre at touchdown, m."""
    pid: ControllerSetting = ControllerSetting(steps=60, learning_rate=1e-2)
    neuro_pid: ControllerSetting = ControllerSetting(steps=150, learning_rate=1e-3)
    mlp: ControllerSetting = ControllerSetting(steps=300, learning_rate=1e-3)
    imitation: ImitationConfig = ImitationConfig(steps=8000, batch_size=4096, learning_rate=3e-3)
    """Behaviour-cloning fit before APG training: of the MLP to the tuned cascaded PID,
    then of the NeuroPID's correction to the trained MLP."""
    neuro_pid_action_features: bool = False
    """Feed the NeuroPID's network the PID's bounded action as well as the observation
    (:attr:`~diffland.controllers.cascaded.NeuroCascadedPID.action_features`)."""
    dagger_rounds: int = 0
    """Rounds of dataset aggregation after a fit to a memoryless teacher (the MLP): each
    round rolls out the fitted student, labels its states with the teacher's actions, adds
    them to the pairs and fits again from the fitted parameters."""
    imitation_states: int = 2048
    """Number of training-pool start states (the first ones, at most ``train_pool``) whose
    teachers' rollouts give each fit's state-action pairs. The fit's seed is
    ``imitation.seed`` plus the run's seed."""
    num_devices: int | None = None
    """Number of devices that each training batch and the held-out rollouts are split
    over. None uses every local device when the batch size divides by their count, else one."""
    remat: str = "none"
    """Rematerialisation of the training rollouts' backward pass, passed to
    :attr:`~diffland.dynamics.SimConfig.remat`: "none", "step" or "nested". "step" and
    "nested" need less memory per training update and recompute more, and the gradients
    agree to rounding."""

    def cost(self) -> LandingCost:
        """Return the landing cost with this run's touchdown limits."""
        return LandingCost(
            speed_limit=self.speed_limit,
            lateral_speed_limit=self.lateral_speed_limit,
            tilt_limit_deg=self.tilt_limit_deg,
            angular_rate_limit=self.angular_rate_limit,
            pad_radius=self.pad_radius,
        )

    def sim(self) -> SimConfig:
        horizon = int(round(self.horizon_seconds / self.control_dt))
        return SimConfig(
            control_dt=self.control_dt, substeps=self.substeps, horizon=horizon, remat=self.remat
        )

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid setting (before anything compiles)."""
        common.check_integers(
            self,
            (
                "substeps",
                "train_pool",
                "validation_states",
                "held_out_states",
                "sampling_chunk",
                "imitation_states",
            ),
        )
        common.check_integers(self, ("dagger_rounds",), minimum=0)
        common.check_rollout_time(self.control_dt, self.horizon_seconds)
        common.check_remat(self.remat)
        check_settings(self, ("pid", "neuro_pid", "mlp"))
        self.cost()  # raises ValueError for an invalid touchdown limit
        self.sim()  # raises ValueError for any other invalid rollout setting


LIMIT_OPTIONS = {
    "speed_limit": "largest vertical touchdown speed of a success, m/s (default 2)",
    "lateral_speed_limit": "largest horizontal touchdown speed, m/s (default 1)",
    "tilt_limit_deg": "largest tilt from the vertical at touchdown, degrees (default 5)",
    "angular_rate_limit": "largest angular speed at touchdown, rad/s (default 0.1)",
    "pad_radius": "largest distance from the pad centre at touchdown, m (default 10)",
}


def create_config(
    base: BoosterLandingConfig,
    quick: bool,
    seeds: int,
    quick_overrides: dict,
    overrides: tuple[str, ...] | list[str] = (),
    num_devices: int | None = None,
    **limits: float,
) -> BoosterLandingConfig:
    """Return ``base`` with the command-line choices applied; validates them.

    ``overrides`` are ``--set KEY=VALUE`` assignments, applied after the ``--quick``
    changes and ``num_devices`` (``--num-devices``; None keeps ``base``'s).
    """
    if seeds < 1:
        raise ValueError(f"--seeds {seeds} is invalid: pass an integer >= 1.")
    for name, value in limits.items():
        try:
            LandingCost(**{name: value})
        except ValueError as error:
            option = "--" + name.replace("_", "-")
            reason = str(error).split("is invalid: ", 1)[-1]
            raise ValueError(f"{option} {value} is invalid: {reason}") from None
    config = dataclasses.replace(base, quick=quick, seeds=seeds, **limits)
    if quick:
        config = dataclasses.replace(config, **quick_overrides)
    config = common.with_num_devices(config, num_devices)
    config = common.apply_overrides(config, overrides)
    config.validate()
    return config


def neuro_pid(
    task: LandingTask, config: BoosterLandingConfig, gains, options: tuple = ()
) -> NeuroCascadedPID:
    """Return the NeuroPID of this experiment around the cascaded PID with ``gains``;
    ``options`` are further keyword arguments (:attr:`BoosterSpec.neuro_pid_options`)."""
    return NeuroCascadedPID(
        task.vehicle,
        config.control_dt,
        gains=gains,
        action_features=config.neuro_pid_action_features,
        **dict(options),
    )


def limit_exceeded_rates(cost: LandingCost, outcome: Any) -> dict[str, float]:
    """Return, per touchdown limit, the fraction of landers that touched down beyond it.

    The fractions are over all landers, so a lander that fails two limits counts in
    both, and one that never touched down counts in none.
    """
    measures = TouchdownMeasures(
        vertical_speed=outcome.touchdown_speed,
        lateral_speed=outcome.lateral_speed,
        tilt=outcome.tilt,
        angular_rate=outcome.angular_rate,
        pad_distance=outcome.pad_distance,
        tip_over=outcome.tip_over,
    )
    touched = np.asarray(outcome.touched_down)
    return {
        name: float(np.mean(touched & (np.asarray(ratio) > 1.0)))
        for name, ratio in cost.limit_ratios(measures).items()
    }


def _sample(spec: BoosterSpec, params, key, count: int, chunk: int):
    if spec.sample is not None:
        return spec.sample(key, count, params, chunk)
    return sample_booster_states(key, count, spec.vehicle, params, spec.scenario, chunk=chunk)


def _validation_score(task, controller, params, validation) -> tuple[float, float]:
    """Return the success rate and the negated mean propellant of successful landings,
    the score by which the trainer ranks parameters."""
    _, outcome = rollout_outcomes(task, controller, {"params": params}, validation)
    success = np.asarray(outcome.success)
    used = np.asarray(outcome.propellant_used)
    propellant = float(used[success].mean()) if success.any() else math.inf
    return float(success.mean()), -propellant


def _clone_teacher(task, config, name, teacher, student, pool, seed, folder, resume, baseline=None):
    """Fit the controller ``name`` (``student``) to ``teacher`` along its rollouts.

    ``teacher`` is a controller and its params. A student with memory (the NeuroPID)
    starts from its own initial parameters (the tuned gains and a zero correction) and
    keeps its PID gains fixed during the fit, so the PID memory recorded along the
    teacher's rollouts stays exact. Returns the fitted parameters (None when a resumed
    run continues a checkpoint of ``name``, so the fit is not repeated) and the fit's
    figures, which are stored in the run folder and read back on resume.

    A ``baseline`` is the validation states and the score of the student's own start.
    With one, the fitted parameters are returned only if their validation score beats
    that score. Otherwise the result is None and ``used`` in the figures is false.
    """
    record = folder / "checkpoints" / f"seed{seed}" / f"{name}_imitation.json"
    checkpoints = record.parent / name
    if resume and record.exists() and checkpoints.is_dir():
        if CheckpointStore(checkpoints).steps():
            logging.getLogger(__name__).info(
                "%s checkpoint found, so the fit is not repeated", name
            )
            return None, json.loads(record.read_text())
    start = time.perf_counter()
    count = min(config.imitation_states, jax.tree_util.tree_leaves(pool)[0].shape[0])
    states = jax.tree_util.tree_map(lambda x: x[:count], pool)
    setting = dataclasses.replace(config.imitation, seed=config.imitation.seed + seed)
    teacher_controller, teacher_params = teacher
    teacher_variables = {"params": teacher_params}
    if jax.tree_util.tree_leaves(student.initial_carry()):
        example = jax.tree_util.tree_map(lambda x: x[0], states)
        variables = init_controller(task, student, jax.random.PRNGKey(seed), example)
        pairs = teacher_pairs(
            task, teacher_controller, teacher_variables, states, student, variables
        )
        setting = dataclasses.replace(setting, fixed=("pid",))
        result = fit_to_teacher(task, student, pairs, setting, initial_params=variables["params"])
    else:
        pairs = teacher_pairs(task, teacher_controller, teacher_variables, states)
        result = fit_to_teacher(task, student, pairs, setting)
    figures = {
        "teacher": type(teacher_controller).__name__,
        "action_error": result.final_error,
        "action_error_before": result.initial_error,
        "pairs": result.pairs,
        "used": True,
    }
    if config.dagger_rounds and not jax.tree_util.tree_leaves(teacher_controller.initial_carry()):
        fit = (student, result, setting)
        teacher = (teacher_controller, teacher_variables)
        result = _aggregate(task, config.dagger_rounds, fit, teacher, states, pairs, figures)
    params = result.params
    if baseline is not None:
        validation, baseline_score = baseline
        score = _validation_score(task, student, params, validation)
        figures["validation_success"] = score[0]
        figures["used"] = score > baseline_score
        if not figures["used"]:
            logging.getLogger(__name__).info(
                "the fitted %s validates at %.2f%% success, no better than its start "
                "(%.2f%%), so it starts from its own initial parameters",
                name,
                100 * score[0],
                100 * baseline_score[0],
            )
            params = None
    figures["seconds"] = time.perf_counter() - start
    common.write_json(record, figures)
    return params, figures


def _aggregate(task, rounds, fit, teacher, states, pairs, figures):
    """Run ``rounds`` rounds of dataset aggregation after a fit to a memoryless teacher
    and return the last fit; record each round's action error in ``figures``.

    ``fit`` is the student, its fit result and the fit's settings; ``teacher`` is the
    teacher controller and its variables.
    """
    student, result, setting = fit
    errors = []
    for _ in range(rounds):
        variables = {"params": result.params}
        own = student_pairs(task, student, variables, states, *teacher)
        pairs = join_pairs(pairs, own)
        result = fit_to_teacher(task, student, pairs, setting, initial_params=result.params)
        errors.append(result.final_error)
    if errors:
        figures.update(action_error=errors[-1], dagger_errors=errors, pairs=result.pairs)
    return result


def choose_teacher(name: str, scores: dict[str, tuple[float, ...]]) -> str | None:
    """Return the controller whose actions ``name`` is fitted to before APG, or None.

    The MLP is fitted to the tuned PID. The NeuroPID's correction is fitted to the
    trained MLP only if the MLP's validation score (success rate, then less propellant)
    beats the tuned PID's. Otherwise it starts from a zero correction, which is the
    tuned PID itself, because a fit to a worse teacher would start it below its PID.
    """
    if name == "mlp":
        return "pid_tuned"
    if name == "neuro_pid" and scores["mlp"] > scores["pid_tuned"]:
        return "mlp"
    return None


def _baseline(name, task, trained, validation):
    """Return the validation states and the tuned PID's score, which a fit of the
    NeuroPID (whose zero correction is that PID) must beat; None for other students."""
    if name != "neuro_pid":
        return None
    controller, params = trained["pid_tuned"]
    return validation, _validation_score(task, controller, params, validation)


def run_seed(spec, seed, config, task, held_out, run_folder, resume, logger):
    """Train the controllers of one seed and score them on the held-out set."""
    key = jax.random.PRNGKey(seed)
    pool = _sample(
        spec, task.params, jax.random.fold_in(key, 0), config.train_pool, config.sampling_chunk
    )
    validation = _sample(
        spec,
        task.params,
        jax.random.fold_in(key, 1),
        config.validation_states,
        config.sampling_chunk,
    )
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
        results[name] = summarize_outcomes(outcome)
        results[name].update(train_seconds=train_seconds, compile_seconds=compile_seconds)
        results[name]["limit_exceeded_rate"] = limit_exceeded_rates(task.cost, outcome)
        logger.info("%s (seed %d): success %.2f%%", name, seed, 100 * results[name]["success_rate"])

    hand = CascadedPID(task.vehicle, config.control_dt)
    example = jax.tree_util.tree_map(lambda x: x[0], held_out)
    score("pid_hand", hand, init_controller(task, hand, jax.random.PRNGKey(0), example), 0.0, 0.0)

    settings = {"pid_tuned": config.pid, "neuro_pid": config.neuro_pid, "mlp": config.mlp}
    # The MLP trains before the NeuroPID because it is the NeuroPID's teacher.
    builders = {
        "pid_tuned": lambda: hand,
        "mlp": lambda: MLPPolicy(task.vehicle),
        "neuro_pid": lambda: neuro_pid(task, config, tuned, spec.neuro_pid_options),
    }
    trained: dict[str, tuple[Any, Any]] = {}
    scores: dict[str, tuple[float, ...]] = {}
    tuned = None
    for name, build in builders.items():
        controller = build()
        initial = imitation = None
        teacher = choose_teacher(name, scores)
        if teacher is None and name == "neuro_pid":
            logger.info(
                "the MLP scored no better than the tuned PID on validation, so the "
                "NeuroPID starts from a zero correction (seed %d)",
                seed,
            )
        if teacher is not None:
            initial, imitation = _clone_teacher(
                task,
                config,
                name,
                trained[teacher],
                controller,
                pool,
                seed,
                run_folder,
                resume,
                baseline=_baseline(name, task, trained, validation),
            )
        result, histories[name] = train_controller(
            name,
            controller,
            settings[name],
            seed,
            task,
            (pool, validation),
            run_folder,
            resume,
            initial_params=initial,
            num_devices=config.num_devices,
        )
        train_seconds, compile_seconds = common.controller_timings(run_folder, name, seed, result)
        timings["compile"] += compile_seconds
        timings["train"] += train_seconds
        trained[name] = (controller, result.selected_params)
        scores[name] = tuple(float(x) for x in np.asarray(result.state.best_score))
        score(
            name,
            controller,
            {"params": result.selected_params},
            train_seconds,
            compile_seconds,
        )
        results[name]["selected_step"] = result.selected_step
        if name == "pid_tuned":
            tuned = hand.gains_from_params(result.selected_params)
            results[name]["gains"] = dataclasses.asdict(tuned)
        if imitation is not None:
            results[name]["imitation"] = imitation
            timings["train"] += imitation["seconds"]

    order = ("pid_hand", "pid_tuned", "neuro_pid", "mlp")
    results = {name: results[name] for name in order}
    trajectories = {name: trajectories[name] for name in order}
    histories = {name: histories[name] for name in order if name in histories}
    plots = run_folder / "plots"
    plot_booster_landings(
        trajectories,
        task.vehicle,
        task.params,
        config.control_dt,
        plots / f"landings_seed{seed}.png",
    )
    plot_training_curves(histories, plots / f"training_seed{seed}.png")
    return results, timings


def describe_setup(spec: BoosterSpec, params: Any) -> dict[str, Any]:
    """Return the vehicle, its parameters and the scenario as JSON-ready values."""

    def plain(value):
        # The shortest decimal that reads back as the same float32, so 9.81 stays 9.81.
        array = np.asarray(value)
        if array.dtype.kind != "f":
            return array.tolist()
        return array.astype(str).astype(np.float64).tolist()

    return {
        "vehicle": {"class": type(spec.vehicle).__name__, **dataclasses.asdict(spec.vehicle)},
        "params": {
            field.name: plain(getattr(params, field.name)) for field in dataclasses.fields(params)
        },
        "scenario": dataclasses.asdict(spec.scenario),
    }


def draw_held_out(spec: BoosterSpec, config: BoosterLandingConfig, task: LandingTask) -> Any:
    """Draw the held-out start states from their fixed seed and check them."""
    held_out = _sample(
        spec,
        task.params,
        jax.random.PRNGKey(HELD_OUT_SEED),
        config.held_out_states,
        config.sampling_chunk,
    )
    task.validate(held_out)
    return held_out


def load_run(spec: BoosterSpec, run_folder: pathlib.Path) -> common.LoadedRun:
    """Rebuild a finished run's held-out set and controllers from its config and checkpoints."""
    run_folder = pathlib.Path(run_folder)
    config = common.read_run_config(run_folder, BoosterLandingConfig)
    task = spec.task(config)
    held_out = draw_held_out(spec, config, task)
    per_seed = [
        restore_controllers(spec, config, task, run_folder, seed, held_out)
        for seed in range(config.seeds)
    ]
    return common.LoadedRun(
        experiment=spec.experiment,
        config=config,
        task=task,
        held_out=held_out,
        controllers=per_seed,
        extra_metrics=lambda outcome: {
            "limit_exceeded_rate": limit_exceeded_rates(task.cost, outcome)
        },
    )


def restore_controllers(
    spec: BoosterSpec,
    config: BoosterLandingConfig,
    task: LandingTask,
    run_folder: pathlib.Path,
    seed: int,
    starts: Any,
) -> dict[str, tuple[Any, Any]]:
    """Return the four controllers of one seed with their selected flax variables, read
    from the run's checkpoints. ``starts`` is a batch of start states (or episodes)."""
    example = jax.tree_util.tree_map(lambda x: x[:1], starts)
    first = jax.tree_util.tree_map(lambda x: x[0], starts)
    settings = {"pid_tuned": config.pid, "neuro_pid": config.neuro_pid, "mlp": config.mlp}
    checkpoints = pathlib.Path(run_folder) / "checkpoints" / f"seed{seed}"
    hand = CascadedPID(task.vehicle, config.control_dt)
    controllers = {"pid_hand": (hand, init_controller(task, hand, jax.random.PRNGKey(0), first))}
    for name in ("pid_tuned", "neuro_pid", "mlp"):
        if name == "pid_tuned":
            controller = hand
        elif name == "neuro_pid":
            tuned = hand.gains_from_params(controllers["pid_tuned"][1]["params"])
            controller = neuro_pid(task, config, tuned, spec.neuro_pid_options)
        else:
            controller = MLPPolicy(task.vehicle)
        params = common.restore_selected_params(
            task, controller, trainer_config(settings[name], seed), checkpoints / name, example
        )
        controllers[name] = (controller, {"params": params})
    return controllers


def run(spec: BoosterSpec, config: BoosterLandingConfig, run_folder: pathlib.Path, resume: bool):
    """Run every seed, write ``results.json`` and plots, and return the results."""
    logger = logging.getLogger(spec.experiment)
    total_start = time.perf_counter()
    task = spec.task(config)
    params = task.params
    start = time.perf_counter()
    held_out = draw_held_out(spec, config, task)
    timings = {"compile": 0.0, "train": 0.0, "eval": time.perf_counter() - start}
    logger.info("drew %d held-out start states in %.1f s", config.held_out_states, timings["eval"])

    per_seed: dict[str, list[dict[str, Any]]] = {}
    for seed in range(config.seeds):
        results, seed_timings = run_seed(
            spec, seed, config, task, held_out, run_folder, resume, logger
        )
        for name, entry in results.items():
            per_seed.setdefault(name, []).append(entry)
        for key, value in seed_timings.items():
            timings[key] += value
    controllers = {name: common.combine_seeds(entries) for name, entries in per_seed.items()}
    timings["total"] = time.perf_counter() - total_start
    common.write_results(
        run_folder,
        spec.experiment,
        dataclasses.asdict(config),
        timings,
        controllers,
        setup=describe_setup(spec, params),
    )
    return {"controllers": controllers, "timings": timings}


def build_parser(
    spec: BoosterSpec, description: str, quick_help: str = common.QUICK_HELP
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m experiments.{spec.experiment}", description=description
    )
    common.add_common_arguments(parser, quick_help)
    common.add_override_argument(parser)
    parser.add_argument("--seeds", type=int, default=1, help="number of training seeds (default 1)")
    common.add_num_devices_argument(parser)
    for name, text in LIMIT_OPTIONS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=None, help=text)
    return parser


def resume_command(spec: BoosterSpec, args: argparse.Namespace, run_folder: pathlib.Path) -> str:
    """Return the command line that continues this run, with its landing-limit options."""
    limits = []
    for name in LIMIT_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            limits += [f"--{name.replace('_', '-')}", str(value)]
    return common.resume_command(spec.experiment, args, run_folder, limits)


def main(
    spec: BoosterSpec,
    base: BoosterLandingConfig,
    quick_overrides: dict,
    description: str,
    argv: list[str] | None = None,
    run_experiment: Callable[[BoosterLandingConfig, pathlib.Path, bool], dict] | None = None,
    extra_table: Callable[[dict[str, dict[str, Any]]], str] | None = None,
) -> int:
    """Parse the command line, run the experiment and print its results table.

    ``run_experiment(config, run_folder, resume)`` replaces :func:`run` with ``spec``, and
    ``extra_table(controllers)`` returns a second table printed after the first.
    """
    quick_held_out = quick_overrides.get("held_out_states", base.held_out_states)
    parser = build_parser(
        spec, description, common.quick_help(base.held_out_states, quick_held_out)
    )
    args = parser.parse_args(argv)
    common.configure_logging(args.log_level)
    limits = {
        name: getattr(args, name) for name in LIMIT_OPTIONS if getattr(args, name) is not None
    }
    try:
        config = create_config(
            base, args.quick, args.seeds, quick_overrides, args.set, args.num_devices, **limits
        )
        run_folder = common.prepare_run_folder(args.out, args.resume, spec.experiment)
        common.save_config(run_folder, config, args.resume)
    except (ValueError, common.RunFolderError) as error:
        parser.error(str(error))
    if run_experiment is None:
        run_experiment = functools.partial(run, spec)
    results, status = common.run_stoppable(
        lambda: run_experiment(config, run_folder, args.resume),
        run_folder,
        lambda: resume_command(spec, args, run_folder),
    )
    if results is None:
        return status

    print()
    print(common.format_table(results["controllers"]))
    if extra_table is not None:
        print()
        print(extra_table(results["controllers"]))
    timings = results["timings"]
    print(
        f"\ntimings (s): compile {timings['compile']:.1f}, train {timings['train']:.1f}, "
        f"eval {timings['eval']:.1f}, total {timings['total']:.1f}"
    )
    print(f"run folder: {run_folder}")
    return 0


if __name__ == "__main__":
    common.reject_entry_point(
        "experiments.booster_landing is the code shared by the booster experiments, not an "
        "experiment. Run python -m experiments.planar_landing or "
        "python -m experiments.rigid_body_landing."
    )
