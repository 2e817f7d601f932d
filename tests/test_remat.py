"""Rematerialisation of the rollout (``SimConfig.remat``): the same trajectory and the same
gradients as without it (float64), for each mode with and without truncation, and a smaller
backward-pass memory where the compiler reports one."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffland.controllers import VerticalPID
from diffland.dynamics import (
    RigidBody,
    SimConfig,
    VerticalLander,
    falcon9_like,
    falcon9_like_rigid_body,
    make_rigid_body_state,
    make_vertical_state,
    rotation,
)
from diffland.dynamics.aero import steady_wind
from diffland.dynamics.simulate import (
    control_step,
    initial_sim_state,
    physics_step,
    reduce_rollout,
)
from diffland.training import LandingCost, LandingTask, batch_rollout, init_controller
from diffland.training.cost import landing_cost_terms

VEHICLE = VerticalLander()
HORIZON = 23
"""Control steps; a prime, so every segment length from 2 to 22 leaves a shorter last
segment."""


def landing_loss(variables, starts, sim):
    """Mean landing cost of a batch of PID rollouts under ``sim``."""
    task = LandingTask(VEHICLE, falcon9_like(dtype=starts.altitude.dtype), sim)
    controller = VerticalPID(VEHICLE, sim.control_dt)
    trajectory = batch_rollout(task, controller, variables, starts)
    terms, _ = jax.vmap(lambda t: landing_cost_terms(VEHICLE, t, task.params, LandingCost()))(
        trajectory
    )
    return sum(jnp.mean(value) for value in terms.values()), trajectory


def setup(dtype):
    """Start states 120-200 m up, so that some landers touch down inside the horizon, and
    the hand-tuned PID's variables."""
    starts = make_vertical_state(
        jnp.array([120.0, 150.0, 200.0]),
        jnp.array([-60.0, -55.0, -70.0]),
        jnp.array([30_000.0, 29_000.0, 31_000.0]),
        dtype=dtype,
    )
    sim = SimConfig(control_dt=0.2, substeps=2, horizon=HORIZON)
    task = LandingTask(VEHICLE, falcon9_like(dtype=dtype), sim)
    controller = VerticalPID(VEHICLE, sim.control_dt)
    example = jax.tree_util.tree_map(lambda x: x[0], starts)
    variables = init_controller(task, controller, jax.random.PRNGKey(0), example)
    return variables, starts, sim


@functools.partial(jax.jit, static_argnums=2)
def loss_and_gradient(variables, starts, sim):
    """Return the loss, the trajectory and the gradient with respect to the PID gains and
    the start states."""
    (loss, trajectory), grads = jax.value_and_grad(landing_loss, argnums=(0, 1), has_aux=True)(
        variables, starts, sim
    )
    return loss, trajectory, grads


CASES = [
    ("step", None, None),
    ("nested", None, None),  # round(sqrt(23)) = 5: four segments of 5 and one of 3
    ("nested", HORIZON, None),
    ("nested", 4, 7),  # cuts at steps 7, 14 and 21 fall inside segments
]


@pytest.mark.parametrize(("remat", "segment", "truncation"), CASES)
def test_remat_keeps_gradient_float64(x64, remat, segment, truncation):
    variables, starts, sim = setup(jnp.float64)
    reference_sim = dataclasses.replace(sim, truncation=truncation)
    remat_sim = dataclasses.replace(reference_sim, remat=remat, remat_segment=segment)
    loss, trajectory, grads = loss_and_gradient(variables, starts, reference_sim)
    remat_loss, remat_trajectory, remat_grads = loss_and_gradient(variables, starts, remat_sim)

    assert bool(jnp.any(trajectory.final.touched_down))
    assert float(remat_loss) == pytest.approx(float(loss), rel=1e-12)
    for expected, actual in zip(
        jax.tree_util.tree_leaves(trajectory),
        jax.tree_util.tree_leaves(remat_trajectory),
        strict=True,
    ):
        assert actual.shape == expected.shape
        np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12)
    for expected, actual in zip(
        jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(remat_grads), strict=True
    ):
        assert np.any(expected != 0.0)
        np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-12)


