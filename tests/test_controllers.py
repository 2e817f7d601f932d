"""Controller behaviour: NeuroPID at initialisation, PID gains and memory, MLP bounds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffland.controllers import MLPPolicy, NeuroPID, PIDGains, VerticalPID
from diffland.dynamics import SimConfig, VerticalLander, falcon9_like, make_vertical_state
from diffland.training import LandingTask, batch_rollout, init_controller

VEHICLE = VerticalLander()
CONTROL_DT = 0.05
PID_GAIN_NAMES = ("kp", "ki", "kd", "decel_fraction", "touchdown_speed")
GAINS = PIDGains(kp=0.08, ki=0.01, kd=0.002, decel_fraction=0.6, touchdown_speed=1.5)


def landing_task(params, horizon=440):
    return LandingTask(
        VEHICLE, params, SimConfig(control_dt=CONTROL_DT, substeps=1, horizon=horizon)
    )


def start_batch(dtype=None):
    return make_vertical_state(
        [2000.0, 1600.0, 2800.0, 2300.0],
        [-250.0, -210.0, -290.0, -230.0],
        [31_000.0, 29_500.0, 33_000.0, 30_000.0],
        dtype=dtype,
    )


def first(tree):
    return jax.tree_util.tree_map(lambda x: x[0], tree)


def test_neuro_pid_initially_equals_pid():
    params = falcon9_like()
    task = landing_task(params)
    starts = start_batch()
    pid = VerticalPID(VEHICLE, CONTROL_DT, GAINS)
    neuro = NeuroPID(VEHICLE, CONTROL_DT, GAINS, hidden=(16, 16))
    pid_variables = init_controller(task, pid, jax.random.PRNGKey(0), first(starts))
    neuro_variables = init_controller(task, neuro, jax.random.PRNGKey(1), first(starts))

    pid_run = jax.jit(lambda s: batch_rollout(task, pid, pid_variables, s))(starts)
    neuro_run = jax.jit(lambda s: batch_rollout(task, neuro, neuro_variables, s))(starts)

    pid_actions = np.asarray(pid_run.actions)
    neuro_actions = np.asarray(neuro_run.actions)
    assert np.all(neuro_actions == pid_actions)
    assert np.all(np.asarray(neuro_run.final.vehicle.velocity) == pid_run.final.vehicle.velocity)
    assert np.all(np.asarray(pid_run.final.touched_down))
    # The actions vary, so the equality is not a comparison of two constants.
    assert np.ptp(pid_actions) > 0.3


def test_neuro_pid_correction_output_zero():
    params = falcon9_like()
    task = landing_task(params)
    start = first(start_batch())
    neuro = NeuroPID(VEHICLE, CONTROL_DT, GAINS, hidden=(16, 16))
    variables = init_controller(task, neuro, jax.random.PRNGKey(1), start)

    assert set(variables["params"]) == {"pid", "correction"}
    assert set(variables["params"]["pid"]) == set(PID_GAIN_NAMES)
    layers = variables["params"]["correction"]
    output = layers[sorted(layers)[-1]]
    np.testing.assert_array_equal(output["kernel"], 0.0)
    np.testing.assert_array_equal(output["bias"], 0.0)
    hidden_kernel = layers[sorted(layers)[0]]["kernel"]
    assert float(jnp.max(jnp.abs(hidden_kernel))) > 0.0


def test_pid_effective_gains_match_init():
    params = falcon9_like()
    task = landing_task(params)
    start = first(start_batch())
    pid = VerticalPID(VEHICLE, CONTROL_DT, GAINS)
    variables = init_controller(task, pid, jax.random.PRNGKey(0), start)

    gains = pid.apply(variables, method=VerticalPID.effective_gains)

    for name in PID_GAIN_NAMES:
        assert float(gains[name]) == pytest.approx(getattr(GAINS, name), rel=1e-5), name


def test_pid_raw_params_stay_constrained():
    # Any unconstrained value must map to positive gains and a braking fraction in (0, 1).
    params = falcon9_like()
    task = landing_task(params)
    start = first(start_batch())
    pid = VerticalPID(VEHICLE, CONTROL_DT, GAINS)
    variables = init_controller(task, pid, jax.random.PRNGKey(0), start)
    extreme = {"params": {name: jnp.float32(-30.0) for name in variables["params"]}}

    gains = pid.apply(extreme, method=VerticalPID.effective_gains)

    for name in ("kp", "ki", "kd", "touchdown_speed"):
        assert float(gains[name]) > 0.0, name
    assert 0.0 < float(gains["decel_fraction"]) < 1.0


@pytest.fixture
def hand_pid(x64):
    params = falcon9_like(dtype=jnp.float64)
    task = landing_task(params)
    start = make_vertical_state(2000.0, -250.0, 31_000.0, dtype=jnp.float64)
    pid = VerticalPID(VEHICLE, CONTROL_DT, GAINS)
    variables = init_controller(task, pid, jax.random.PRNGKey(0), start)
    return pid, variables, params


def test_pid_first_step_carry(hand_pid):
    # Inside the throttle bounds the integral grows by error * dt, and the first call has no
    # previous error, so no derivative kick.
    pid, variables, params = hand_pid
    state = make_vertical_state(1000.0, -150.0, 30_000.0, dtype=jnp.float64)
    carry = pid.initial_carry(jnp.float64)

    action, new_carry = pid.apply(variables, state, params, carry)
    command, _ = pid.apply(variables, state, params, carry, method=VerticalPID.command)

    a_max = 845.0e3 / 30_000.0 - 9.81
    v_ref = -np.sqrt(1.5**2 + 2.0 * 0.6 * a_max * 1000.0)
    error = v_ref + 150.0
    feedforward = 30_000.0 * (9.81 + 0.6 * a_max) / 845.0e3
    assert float(new_carry.previous_error) == pytest.approx(error, rel=1e-5)
    assert float(new_carry.integral) == pytest.approx(error * CONTROL_DT, rel=1e-5)
    assert bool(new_carry.started)
    assert float(command[0]) == pytest.approx(feedforward + 0.08 * error, rel=1e-5)
    assert 0.4 < float(action[0]) < 1.0


@pytest.mark.parametrize(
    ("altitude", "velocity"), [(200.0, -250.0), (3000.0, -50.0)], ids=["above-max", "below-min"]
)
def test_pid_integral_frozen_when_saturated(hand_pid, altitude, velocity):
    # Conditional integration: beyond a bound, an error pushing further out is not integrated.
    pid, variables, params = hand_pid
    state = make_vertical_state(altitude, velocity, 31_000.0, dtype=jnp.float64)
    carry = pid.initial_carry(jnp.float64).replace(integral=jnp.float64(3.0))

    command, new_carry = pid.apply(variables, state, params, carry, method=VerticalPID.command)

    assert float(command[0]) < 0.4 or float(command[0]) > 1.0
    assert float(new_carry.integral) == 3.0
    assert float(new_carry.previous_error) != 0.0


def test_pid_integral_clipped(hand_pid):
    pid, variables, params = hand_pid
    state = make_vertical_state(1000.0, -160.0, 30_000.0, dtype=jnp.float64)
    carry = pid.initial_carry(jnp.float64).replace(integral=jnp.float64(-500.0))

    _, new_carry = pid.apply(variables, state, params, carry, method=VerticalPID.command)

    assert float(new_carry.integral) == -pid.integral_limit


def test_mlp_policy_actions_inside_bounds():
    params = falcon9_like()
    task = landing_task(params, horizon=60)
    starts = start_batch()
    policy = MLPPolicy(VEHICLE, hidden=(16, 16))
    variables = init_controller(task, policy, jax.random.PRNGKey(3), first(starts))

    trajectory = jax.jit(lambda s: batch_rollout(task, policy, variables, s))(starts)

    actions = np.asarray(trajectory.actions)
    assert actions.shape == (4, 60, 1)
    assert actions.min() >= 0.4
    assert actions.max() <= 1.0
    assert policy.initial_carry() == ()
    assert np.ptp(actions) > 0.0
