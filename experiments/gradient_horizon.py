"""Gradient norm and backward-pass memory against the rollout horizon, for the 1-D and the
6-DOF booster, with and without truncated backpropagation and rematerialisation.

Each vehicle flies the same landing burn at every horizon: the simulated time is fixed
(25 s for the 1-D lander, 28 s for the 6-DOF booster) and split into ``horizon`` control
steps of ``duration / horizon`` seconds, one RK4 step each. So a longer horizon means more
steps for the gradient to pass through, not a longer flight. The controllers are the
hand-tuned PIDs (:class:`VerticalPID`, :class:`CascadedPID`). The gradient is that of the
mean landing cost over a fixed batch of feasible start states, with respect to the PID
gains. Truncation cuts the gradient through the carried state every ``truncation``
control steps.

Memory figures are ``temp_size_in_bytes`` of XLA's ``memory_analysis()`` of the compiled
gradient (temporary buffers, the backward pass's kept intermediates among them), for
``SimConfig.remat`` set to ``none``, ``step`` and ``nested``. They come from the compiler,
so they do not depend on machine load.

Run ``python -m experiments.gradient_horizon [--quick] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import math
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import optax

from diffland.benchmarking import memory_figures
from diffland.controllers import CascadedPID, VerticalPID
from diffland.dynamics import (
    RigidBody,
    SimConfig,
    Vehicle,
    VerticalLander,
    falcon9_like,
    falcon9_like_rigid_body,
)
from diffland.dynamics.simulate import MAX_HORIZON
from diffland.scenarios import (
    RIGID_BODY_SCENARIO,
    LandingBurnScenario,
    sample_booster_states,
    sample_landing_burn_states,
)
from diffland.training import LandingTask, batch_landing_summary, init_controller, memory
from diffland.training.cost import summary_cost_terms
from experiments import common

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

EXPERIMENT = "gradient_horizon"
START_SEED = 20_261_206
"""Seed of the start states; fixed so every run uses the same batch."""
REMAT_MODES = ("none", "step", "nested")

logger = logging.getLogger(EXPERIMENT)


@dataclasses.dataclass(frozen=True)
class VehicleCase:
    """One vehicle of the experiment: how to build it, its PID and its start states."""

    name: str
    vehicle: Vehicle
    params: Callable[[], Any]
    controller: Callable[[Vehicle, float], Any]
    """Returns the hand-tuned PID for a control period in seconds."""
    sample: Callable[[jax.Array, Vehicle, Any, int], Any]
    """Returns a batch of feasible start states."""
    duration_seconds: float


def _sample_vertical(key, vehicle, params, count):
    states, _ = sample_landing_burn_states(
        key, count, vehicle, params, LandingBurnScenario(), chunk=max(256, 4 * count)
    )
    return states


def _sample_rigid_body(key, vehicle, params, count):
    return sample_booster_states(
        key, count, vehicle, params, RIGID_BODY_SCENARIO, chunk=max(256, 4 * count)
    )


VEHICLES = {
    "vertical": VehicleCase(
        name="vertical",
        vehicle=VerticalLander(),
        params=falcon9_like,
        controller=VerticalPID,
        sample=_sample_vertical,
        duration_seconds=25.0,
    ),
    "rigid_body": VehicleCase(
        name="rigid_body",
        vehicle=RigidBody(drag=True),
        params=lambda: falcon9_like_rigid_body(drag=True),
        controller=CascadedPID,
        sample=_sample_rigid_body,
        duration_seconds=28.0,
    ),
}


@dataclasses.dataclass(frozen=True)
class GradientHorizonConfig:
    """All settings of the experiment; saved as ``config.json`` in the run folder."""

    quick: bool = False
    horizons: tuple[int, ...] = (100, 200, 500, 1000, 2000)
    """Control steps per rollout; each vehicle's flight time is split into this many."""
    rigid_body_horizons: tuple[int, ...] = (100, 200, 500, 1000, 2000)
    truncation: int = 50
    """Control steps between gradient cuts in the truncated runs."""
    batch_size: int = 32
    """Start states per gradient (the same ones at every horizon)."""

    @classmethod
    def create(cls, quick: bool) -> GradientHorizonConfig:
        if not quick:
            return cls()
        return cls(quick=True, horizons=(100, 500, 2000), rigid_body_horizons=(100,), batch_size=8)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid setting."""
        for name in ("horizons", "rigid_body_horizons"):
            values = getattr(self, name)
            if not values or any(isinstance(h, bool) or not 1 <= h <= MAX_HORIZON for h in values):
                raise ValueError(
                    f"{name} = {values!r} is invalid: pass one or more control-step counts "
                    f"from 1 to {MAX_HORIZON:,}, for example 100,500."
                )
        for name in ("truncation", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} = {value!r} is invalid: pass an integer >= 1.")

    def horizons_of(self, vehicle: str) -> tuple[int, ...]:
        return self.rigid_body_horizons if vehicle == "rigid_body" else self.horizons


def _landing_loss(task: LandingTask, controller, variables, starts) -> jax.Array:
    # The streamed summary, as in Trainer.loss, so the memory figures are the trainer's.
    finals, summaries = batch_landing_summary(task, controller, variables, starts)
    terms, _ = jax.vmap(
        lambda final, summary: summary_cost_terms(
            task.vehicle, final, summary, task.params, task.cost
        )
    )(finals, summaries)
    return sum(jnp.mean(value) for value in terms.values())


def compile_gradient(case: VehicleCase, params, starts, sim: SimConfig):
    """Compile the gradient of the mean landing cost with respect to the PID gains.

    Returns the compiled function, the initial variables and the sizes of the compiler's
    memory analysis (see :func:`diffland.benchmarking.memory_figures`).
    """
    task = LandingTask(case.vehicle, params, sim)
    controller = case.controller(case.vehicle, sim.control_dt)
    example = jax.tree_util.tree_map(lambda x: x[0], starts)
    variables = init_controller(task, controller, jax.random.PRNGKey(0), example)
    gradient = jax.value_and_grad(functools.partial(_landing_loss, task, controller))
    compiled = jax.jit(gradient).lower(variables, starts).compile()
    memory.check_fits(
        memory.compiled_bytes(compiled),
        jax.local_devices()[:1],
        f"the {case.name} gradient over {sim.horizon} control steps (remat {sim.remat!r})",
        "Pass shorter horizons or a smaller batch_size.",
    )
    return compiled, variables, memory_figures(compiled)


def measure_vehicle(case: VehicleCase, config: GradientHorizonConfig):
    """Return the gradient-norm rows and the memory rows of one vehicle."""
    params = case.params()
    starts = case.sample(jax.random.PRNGKey(START_SEED), case.vehicle, params, config.batch_size)
    gradient_rows, memory_rows = [], []
    for horizon in config.horizons_of(case.name):
        control_dt = case.duration_seconds / horizon
        base = SimConfig(control_dt=control_dt, substeps=1, horizon=horizon)
        for truncation in (None, config.truncation):
            if truncation is not None and truncation >= horizon:
                continue
            sim = dataclasses.replace(base, truncation=truncation)
            start = time.perf_counter()
            compiled, variables, memory = compile_gradient(case, params, starts, sim)
            compile_seconds = time.perf_counter() - start
            loss, grads = compiled(variables, starts)
            norm = float(optax.tree.norm(grads))
            gradient_rows.append(
                {
                    "horizon": horizon,
                    "control_dt": control_dt,
                    "truncation": truncation,
                    "loss": float(loss),
                    "grad_norm": norm,
                    "finite": math.isfinite(norm),
                    "compile_seconds": compile_seconds,
                }
            )
            logger.info(
                "%s horizon %d truncation %s: gradient norm %.4g",
                case.name,
                horizon,
                truncation,
                norm,
            )
            if truncation is None:
                memory_rows.append(_memory_row(case.name, horizon, base, memory))
        for remat in REMAT_MODES[1:]:
            sim = dataclasses.replace(base, remat=remat)
            _, _, memory = compile_gradient(case, params, starts, sim)
            memory_rows.append(_memory_row(case.name, horizon, sim, memory))
    return gradient_rows, memory_rows


def _memory_row(vehicle: str, horizon: int, sim: SimConfig, memory) -> dict[str, Any]:
    segment = sim.segment_length if sim.remat == "nested" else None
    row = {"horizon": horizon, "remat": sim.remat, "segment": segment}
    names = ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes")
    row.update({name: memory[name] for name in names})
    logger.info(
        "%s horizon %d remat %s: temp_size_in_bytes %s",
        vehicle,
        horizon,
        sim.remat,
        row["temp_size_in_bytes"],
    )
    return row


def format_gradient_table(rows_by_vehicle: dict[str, list[dict[str, Any]]]) -> str:
    """Return one line per vehicle and horizon: the gradient norm without and with
    truncation."""
    lines = [f"{'vehicle':<11} {'horizon':>7} {'dt (s)':>7} {'|g| full':>11} {'|g| truncated':>13}"]
    for vehicle, rows in rows_by_vehicle.items():
        for horizon in sorted({row["horizon"] for row in rows}):
            by_truncation = {row["truncation"]: row for row in rows if row["horizon"] == horizon}
            full = by_truncation[None]
            cut = [row for key, row in by_truncation.items() if key is not None]
            cut_text = f"{cut[0]['grad_norm']:.4g}" if cut else "-"
            lines.append(
                f"{vehicle:<11} {horizon:>7} {full['control_dt']:>7.4f} "
                f"{full['grad_norm']:>11.4g} {cut_text:>13}"
            )
    return "\n".join(lines)


def format_memory_table(rows_by_vehicle: dict[str, list[dict[str, Any]]]) -> str:
    """Return one line per vehicle and horizon: temporary bytes of each remat mode."""
    lines = [
        f"{'vehicle':<11} {'horizon':>7} " + " ".join(f"{m + ' (KiB)':>14}" for m in REMAT_MODES)
    ]
    for vehicle, rows in rows_by_vehicle.items():
        for horizon in sorted({row["horizon"] for row in rows}):
            cells = []
            for mode in REMAT_MODES:
                match = [r for r in rows if r["horizon"] == horizon and r["remat"] == mode]
                size = match[0]["temp_size_in_bytes"] if match else None
                cells.append(f"{size / 1024:>14.1f}" if size is not None else f"{'-':>14}")
            lines.append(f"{vehicle:<11} {horizon:>7} " + " ".join(cells))
    return "\n".join(lines)


def plot_results(gradients, memory, path: pathlib.Path, truncation: int) -> pathlib.Path:
    """Plot the gradient norm and the backward-pass temporary memory against horizon."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for vehicle, rows in gradients.items():
        for cut, style in ((None, "-o"), (truncation, "--s")):
            points = sorted((r["horizon"], r["grad_norm"]) for r in rows if r["truncation"] == cut)
            if points:
                label = f"{vehicle}, " + ("full" if cut is None else f"truncation {cut}")
                left.plot(*zip(*points, strict=True), style, label=label)
    left.set(xscale="log", yscale="log", xlabel="horizon (control steps)", ylabel="gradient norm")
    left.legend()
    for vehicle, rows in memory.items():
        for mode in REMAT_MODES:
            points = sorted(
                (r["horizon"], r["temp_size_in_bytes"] / 2**20)
                for r in rows
                if r["remat"] == mode and r["temp_size_in_bytes"] is not None
            )
            if points:
                right.plot(*zip(*points, strict=True), "-o", label=f"{vehicle}, remat {mode}")
    right.set(
        xscale="log",
        yscale="log",
        xlabel="horizon (control steps)",
        ylabel="temporary memory of the gradient (MiB)",
    )
    right.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def run(
    config: GradientHorizonConfig,
    run_folder: pathlib.Path,
    vehicles: dict[str, VehicleCase] | None = None,
) -> dict[str, Any]:
    """Measure each vehicle (by default both of :data:`VEHICLES`), write ``results.json``
    and the plot, and return the rows."""
    total_start = time.perf_counter()
    gradients, memory = {}, {}
    for name, case in (VEHICLES if vehicles is None else vehicles).items():
        gradients[name], memory[name] = measure_vehicle(case, config)
    compile_seconds = sum(row["compile_seconds"] for rows in gradients.values() for row in rows)
    timings = {"total": time.perf_counter() - total_start, "compile": compile_seconds}
    plot_results(
        gradients, memory, run_folder / "plots" / "gradient_horizon.png", config.truncation
    )
    common.write_results(
        run_folder,
        EXPERIMENT,
        dataclasses.asdict(config),
        timings,
        gradient_norm=gradients,
        memory=memory,
        jax_version=jax.__version__,
        backend=jax.default_backend(),
    )
    return {"gradient_norm": gradients, "memory": memory, "timings": timings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m experiments.{EXPERIMENT}", description=__doc__.split("\n\n")[0]
    )
    common.add_common_arguments(
        parser,
        quick_help="measure fewer horizons, with fewer start states per gradient",
        resumable=False,
    )
    common.add_override_argument(parser)
    args = parser.parse_args(argv)
    common.configure_logging(args.log_level)
    if args.resume:
        parser.error("--resume is not supported: this experiment trains nothing, so rerun it.")
    try:
        config = common.apply_overrides(GradientHorizonConfig.create(args.quick), args.set)
        config.validate()
    except ValueError as error:
        parser.error(str(error))
    try:
        # The plot creates plots/ when it is written.
        run_folder = common.prepare_run_folder(
            args.out, False, EXPERIMENT, subfolders=(), resumable=False
        )
        common.save_config(run_folder, config, False)
    except common.RunFolderError as error:
        parser.error(str(error))
    try:
        results = run(config, run_folder)
    except memory.InsufficientMemoryError as error:
        return common.report_memory_error(error, run_folder)
    print()
    print(format_gradient_table(results["gradient_norm"]))
    print()
    print(format_memory_table(results["memory"]))
    print(f"\ntotal {results['timings']['total']:.1f} s; run folder: {run_folder}")
    return 0


if __name__ == "__main__":
    common.run_entry_point(main)
