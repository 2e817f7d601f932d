"""Scoring a controller on a held-out set of start states, in the results-file schema."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import numpy as np

from diffland.dynamics.simulate import Trajectory
from diffland.training import memory
from diffland.training.cost import LandingOutcome, landing_outcome
from diffland.training.parallel import DataParallel
from diffland.training.task import LandingTask, batch_rollout, map_landers


def rollout_outcomes(
    task: LandingTask,
    controller: nn.Module,
    variables: Any,
    states: Any,
    num_devices: int | None = None,
) -> tuple[Trajectory, LandingOutcome]:
    """Roll out every state (one jitted, vmapped call) and summarise each landing.

    The states are split over ``num_devices`` devices (None: all of them) when their count
    divides by the device count, else every device rolls out all of them. Each lander is
    rolled out on its own, so the split changes no value.

    Every step of every rollout is recorded. Before compiling, the size of that record
    is compared with the free memory (see :func:`diffland.training.memory.check_fits`),
    and :class:`~diffland.training.memory.InsufficientMemoryError` is raised when it
    does not fit.
    """
    parallel = DataParallel.create(num_devices)
    count = jax.tree_util.tree_leaves(states)[0].shape[0]
    # NOTE: with several processes, split outputs would lie on hosts that cannot read each
    # other's shards, so multi-process runs roll out every state on every device.
    split = parallel.divides(count) and jax.process_count() == 1

    @jax.jit
    def run(variables, states):
        trajectory = batch_rollout(task, controller, variables, states)
        outcome = map_landers(
            lambda t, p: landing_outcome(task.vehicle, t, p, task.cost), task, trajectory, states
        )
        return trajectory, outcome

    recorded = memory.tree_bytes(jax.eval_shape(run, variables, states))
    memory.check_fits(
        recorded // parallel.device_count if split else recorded,
        list(parallel.mesh.devices.flat),
        f"recording {count} rollouts of {task.sim.horizon} control steps",
        "Score fewer start states or shorten the horizon.",
    )
    states = parallel.shard_batch(states) if split else parallel.replicate(states)
    variables = parallel.replicate(variables)
    return jax.block_until_ready(run(variables, states))


def summarize_outcomes(
    outcome: LandingOutcome, optimal_propellant: Any | None = None
) -> dict[str, float | int | None]:
    """Return the per-controller metrics of the results file.

    Touchdown speeds are over landers that touched down; propellant figures are over
    successful landings only. ``propellant_ratio_to_optimal`` is the mean over successful
    landers of each one's propellant divided by the optimum from its own start state
    (None without optima, or when no lander succeeded).
    """
    touched = np.asarray(outcome.touched_down)
    success = np.asarray(outcome.success)
    speed = np.asarray(outcome.touchdown_speed)
    used = np.asarray(outcome.propellant_used)

    ratio = None
    if optimal_propellant is not None and success.any():
        ratio = float(np.mean(used[success] / np.asarray(optimal_propellant)[success]))
    return {
        "n_eval": int(success.size),
        "success_rate": float(success.mean()),
        "no_touchdown_rate": float(1.0 - touched.mean()),
        "touchdown_speed_mean": float(speed[touched].mean()) if touched.any() else None,
        "touchdown_speed_max": float(speed[touched].max()) if touched.any() else None,
        "propellant_mean": float(used[success].mean()) if success.any() else None,
        "propellant_ratio_to_optimal": ratio,
    }
