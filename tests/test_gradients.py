"""Gradients through rollouts: central finite differences in float64, and finiteness at
the places where the dynamics or the controller are not smooth (hover at zero speed,
throttle saturation, drag at zero speed, a start on the ground)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffland.controllers import VerticalPID, bounded_action
from diffland.dynamics import (
    SimConfig,
    VerticalLander,
    apollo_lm_like,
    falcon9_like,
    make_vertical_state,
    open_loop_policy,
    rollout,
)
from diffland.training import LandingCost, LandingTask, controller_rollout, init_controller
from diffland.training.cost import landing_cost_terms

VEHICLE = VerticalLander()
PID_GAINS = ("kp", "ki", "kd", "decel_fraction", "touchdown_speed")


def float64_state(altitude, velocity, mass):
    return make_vertical_state(altitude, velocity, mass, dtype=jnp.float64)


def all_finite(tree):
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(tree))


def total_cost(vehicle, trajectory, params):
    terms, _ = landing_cost_terms(vehicle, trajectory, params, LandingCost())
    return sum(terms.values())


# -- finite differences ------------------------------------------------------------------

LANDING_SIM = SimConfig(control_dt=0.05, substeps=1, horizon=360)
"""18 s at 0.05 s per step. The hand-tuned PID lands at about 16.6 s from FALCON_START."""
FALCON_START = (2000.0, -250.0, 31_000.0)
PID = VerticalPID(VEHICLE, 0.05)


@jax.jit
def pid_touchdown_speed(variables, start, params):
    """Return the touchdown speed of a closed-loop PID landing and the touchdown flag."""
    task = LandingTask(VEHICLE, params, LANDING_SIM)
    trajectory = controller_rollout(task, PID, variables, start)
    return VEHICLE.touchdown_speed(trajectory.final.vehicle, params), trajectory.final.touched_down


pid_touchdown_speed_grad = jax.jit(
    jax.grad(lambda *args: pid_touchdown_speed(*args)[0], argnums=(0, 1))
)


@pytest.fixture
def falcon_landing(x64):
    """Return the hand-tuned PID variables, the start state and the Falcon-9-like params."""
    params = falcon9_like(dtype=jnp.float64)
    start = float64_state(*FALCON_START)
    task = LandingTask(VEHICLE, params, LANDING_SIM)
    variables = init_controller(task, PID, jax.random.PRNGKey(0), start)
    return variables, start, params


def test_touchdown_speed_grad_altitude_fd(falcon_landing):
    variables, start, params = falcon_landing
    speed, touched = pid_touchdown_speed(variables, start, params)
    assert bool(touched)
    assert 0.1 < float(speed) < 10.0

    _, start_grad = pid_touchdown_speed_grad(variables, start, params)

    step = 1e-2
    plus, _ = pid_touchdown_speed(variables, start.replace(altitude=start.altitude + step), params)
    minus, _ = pid_touchdown_speed(variables, start.replace(altitude=start.altitude - step), params)
    finite_difference = (float(plus) - float(minus)) / (2.0 * step)
    assert float(start_grad.altitude) == pytest.approx(finite_difference, rel=1e-5)
    assert abs(finite_difference) > 1e-3


@pytest.mark.parametrize("gain", PID_GAINS)
def test_touchdown_speed_grad_pid_gain_fd(falcon_landing, gain):
    variables, start, params = falcon_landing

    grads, _ = pid_touchdown_speed_grad(variables, start, params)

    def shifted(delta):
        raw = dict(variables["params"])
        raw[gain] = raw[gain] + delta
        return float(pid_touchdown_speed({"params": raw}, start, params)[0])

    step = 1e-4
    finite_difference = (shifted(step) - shifted(-step)) / (2.0 * step)
    assert float(grads["params"][gain]) == pytest.approx(finite_difference, rel=1e-5)
    assert abs(finite_difference) > 1e-3


@pytest.mark.parametrize(("name", "step"), [("max_thrust", 10.0), ("isp", 1e-2)])
def test_touchdown_speed_grad_vehicle_param_fd(falcon_landing, name, step):
    # System identification differentiates through the vehicle parameters.
    variables, start, params = falcon_landing
    param_grad = jax.jit(jax.grad(lambda p: pid_touchdown_speed(variables, start, p)[0]))(params)

    def shifted(delta):
        changed = params.replace(**{name: getattr(params, name) + delta})
        return float(pid_touchdown_speed(variables, start, changed)[0])

    finite_difference = (shifted(step) - shifted(-step)) / (2.0 * step)
    assert float(getattr(param_grad, name)) == pytest.approx(finite_difference, rel=1e-5)
    assert abs(finite_difference) > 1e-8


def test_vmapped_params_match_single_rollouts(falcon_landing):
    # Randomised parameters: one vmapped call equals separate calls per parameter set.
    variables, start, params = falcon_landing
    thrusts = jnp.array([830.0e3, 845.0e3, 860.0e3], jnp.float64)
    batch = jax.vmap(lambda t: params.replace(max_thrust=t))(thrusts)

    batched, _ = jax.vmap(lambda p: pid_touchdown_speed(variables, start, p))(batch)

    for index, thrust in enumerate(thrusts):
        single, _ = pid_touchdown_speed(variables, start, params.replace(max_thrust=thrust))
        assert float(batched[index]) == pytest.approx(float(single), rel=1e-12)
    assert len({round(float(speed), 9) for speed in batched}) == 3


# -- finiteness where the model is not smooth --------------------------------------------

SHORT_SIM = SimConfig(control_dt=0.05, substeps=1, horizon=40)


@functools.partial(jax.jit, static_argnums=0)
def open_loop_grads(vehicle, throttles, start, params):
    """Return the gradients of a loss on the final state and the landing cost with respect
    to the throttle sequence, the start state and the vehicle parameters."""

    def loss(throttles, start, params):
        policy = open_loop_policy(throttles)
        step_index = jnp.zeros((), jnp.int32)
        trajectory = rollout(vehicle, SHORT_SIM, policy, start, params, step_index)
        final = trajectory.final.vehicle
        return total_cost(vehicle, trajectory, params) + final.velocity**2 + final.altitude

    return jax.grad(loss, argnums=(0, 1, 2))(throttles, start, params)


@jax.jit
def pid_cost_grads(variables, start, params):
    """Return the first action of a short closed-loop PID rollout and the gradients of a
    loss on its landing cost and final speed with respect to the variables and the start."""

    def loss(variables, start):
        task = LandingTask(VEHICLE, params, SHORT_SIM)
        trajectory = controller_rollout(task, PID, variables, start)
        cost = total_cost(VEHICLE, trajectory, params)
        return cost + trajectory.final.vehicle.velocity**2, trajectory.actions[0, 0]

    (_, first_action), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        variables, start
    )
    return first_action, grads


def pid_variables(params, start):
    task = LandingTask(VEHICLE, params, SHORT_SIM)
    return init_controller(task, PID, jax.random.PRNGKey(0), start)


def test_hover_open_loop_gradients_finite(x64):
    # Apollo-LM-like lander at rest 50 m above the Moon, throttle set to the hover value.
    params = apollo_lm_like(dtype=jnp.float64)
    start = float64_state(50.0, 0.0, 10_000.0)
    hover = 10_000.0 * float(params.gravity) / float(params.max_thrust)
    throttles = jnp.full((SHORT_SIM.horizon, 1), hover, jnp.float64)

    grads = open_loop_grads(VEHICLE, throttles, start, params)

    assert all_finite(grads)
    assert float(jnp.linalg.norm(grads[0])) > 0.0


def test_hover_pid_gradients_finite(x64):
    params = apollo_lm_like(dtype=jnp.float64)
    start = float64_state(50.0, 0.0, 10_000.0)

    _, grads = pid_cost_grads(pid_variables(params, start), start, params)

    assert all_finite(grads)


def test_ground_start_gradients_finite(x64):
    # A lander resting on the ground never crosses zero height; the crossing formula must
    # still give finite derivatives through its unused branch.
    params = apollo_lm_like(dtype=jnp.float64)
    start = float64_state(0.0, 0.0, 10_000.0)

    _, grads = pid_cost_grads(pid_variables(params, start), start, params)

    assert all_finite(grads)


@pytest.mark.parametrize(
    ("altitude", "velocity", "bound"),
    [(3000.0, -50.0, "throttle_min"), (200.0, -250.0, "throttle_max")],
    ids=["below-min", "above-max"],
)
def test_saturated_pid_gradients_finite(x64, altitude, velocity, bound):
    # Far above the braking profile the PID commands far below minimum throttle, and far
    # below it far above maximum throttle, so the first action sits at the bound.
    params = falcon9_like(dtype=jnp.float64)
    start = float64_state(altitude, velocity, 31_000.0)

    first_action, grads = pid_cost_grads(pid_variables(params, start), start, params)

    assert float(first_action) == pytest.approx(float(getattr(params, bound)), abs=1e-6)
    assert all_finite(grads)


@pytest.mark.parametrize("command", [-1.0e6, -50.0, 50.0, 1.0e6])
def test_bounded_action_far_beyond_bounds(x64, command):
    low, high = jnp.float64(0.4), jnp.float64(1.0)

    value, slope = jax.value_and_grad(bounded_action)(jnp.float64(command), low, high)

    assert np.isfinite(float(slope))
    assert float(slope) >= 0.0
    # Fully saturated, mid - half rounds to one unit in the last place below 0.4, which
    # the vehicle's clip of the throttle absorbs.
    assert float(low) - 1e-12 <= float(value) <= float(high) + 1e-12


def test_bounded_action_slope_values(x64):
    # The slope of mid + half tanh((u - mid) / half) is 1 - tanh^2((u - mid) / half): 1 at
    # the middle, 1 - tanh(1)^2 = 0.41997 at a bound and 1 - tanh(2)^2 = 0.07065 one
    # half-range beyond it.
    low, high = jnp.float64(0.4), jnp.float64(1.0)
    slope = jax.grad(bounded_action)

    assert float(slope(jnp.float64(0.7), low, high)) == pytest.approx(1.0, rel=1e-14)
    assert float(slope(high, low, high)) == pytest.approx(0.419974, rel=1e-5)
    assert float(slope(low, low, high)) == pytest.approx(0.419974, rel=1e-5)
    assert float(slope(jnp.float64(1.3), low, high)) == pytest.approx(0.070651, rel=1e-4)


@pytest.mark.parametrize("throttle", [-2.0, 0.0, 1.5, 3.0])
def test_thrust_flat_outside_throttle_bounds(x64, throttle):
    # Actions outside [throttle_min, throttle_max] are clipped by the vehicle, so they
    # have no effect on the acceleration and a zero (not NaN) derivative.
    params = falcon9_like(dtype=jnp.float64)
    state = float64_state(3000.0, -100.0, 31_000.0)

    def acceleration(action):
        return VEHICLE.derivative(state, action, params).velocity

    derivative = jax.grad(acceleration)(jnp.array([throttle], jnp.float64))

    np.testing.assert_array_equal(derivative, 0.0)


# -- drag --------------------------------------------------------------------------------


@pytest.mark.parametrize("velocity", [0.0, -100.0, 35.0])
def test_drag_acceleration_velocity_derivative(x64, velocity):
    # dv/dt contains -0.5 rho(h) Cd A v |v| / m, whose derivative in v is -rho Cd A |v| / m.
    vehicle = VerticalLander(drag=True)
    params = falcon9_like(drag=True, dtype=jnp.float64)
    state = float64_state(1000.0, velocity, 31_000.0)
    action = jnp.array([0.6], jnp.float64)

    def acceleration(velocity):
        return vehicle.derivative(state.replace(velocity=velocity), action, params).velocity

    derivative = float(jax.grad(acceleration)(jnp.float64(velocity)))

    density = 1.225 * np.exp(-1000.0 / 8500.0)
    expected = -density * 0.8 * 10.5 * abs(velocity) / 31_000.0
    assert np.isfinite(derivative)
    assert derivative == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_drag_rollout_from_rest_grad_finite(x64):
    # At 40 % throttle the 31 t stage lifts off slowly from rest, through zero speed.
    params = falcon9_like(drag=True, dtype=jnp.float64)
    start = float64_state(500.0, 0.0, 31_000.0)
    throttles = jnp.full((SHORT_SIM.horizon, 1), 0.4, jnp.float64)

    grads = open_loop_grads(VerticalLander(drag=True), throttles, start, params)

    assert all_finite(grads)
    assert float(grads[2].drag_coefficient) != 0.0
    assert float(grads[1].velocity) != 0.0
