"""The landing cost from a summary carried through the rollout's scan, against the cost
from a recorded trajectory.

Losses, metrics and gradients are equal in float64 for every remat mode and with
truncation. The streamed gradient matches central finite differences, the summary keeps
the first of equally low states, and with ``remat="nested"`` the backward-pass memory
grows like sqrt(horizon).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffland.controllers import CascadedPID, VerticalPID
from diffland.dynamics import (
    RigidBody,
    SemiImplicitEuler,
    SimConfig,
    TouchdownMeasures,
    Trajectory,
    VerticalLander,
    falcon9_like,
    falcon9_like_rigid_body,
    initial_sim_state,
    make_rigid_body_state,
    make_vertical_state,
)
from diffland.training import (
    LandingTask,
    TrainConfig,
    Trainer,
    batch_rollout,
    init_controller,
    landing_cost_terms,
    summarize_trajectory,
)
from diffland.training.cost import (
    LandingCost,
    accumulate_landing_summary,
    initial_landing_summary,
    summary_cost_terms,
    summary_outcome,
    within_limits,
)
from diffland.training.task import batch_landing_summary, map_landers

VERTICAL = VerticalLander()
RIGID_BODY = RigidBody()


def vertical_setup(dtype=jnp.float64):
    """1-D landers: one touches down mid-horizon (its frozen states then tie for the
    lowest height), one still descends at the end, and two stop above the ground and climb
    away, so their lowest state lies inside the horizon."""
    starts = make_vertical_state(
        jnp.array([60.0, 200.0, 40.0, 120.0]),
        jnp.array([-45.0, -70.0, -5.0, -60.0]),
        jnp.array([31_000.0, 31_000.0, 26_500.0, 30_000.0]),
        dtype=dtype,
    )
    sim = SimConfig(control_dt=0.2, substeps=2, horizon=23)
    task = LandingTask(VERTICAL, falcon9_like(dtype=dtype), sim)
    return task, VerticalPID(VERTICAL, sim.control_dt), starts


def rigid_body_setup():
    """6-DOF boosters with the same three kinds of flight as :func:`vertical_setup`."""
    tilt_x = (np.cos(0.02), np.sin(0.02), 0.0, 0.0)
    starts = [
        make_rigid_body_state(
            [5.0, -3.0, 30.0], [-1.0, 0.5, -20.0], 30_000.0, tilt_x, (0.0, 0.02, 0.0)
        ),
        make_rigid_body_state([0.0, 4.0, 400.0], [0.0, -1.0, -60.0], 31_000.0),
        make_rigid_body_state(
            [2.0, 0.0, 45.0], [0.0, 0.0, -8.0], 27_000.0, angular_velocity=(0.01, 0.0, 0.0)
        ),
    ]
    starts = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves).astype(jnp.float64), *starts)
    sim = SimConfig(control_dt=0.25, substeps=1, horizon=16, integrator=SemiImplicitEuler())
    task = LandingTask(RIGID_BODY, falcon9_like_rigid_body(dtype=jnp.float64), sim)
    return task, CascadedPID(RIGID_BODY, sim.control_dt), starts


def trajectory_loss(task, controller, params, batch):
    """Mean landing cost and its metrics computed from recorded trajectories, the way
    ``Trainer.loss`` computed them before the streamed summary."""
    trajectory = batch_rollout(task, controller, {"params": params}, batch)
    terms, outcome = map_landers(
        lambda t, p: landing_cost_terms(task.vehicle, t, p, task.cost), task, trajectory, batch
    )
    means = {name: jnp.mean(value) for name, value in terms.items()}
    touched = outcome.touched_down
    success = outcome.success
    metrics = {f"train/cost/{name}": value for name, value in means.items()}
    metrics["train/success_rate"] = jnp.mean(success)
    metrics["train/no_touchdown_rate"] = jnp.mean(~touched)
    metrics["train/touchdown_speed_mean"] = jnp.sum(outcome.touchdown_speed * touched) / jnp.sum(
        touched
    )
    metrics["train/propellant_mean"] = jnp.sum(outcome.propellant_used * success) / jnp.sum(success)
    return sum(means.values()), (metrics, outcome)


def make_trainer(task, controller, starts):
    count = jax.tree_util.tree_leaves(starts)[0].shape[0]
    config = TrainConfig(batch_size=count, checks=False, num_devices=1)
    return Trainer(task, controller, config, starts)


def both_losses(task, controller, params, starts):
    """Return ``(loss, metrics)`` and the gradient of ``Trainer.loss`` and of
    :func:`trajectory_loss`, with the reference's outcome."""
    trainer = make_trainer(task, controller, starts)

    @jax.jit
    def run(params, starts):
        streamed = jax.value_and_grad(trainer.loss, has_aux=True)(params, starts)
        reference = jax.value_and_grad(
            functools.partial(trajectory_loss, task, controller), has_aux=True
        )(params, starts)
        return streamed, reference

    return run(params, starts)


