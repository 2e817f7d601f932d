"""Train landing controllers of the planar booster under domain randomisation and test
them inside and outside the training ranges.

Every training, validation and held-out episode draws its own vehicle: dry mass, thrust,
Isp, radius of gyration, engine misalignment, throttle lag, wind and sensor noise and
latency, from :data:`~diffland.randomization.PLANAR_TRAINING_RANGES`. The controllers
see the nominal parameters only. The tuned cascaded PID, the MLP (started from a
behaviour-cloning fit to the tuned PID) and the adaptive NeuroPID (whose network also
receives recent tracking errors and an online thrust estimate) are trained as in
``experiments.planar_landing``. Each is scored on held-out start states twice:
``success_rate`` with parameters drawn from the training ranges, and
``success_rate_ood`` with parameters drawn from
:data:`~diffland.randomization.PLANAR_OUT_OF_DISTRIBUTION_RANGES`, keeping only draws
with at least one value outside the training ranges.

NOTE: the behaviour-cloning fits pair the teacher's actions, which it chose from noisy
and delayed measurements, with the true states the student is fitted on. The adaptive
NeuroPID's thrust estimate is also recorded with its own throttle commands, not the
teacher's. The fits are only a start for the policy-gradient training, which runs the
controllers behind the sensors.

Run ``python -m experiments.robustness [--quick] [--seeds N] [--out DIR] [--resume]``;
the limit options and ``--set KEY=VALUE ...`` work as in ``experiments.planar_landing``.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import time
from typing import Any

import jax
import numpy as np

from diffland.dynamics import PlanarBooster, falcon9_like_planar
from diffland.randomization import (
    PLANAR_OUT_OF_DISTRIBUTION_RANGES,
    PLANAR_SENSOR_NOISE,
    PLANAR_TRAINING_RANGES,
    RandomizationRanges,
    SensorModel,
    sample_episodes,
)
from diffland.scenarios import PLANAR_SCENARIO, sample_booster_states
from diffland.training.evaluation import rollout_outcomes, summarize_outcomes
from diffland.training.imitation import ImitationConfig
from experiments import booster_landing, common
from experiments.booster_landing import BoosterLandingConfig, BoosterSpec
from experiments.vertical_landing import ControllerSetting

VEHICLE = PlanarBooster(drag=True, throttle_lag=True)
"""The planar booster with drag and a throttle build-up lag."""

TRAINING_RANGES = PLANAR_TRAINING_RANGES
OUT_OF_DISTRIBUTION_RANGES = PLANAR_OUT_OF_DISTRIBUTION_RANGES

SENSOR = SensorModel(
    PLANAR_SENSOR_NOISE,
    max_latency=max(TRAINING_RANGES.latency_steps[1], OUT_OF_DISTRIBUTION_RANGES.latency_steps[1]),
)
"""Sensor noise at scale 1 and a buffer long enough for the longest latency drawn."""

OOD_SEED = 20_261_206
"""Seed of the out-of-distribution parameter draws on the held-out start states."""


def _params():
    return falcon9_like_planar(drag=True)


def draw_episodes(
    key: jax.Array,
    count: int,
    params: Any,
    chunk: int,
    ranges: RandomizationRanges = TRAINING_RANGES,
    excluded: RandomizationRanges | None = None,
    parameter_key: jax.Array | None = None,
):
    """Draw ``count`` start states of the planar scenario and one episode for each.

    The start states depend only on ``key``, so two calls with the same ``key`` and
    different ``ranges`` score the same starts with different vehicles. The parameters
    are drawn with ``parameter_key`` (default: derived from ``key``).
    """
    states = sample_booster_states(key, count, VEHICLE, params, PLANAR_SCENARIO, chunk=chunk)
    if parameter_key is None:
        parameter_key = jax.random.fold_in(key, 1_000)
    return sample_episodes(
        parameter_key, states, params, ranges, excluded=excluded, throttle_lag=True
    )


SPEC = BoosterSpec(
    experiment="robustness",
    vehicle=VEHICLE,
    params=_params,
    scenario=PLANAR_SCENARIO,
    sample=draw_episodes,
    sensor=SENSOR,
    neuro_pid_options=(("adaptive", True),),
)

CONFIG = BoosterLandingConfig()
"""Settings of the full run (those of ``experiments.planar_landing``)."""

QUICK = dict(
    train_pool=512,
    validation_states=128,
    held_out_states=256,
    sampling_chunk=2048,
    pid=ControllerSetting(steps=8, learning_rate=1e-2, batch_size=64),
    neuro_pid=ControllerSetting(steps=8, learning_rate=1e-3, batch_size=64),
    mlp=ControllerSetting(steps=8, learning_rate=1e-3, batch_size=64),
    imitation=ImitationConfig(steps=500, batch_size=2048, learning_rate=3e-3),
    imitation_states=128,
)
"""Changes for ``--quick``: a check that everything runs, with held-out sets of 256."""


def describe_ranges() -> dict[str, Any]:
    """Return the training and out-of-distribution ranges as JSON-ready values."""
    return {
        "training": dataclasses.asdict(TRAINING_RANGES),
        "out_of_distribution": dataclasses.asdict(OUT_OF_DISTRIBUTION_RANGES),
        "out_of_distribution_excludes": "every draw with all values inside the training ranges",
        "sensor_noise_std_at_scale_1": dict(SENSOR.noise_std),
        "units": "*_scale: factor on the nominal value; engine_misalignment_deg: degrees; "
        "throttle_time_constant: s; steady_wind, gust_rms: m/s; latency_steps: control steps",
    }


def draw_out_of_distribution(config: BoosterLandingConfig, task) -> Any:
    """Return the held-out start states with out-of-distribution vehicles and sensors."""
    episodes = draw_episodes(
        jax.random.PRNGKey(booster_landing.HELD_OUT_SEED),
        config.held_out_states,
        task.params,
        config.sampling_chunk,
        ranges=OUT_OF_DISTRIBUTION_RANGES,
        excluded=TRAINING_RANGES,
        parameter_key=jax.random.PRNGKey(OOD_SEED),
    )
    task.validate(episodes)
    return episodes


def score_out_of_distribution(config, task, run_folder, seed, held_out_ood) -> dict[str, float]:
    """Return each controller's success rate on the out-of-distribution episodes."""
    controllers = booster_landing.restore_controllers(
        SPEC, config, task, run_folder, seed, held_out_ood
    )
    rates = {}
    for name, (controller, variables) in controllers.items():
        _, outcome = rollout_outcomes(
            task, controller, variables, held_out_ood, num_devices=config.num_devices
        )
        rates[name] = float(np.mean(np.asarray(outcome.success)))
    return rates