def test_nested_segment_defaults_to_sqrt_horizon():
    assert SimConfig(horizon=100, remat="nested").segment_length == 10
    assert SimConfig(horizon=23, remat="nested").segment_length == 5
    assert SimConfig(horizon=1, remat="nested").segment_length == 1
    assert SimConfig(horizon=2000, remat="nested").segment_length == 45


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        (dict(remat="full"), "remat = 'full' is invalid"),
        (dict(remat=None), "remat = None is invalid"),
        (dict(remat=True), "remat = True is invalid"),
        (dict(remat="nested", remat_segment=0), "remat_segment = 0 is invalid"),
        (dict(remat="nested", remat_segment=2.5), "remat_segment = 2.5 is invalid"),
        (dict(remat="nested", remat_segment=True), "remat_segment = True is invalid"),
        (dict(remat="nested", horizon=10, remat_segment=11), "longer than the horizon"),
        (dict(remat="step", remat_segment=5), "has no effect with remat = 'step'"),
        (dict(remat_segment=5), "has no effect with remat = 'none'"),
    ],
)
def test_sim_config_rejects_bad_remat(settings, match):
    with pytest.raises(ValueError, match=match):
        SimConfig(**settings)


def backward_temp_bytes(remat, horizon):
    """Temporary buffer bytes of the compiled gradient of one lander's landing cost, from
    XLA's memory analysis."""
    variables, starts, sim = setup(jnp.float32)
    starts = jax.tree_util.tree_map(lambda x: x[:1], starts)
    sim = dataclasses.replace(sim, horizon=horizon, remat=remat)
    gradient = jax.grad(lambda v: landing_loss(v, starts, sim)[0])
    analysis = jax.jit(gradient).lower(variables).compile().memory_analysis()
    if analysis is None:
        pytest.skip("this backend reports no memory analysis")
    return analysis.temp_size_in_bytes


def test_remat_lowers_backward_memory():
    # Over 1,600 steps the per-step outputs (states, actions) that every mode keeps are
    # smaller than the carried states that "step" keeps for every step.
    none, step, nested = (backward_temp_bytes(mode, 1600) for mode in ("none", "step", "nested"))
    assert step < none
    assert nested < step


def test_controller_intermediates_are_not_kept():
    # A controller with a hidden layer of 4,096 units. If the backward pass kept them for
    # every control step, its activations alone would take horizon x width x 4 bytes.
    width, horizon = 4096, 200
    start = make_vertical_state(150.0, -50.0, 30_000.0)
    params = falcon9_like()
    sim = SimConfig(control_dt=0.1, substeps=1, horizon=horizon)

    def loss(weights):
        def policy(state, params, carry):
            hidden = jnp.tanh(weights * state.altitude / 100.0 + state.velocity / 50.0)
            return jax.nn.sigmoid(jnp.mean(hidden * weights))[None], carry

        def accumulate(total, step, state, action, active):
            return total + state.altitude

        _, total = reduce_rollout(
            VEHICLE, sim, policy, start, params, (), accumulate, jnp.zeros(())
        )
        return total

    weights = jax.random.normal(jax.random.PRNGKey(0), (width,))
    compiled = jax.jit(jax.grad(loss)).lower(weights).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:
        pytest.skip("this backend reports no memory analysis")
    assert analysis.temp_size_in_bytes < horizon * width * 4 / 4
    assert np.all(np.isfinite(compiled(weights)))


def plain_reduce_rollout(sim, policy, start, params, accumulate, summary):
    """The control loop of ``reduce_rollout`` without a checkpoint on the controller."""

    def body(carry, _):
        state, summary, step = carry
        action, _ = policy(state.vehicle, params, ())
        summary = accumulate(summary, step, state.vehicle, action, ~state.touched_down)
        state = control_step(VEHICLE, sim, state, action, params)
        return (state, summary, step + 1), None

    carry = (initial_sim_state(start), summary, jnp.zeros((), jnp.int32))
    (final, summary, _), _ = jax.lax.scan(body, carry, None, length=sim.horizon)
    return final, summary


@pytest.mark.parametrize("remat", ["none", "step", "nested"])
def test_checkpointed_controller_keeps_gradient_float64(x64, remat):
    start = make_vertical_state(150.0, -50.0, 30_000.0, dtype=jnp.float64)
    params = falcon9_like(dtype=jnp.float64)
    sim = SimConfig(control_dt=0.2, substeps=2, horizon=HORIZON, remat=remat)
    weights = jax.random.normal(jax.random.PRNGKey(2), (16,), jnp.float64)

    def policy_of(weights):
        def policy(state, params, carry):
            hidden = jnp.tanh(weights * state.altitude / 100.0 + state.velocity / 50.0)
            return jax.nn.sigmoid(jnp.sum(hidden * weights))[None], carry

        return policy

    def accumulate(total, step, state, action, active):
        return total + jnp.where(active, state.velocity**2 + 10.0 * action[0], 0.0)

    def checked(weights, start):
        final, total = reduce_rollout(
            VEHICLE, sim, policy_of(weights), start, params, (), accumulate, jnp.zeros(())
        )
        return total + final.vehicle.mass

    def plain(weights, start):
        final, total = plain_reduce_rollout(
            sim, policy_of(weights), start, params, accumulate, jnp.zeros(())
        )
        return total + final.vehicle.mass

    expected, expected_grads = jax.value_and_grad(plain, (0, 1))(weights, start)
    actual, actual_grads = jax.jit(jax.value_and_grad(checked, (0, 1)))(weights, start)

    np.testing.assert_allclose(actual, expected, rtol=1e-12)
    for got, want in zip(
        jax.tree_util.tree_leaves(actual_grads),
        jax.tree_util.tree_leaves(expected_grads),
        strict=True,
    ):
        assert np.any(want != 0.0)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)

    # Central finite difference along one direction of the controller's weights.
    direction = jax.random.normal(jax.random.PRNGKey(3), weights.shape, jnp.float64)
    step = 1e-6
    difference = (
        checked(weights + step * direction, start) - checked(weights - step * direction, start)
    ) / (2.0 * step)
    np.testing.assert_allclose(jnp.dot(actual_grads[0], direction), difference, rtol=1e-5)