def assert_same_loss(task, controller, starts, remat, segment, truncation):
    sim = dataclasses.replace(task.sim, remat=remat, remat_segment=segment, truncation=truncation)
    task = dataclasses.replace(task, sim=sim)
    params = make_trainer(task, controller, starts).init().params
    ((loss, metrics), grads), ((expected_loss, (expected_metrics, outcome)), expected_grads) = (
        both_losses(task, controller, params, starts)
    )

    # The batch covers a touchdown, a lander still descending at the end and one whose
    # lowest state lies inside the horizon.
    flying = ~outcome.touched_down
    assert bool(jnp.any(outcome.touched_down))
    assert bool(jnp.any(flying & (outcome.lowest_height < outcome.final_height)))
    assert bool(jnp.any(flying & (outcome.lowest_height == outcome.final_height)))

    assert float(loss) == pytest.approx(float(expected_loss), rel=1e-12)
    assert metrics.keys() == expected_metrics.keys()
    for name, value in expected_metrics.items():
        np.testing.assert_allclose(metrics[name], value, rtol=1e-12, err_msg=name)
    for path, expected in jax.tree_util.tree_leaves_with_path(expected_grads):
        actual = functools.reduce(lambda tree, key: tree[key.key], path, grads)
        assert np.any(expected != 0.0), jax.tree_util.keystr(path)
        np.testing.assert_allclose(
            actual, expected, rtol=1e-9, atol=1e-14, err_msg=jax.tree_util.keystr(path)
        )


CASES = [
    ("none", None, None),
    ("step", None, None),
    ("nested", None, None),  # round(sqrt(23)) = 5: four segments of 5 and one of 3
    ("none", None, 7),
    ("nested", 4, 7),  # cuts at steps 7, 14 and 21 fall inside segments
]


@pytest.mark.parametrize(("remat", "segment", "truncation"), CASES)
def test_streamed_loss_matches_trajectory_1d(x64, remat, segment, truncation):
    assert_same_loss(*vertical_setup(), remat, segment, truncation)


RIGID_BODY_CASES = [
    ("none", None, None),
    ("step", None, 5),
    ("nested", None, None),  # segments of 4
    ("nested", 3, 5),
]


@pytest.mark.parametrize(("remat", "segment", "truncation"), RIGID_BODY_CASES)
def test_streamed_loss_matches_trajectory_6dof(x64, remat, segment, truncation):
    assert_same_loss(*rigid_body_setup(), remat, segment, truncation)