def run(config: BoosterLandingConfig, run_folder: pathlib.Path, resume: bool) -> dict[str, Any]:
    """Train and score every seed, write ``results.json`` and return the results."""
    logger = logging.getLogger(SPEC.experiment)
    total_start = time.perf_counter()
    task = SPEC.task(config)
    start = time.perf_counter()
    held_out = booster_landing.draw_held_out(SPEC, config, task)
    held_out_ood = draw_out_of_distribution(config, task)
    timings = {"compile": 0.0, "train": 0.0, "eval": time.perf_counter() - start}

    per_seed: dict[str, list[dict[str, Any]]] = {}
    for seed in range(config.seeds):
        results, seed_timings = booster_landing.run_seed(
            SPEC, seed, config, task, held_out, run_folder, resume, logger
        )
        start = time.perf_counter()
        ood = score_out_of_distribution(config, task, run_folder, seed, held_out_ood)
        seed_timings["eval"] += time.perf_counter() - start
        for name, entry in results.items():
            entry["success_rate_ood"] = ood[name]
            logger.info(
                "%s (seed %d): success %.2f%% in the training ranges, %.2f%% outside",
                name,
                seed,
                100 * entry["success_rate"],
                100 * ood[name],
            )
            per_seed.setdefault(name, []).append(entry)
        for key, value in seed_timings.items():
            timings[key] += value

    controllers = {}
    for name, entries in per_seed.items():
        controllers[name] = common.combine_seeds(entries)
        controllers[name]["success_rate_ood"] = float(
            np.mean([entry["success_rate_ood"] for entry in entries])
        )
    timings["total"] = time.perf_counter() - total_start
    common.write_results(
        run_folder,
        SPEC.experiment,
        dataclasses.asdict(config),
        timings,
        controllers,
        setup=booster_landing.describe_setup(SPEC, task.params),
        ranges=describe_ranges(),
    )
    return {"controllers": controllers, "timings": timings}


def format_robustness_table(controllers: dict[str, dict[str, Any]]) -> str:
    """Return the success rates inside and outside the training ranges as aligned text."""
    lines = [f"{'controller':<12}{'success':>10}{'success ood':>14}", "-" * 36]
    for name, entry in controllers.items():
        lines.append(f"{name:<12}{entry['success_rate']:>10.2%}{entry['success_rate_ood']:>14.2%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the experiment and print its results tables."""
    return booster_landing.main(
        SPEC,
        CONFIG,
        QUICK,
        __doc__.split("\n\n")[0],
        argv,
        run_experiment=run,
        extra_table=format_robustness_table,
    )


def load_run(run_folder: pathlib.Path) -> common.LoadedRun:
    """Rebuild a finished run's held-out sets and controllers (for ``diffland eval``).

    Each controller is scored as :func:`run` scores it: the booster metrics on the
    held-out set, and ``success_rate_ood`` on the out-of-distribution episodes.
    """
    loaded = booster_landing.load_run(SPEC, run_folder)
    task = loaded.task
    held_out_ood = draw_out_of_distribution(loaded.config, task)

    def score(controller, variables) -> dict[str, Any]:
        _, outcome = rollout_outcomes(task, controller, variables, loaded.held_out)
        entry = summarize_outcomes(outcome)
        entry["limit_exceeded_rate"] = booster_landing.limit_exceeded_rates(task.cost, outcome)
        _, outcome_ood = rollout_outcomes(task, controller, variables, held_out_ood)
        entry["success_rate_ood"] = float(np.mean(np.asarray(outcome_ood.success)))
        return entry

    return dataclasses.replace(loaded, score=score)


if __name__ == "__main__":
    common.run_entry_point(main)