def rigid_body_setup():
    """Return a 6-DOF booster with drag and a steady wind, simulated with RK4 in 2 sub-steps.

    Its feet start 0.3 m up and fall at 5 m/s, so it touches down inside the first
    control step."""
    vehicle = RigidBody(drag=True)
    params = falcon9_like_rigid_body(drag=True, dtype=jnp.float64)
    tilt = rotation.from_axis_angle(jnp.array([0.3, 1.0, 0.0]), jnp.array(0.05))
    state = make_rigid_body_state(
        position=(1.0, -2.0, 0.0),
        velocity=(0.5, -0.3, -5.0),
        mass=30_000.0,
        quaternion=tilt,
        angular_velocity=(0.01, -0.02, 0.005),
        wind=steady_wind(jnp.array([3.0, -1.0])),
        dtype=jnp.float64,
    )
    height = vehicle.height(state, params)
    state = state.replace(position=state.position.at[2].add(0.3 - height))
    sim = SimConfig(control_dt=0.1, substeps=2, horizon=1)
    return vehicle, params, sim, state


def plain_control_step(vehicle, sim, state, action, params):
    """The sub-steps of ``control_step`` as a plain loop of ``physics_step``, without
    ``jax.checkpoint``."""
    for _ in range(sim.substeps):
        state = physics_step(vehicle, sim.integrator, state, action, params, sim.physics_dt)
    return state


def test_checkpointed_substeps_keep_gradient_float64(x64):
    vehicle, params, sim, state = rigid_body_setup()
    action = jnp.array([0.6, 0.02, -0.03])
    weights = jax.random.normal(jax.random.PRNGKey(1), (16,), jnp.float64)

    def summary(step):
        def loss(state, action):
            final = step(vehicle, sim, initial_sim_state(state), action, params)
            leaves = [final.vehicle.position, final.vehicle.velocity, final.vehicle.quaternion]
            leaves += [final.vehicle.angular_velocity, final.vehicle.mass[None]]
            leaves += [final.touchdown_time[None], final.time[None]]
            return jnp.dot(weights, jnp.concatenate(leaves)), final

        return loss

    checked = jax.jit(jax.value_and_grad(summary(control_step), (0, 1), has_aux=True))
    plain = jax.jit(jax.value_and_grad(summary(plain_control_step), (0, 1), has_aux=True))
    (value, final), grads = checked(state, action)
    (expected_value, _), expected_grads = plain(state, action)

    assert bool(final.touched_down)
    assert float(value) == pytest.approx(float(expected_value), rel=1e-12)
    for actual, expected in zip(
        jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(expected_grads), strict=True
    ):
        assert bool(jnp.all(jnp.isfinite(actual)))
        np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-12)


def test_control_step_checkpoints_physics_steps():
    vehicle, params, sim, state = rigid_body_setup()
    action = jnp.array([0.6, 0.02, -0.03])
    jaxpr = jax.make_jaxpr(
        lambda s: control_step(vehicle, sim, initial_sim_state(s), action, params)
    )(state)
    primitives = {equation.primitive.name for equation in _all_equations(jaxpr.jaxpr)}
    # jax 0.10.2 names the primitive of jax.checkpoint "remat2" in a jaxpr.
    assert primitives & {"checkpoint", "remat2"}


def _all_equations(jaxpr):
    """Yield every equation of ``jaxpr`` and of the jaxprs nested in its parameters."""
    for equation in jaxpr.eqns:
        yield equation
        for value in equation.params.values():
            inner = getattr(value, "jaxpr", value)
            if isinstance(inner, jax.extend.core.Jaxpr):
                yield from _all_equations(inner)