def test_streamed_gradient_finite_differences(x64):
    task, controller, starts = vertical_setup()
    task = dataclasses.replace(task, sim=dataclasses.replace(task.sim, remat="nested"))
    params = make_trainer(task, controller, starts).init().params

    def loss(params):
        finals, summaries = batch_landing_summary(task, controller, {"params": params}, starts)
        terms, _ = map_landers(
            lambda rollout, p: summary_cost_terms(task.vehicle, *rollout, p, task.cost),
            task,
            (finals, summaries),
            starts,
        )
        return sum(jnp.mean(value) for value in terms.values())

    loss = jax.jit(loss)
    grads = jax.jit(jax.grad(loss))(params)
    for name in ("kp", "kd", "decel_fraction"):
        step = 1e-6 * max(1.0, abs(float(params[name])))
        plus = {**params, name: params[name] + step}
        minus = {**params, name: params[name] - step}
        central = (float(loss(plus)) - float(loss(minus))) / (2.0 * step)
        assert abs(central) > 1e-6, name
        assert float(grads[name]) == pytest.approx(central, rel=1e-5), name


def test_summary_keeps_first_lowest_state(x64):
    # Steps 1 and 2 are equally low; the first of them sets the propellant, as jnp.argmin
    # picks it.
    params = falcon9_like(dtype=jnp.float64)
    states = make_vertical_state(
        jnp.array([50.0, 20.0, 20.0, 35.0]),
        jnp.array([-10.0, -5.0, 5.0, 8.0]),
        jnp.array([30_000.0, 29_500.0, 29_000.0, 28_500.0]),
        dtype=jnp.float64,
    )
    actions = jnp.array([[0.9], [0.5], [0.7], [0.4]])
    active = jnp.array([True, True, True, False])
    initial = jax.tree_util.tree_map(lambda x: x[0], states)
    trajectory = Trajectory(
        states=states,
        actions=actions,
        active=active,
        final=initial_sim_state(initial),
        initial=initial,
    )

    def fold(summary, record):
        step, state, action, is_active = record
        return accumulate_landing_summary(
            VERTICAL, params, summary, step, state, action, is_active
        ), None

    start = initial_landing_summary(VERTICAL, initial, params, 1)
    streamed, _ = jax.lax.scan(fold, start, (jnp.arange(4), states, actions, active))
    recorded = summarize_trajectory(VERTICAL, trajectory, params)

    assert float(streamed.lowest_propellant) == pytest.approx(29_500.0 - 25_600.0)
    assert float(streamed.lowest_height) == pytest.approx(20.0)
    for name in ("lowest_height", "lowest_propellant", "active_steps", "change_steps"):
        assert float(getattr(streamed, name)) == float(getattr(recorded, name)), name
    for name in ("effort_sum", "change_sum"):
        expected = float(getattr(recorded, name))
        assert float(getattr(streamed, name)) == pytest.approx(expected, rel=1e-14), name
    assert float(streamed.active_steps) == 3.0
    assert float(streamed.change_steps) == 2.0


def backward_temp_bytes(loss_kind, horizon):
    """Temporary buffer bytes of the compiled gradient of one 1-D lander's landing cost
    with ``remat="nested"``, from XLA's memory analysis. ``loss_kind`` is ``"streamed"``
    (``Trainer.loss``) or ``"trajectory"`` (the cost read from a recorded trajectory)."""
    task, controller, starts = vertical_setup(jnp.float32)
    starts = jax.tree_util.tree_map(lambda x: x[:1], starts)
    task = dataclasses.replace(
        task, sim=dataclasses.replace(task.sim, horizon=horizon, remat="nested")
    )
    example = jax.tree_util.tree_map(lambda x: x[0], starts)
    params = init_controller(task, controller, jax.random.PRNGKey(0), example)["params"]
    if loss_kind == "streamed":
        loss = make_trainer(task, controller, starts).loss
    else:
        loss = functools.partial(trajectory_loss, task, controller)
    gradient = jax.grad(lambda p: loss(p, starts)[0])
    analysis = jax.jit(gradient).lower(params).compile().memory_analysis()
    if analysis is None:
        pytest.skip("this backend reports no memory analysis")
    return analysis.temp_size_in_bytes


MEMORY_HORIZONS = (1600, 6400)
"""Horizons of the memory tests, long enough that the memory that does not depend on the
horizon (an estimated 16 KB, from fitting ``c + a sqrt(horizon)`` at 400 and 1,600 steps)
is a small part."""
MEMORY_GROWTH_BOUND = 2.6
"""Largest ratio of backward memory at 4x the horizon. Growth like sqrt(horizon) gives at
most 2 (less with a constant part), and linear growth of kept per-step outputs gives
close to 4."""


def test_nested_memory_grows_like_sqrt_horizon():
    short, long = (backward_temp_bytes("streamed", horizon) for horizon in MEMORY_HORIZONS)
    assert long / short < MEMORY_GROWTH_BOUND


def test_trajectory_cost_memory_grows_linearly():
    # The same measurement with the cost read from recorded trajectories exceeds the
    # bound, so the bound of the test above separates the two kinds of growth.
    short, long = (backward_temp_bytes("trajectory", horizon) for horizon in MEMORY_HORIZONS)
    assert long / short > MEMORY_GROWTH_BOUND


@pytest.mark.parametrize("rounding", [-1e-9, 0.0, 1e-9])
def test_touched_down_lander_ends_at_touchdown(x64, rounding):
    # The frozen states after touchdown tie in height with the final state. Two compiled
    # programs may round that height differently; the descent still ends at touchdown.
    params = falcon9_like(dtype=jnp.float64)
    final = initial_sim_state(make_vertical_state(0.0, -1.5, 27_000.0, dtype=jnp.float64))
    final = final.replace(touched_down=jnp.array(True))
    summary = initial_landing_summary(
        VERTICAL, make_vertical_state(80.0, -30.0, 30_000.0, dtype=jnp.float64), params, 1
    )
    summary = summary.replace(lowest_height=jnp.array(rounding), lowest_propellant=jnp.array(1.0))
    outcome = summary_outcome(VERTICAL, final, summary, params, LandingCost())
    final_propellant = VERTICAL.propellant_mass(final.vehicle, params)
    assert float(outcome.propellant_left) == float(final_propellant)
    assert float(outcome.propellant_used) == pytest.approx(3_000.0)


def _measures_of_vertical_speed(speed):
    """Return the 1-D lander's touchdown measures at ``speed`` down: only the vertical
    speed varies."""
    state = make_vertical_state(jnp.zeros_like(speed), -speed, jnp.full_like(speed, 30_000.0))
    return VERTICAL.touchdown_measures(state, falcon9_like())


def test_within_limits_checks_every_ratio():
    cost = LandingCost()
    speed = jnp.array([0.5, 1.9, 2.1, 3.0])
    measures = _measures_of_vertical_speed(speed)

    assert within_limits(cost, measures).tolist() == [True, True, False, False]
    tilted = measures.replace(tilt=jnp.full(4, np.radians(6.0)))
    assert not within_limits(cost, tilted).any()
    tipping = measures.replace(tip_over=jnp.array([0.0, 1.5, 0.0, 0.0]))
    assert within_limits(cost, tipping).tolist() == [True, False, False, False]
    scalar = TouchdownMeasures(1.0, 0.5, 0.0, 0.0, 0.0, 0.0)
    assert isinstance(within_limits(cost, scalar), jax.Array)


def test_within_limits_traces_no_reduction():
    # A reduction over the stacked limit checks was folded by XLA at compile time where
    # the measures were constant (the 1-D lander's), which took seconds at 500,000
    # landers. Elementwise ands on constants simplify away instead.
    def success(speed):
        return within_limits(LandingCost(), _measures_of_vertical_speed(speed))

    primitives = {eqn.primitive.name for eqn in jax.make_jaxpr(success)(jnp.zeros(8)).eqns}

    assert "reduce_and" not in primitives
    assert "and" in primitives
