"""The cascaded PID and NeuroPID of the planar and 6-DOF boosters."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffland.controllers.cascaded import (
    CASCADED_GAINS,
    CascadedGains,
    CascadedPID,
    NeuroCascadedPID,
)
from diffland.dynamics import (
    PlanarBooster,
    RigidBody,
    SimConfig,
    falcon9_like_planar,
    falcon9_like_rigid_body,
    make_planar_state,
    make_rigid_body_state,
    rotation,
)
from diffland.training import LandingTask, batch_rollout, init_controller
from diffland.training.cost import landing_cost_terms, landing_outcome

CONTROL_DT = 0.1


def planar_starts():
    """Two landing-burn starts: one beside the pad and tilted, one over it."""
    starts = [
        make_planar_state(x=30.0, z=2015.0, vx=-3.0, vz=-240.0, mass=32_000.0, pitch=0.03),
        make_planar_state(x=0.0, z=1815.0, vx=0.0, vz=-220.0, mass=32_000.0),
    ]
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *starts)


def rigid_starts():
    tilt = rotation.from_axis_angle(jnp.array([1.0, 1.0, 0.0]) / math.sqrt(2.0), 0.04)
    starts = [
        make_rigid_body_state(
            position=[20.0, -25.0, 2015.0],
            velocity=[-2.0, 2.0, -240.0],
            mass=30_000.0,
            quaternion=tilt,
            angular_velocity=[0.01, -0.01, 0.02],
        ),
        make_rigid_body_state(position=[0.0, 0.0, 1815.0], velocity=[0, 0, -220.0], mass=32_000.0),
    ]
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *starts)


CASES = {
    "planar": (PlanarBooster(), falcon9_like_planar, planar_starts),
    "6dof": (RigidBody(), falcon9_like_rigid_body, rigid_starts),
}


def task_for(case, horizon=250):
    vehicle, params, starts = CASES[case]
    sim = SimConfig(control_dt=CONTROL_DT, substeps=2, horizon=horizon)
    return LandingTask(vehicle, params(), sim), starts()


def first(tree):
    return jax.tree_util.tree_map(lambda x: x[0], tree)


@pytest.mark.parametrize("case", CASES)
def test_hand_tuned_cascade_lands_both_starts(case):
    task, starts = task_for(case)
    pid = CascadedPID(task.vehicle, CONTROL_DT)
    variables = init_controller(task, pid, jax.random.PRNGKey(0), first(starts))

    @jax.jit
    def outcomes(variables, starts):
        trajectory = batch_rollout(task, pid, variables, starts)
        return jax.vmap(lambda t: landing_outcome(task.vehicle, t, task.params, task.cost))(
            trajectory
        )

    outcome = outcomes(variables, starts)

    assert np.all(np.asarray(outcome.touched_down))
    assert np.all(np.asarray(outcome.success)), outcome


@pytest.mark.parametrize("action_features", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_neuro_cascade_initially_equals_cascade(case, action_features):
    task, starts = task_for(case)
    state = first(starts)
    pid = CascadedPID(task.vehicle, CONTROL_DT)
    neuro = NeuroCascadedPID(task.vehicle, CONTROL_DT, action_features=action_features)
    pid_variables = init_controller(task, pid, jax.random.PRNGKey(0), state)
    neuro_variables = init_controller(task, neuro, jax.random.PRNGKey(1), state)

    carry = pid.initial_carry()
    pid_action, _ = pid.apply(pid_variables, state, task.params, carry)
    neuro_action, _ = neuro.apply(neuro_variables, state, task.params, carry)

    assert pid_action.shape == (task.vehicle.action_size,)
    np.testing.assert_array_equal(np.asarray(neuro_action), np.asarray(pid_action))


def test_neuro_cascade_corrects_saturated_action():
    """A tilted start makes the cascade command a gimbal beyond its limit. A correction
    of one half range must still move the gimbal by that amount, clipped to the bounds,
    because it is added to the bounded action."""
    task, _ = task_for("planar")
    state = make_planar_state(x=0.0, z=1500.0, vx=0.0, vz=-200.0, mass=32_000.0, pitch=0.3)
    pid = CascadedPID(task.vehicle, CONTROL_DT)
    neuro = NeuroCascadedPID(task.vehicle, CONTROL_DT, hidden=(4,), correction_scale=1.0)
    pid_variables = init_controller(task, pid, jax.random.PRNGKey(0), state)
    variables = init_controller(task, neuro, jax.random.PRNGKey(1), state)
    carry = pid.initial_carry()
    command, _ = pid.apply(pid_variables, state, task.params, carry, method=CascadedPID.command)
    pid_action, _ = pid.apply(pid_variables, state, task.params, carry)
    low, high = (np.asarray(x) for x in task.vehicle.action_bounds(task.params))
    assert abs(float(command[1])) > high[1]  # the cascade saturates the gimbal

    output = variables["params"]["correction"]["Dense_1"]
    sign = -np.sign(float(command[1]))
    output["bias"] = jnp.array([0.0, 0.5 * sign])  # half of a half range, away from the bound
    action, _ = neuro.apply(variables, state, task.params, carry)

    half = 0.5 * (high[1] - low[1])
    expected = np.clip(float(pid_action[1]) + 0.5 * sign * half, low[1], high[1])
    np.testing.assert_allclose(float(action[1]), expected, rtol=1e-6)
    assert abs(float(action[1]) - float(pid_action[1])) > 0.4 * half
    np.testing.assert_allclose(float(action[0]), float(pid_action[0]), rtol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_neuro_cascade_network_sees_scaled_pid_action(case):
    """With action_features the network's input is the observation followed by the
    PID's bounded action mapped to [-1, 1] over the bounds. A correction computed by
    hand from the same weights must match."""
    task, starts = task_for(case)
    state = first(starts)
    pid = CascadedPID(task.vehicle, CONTROL_DT)
    neuro = NeuroCascadedPID(task.vehicle, CONTROL_DT, hidden=(5,), action_features=True)
    pid_variables = init_controller(task, pid, jax.random.PRNGKey(0), state)
    variables = init_controller(task, neuro, jax.random.PRNGKey(1), state)
    size = task.vehicle.action_size
    observation = np.asarray(task.vehicle.observation(state, task.params))
    network = variables["params"]["correction"]
    assert network["Dense_0"]["kernel"].shape == (observation.size + size, 5)
    rng = np.random.default_rng(0)
    network["Dense_1"]["kernel"] = jnp.asarray(rng.normal(0.0, 0.1, (5, size)), jnp.float32)

    carry = pid.initial_carry()
    pid_action, _ = pid.apply(pid_variables, state, task.params, carry)
    action, _ = neuro.apply(variables, state, task.params, carry)

    low, high = (np.asarray(x, np.float64) for x in task.vehicle.action_bounds(task.params))
    half = 0.5 * (high - low)
    scaled = (np.asarray(pid_action, np.float64) - 0.5 * (low + high)) / half
    inputs = np.concatenate([observation, scaled])
    hidden = np.tanh(inputs @ np.asarray(network["Dense_0"]["kernel"]))
    correction = hidden @ np.asarray(network["Dense_1"]["kernel"])
    expected = np.clip(
        np.asarray(pid_action) + neuro.correction_scale * half * correction, low, high
    )
    np.testing.assert_allclose(np.asarray(action), expected, rtol=1e-5, atol=1e-7)
    assert np.max(np.abs(np.asarray(action) - np.asarray(pid_action))) > 1e-4


def test_gains_round_trip_through_params():
    gains = CascadedGains(kp=5.0, position_gain=3.0, decel_fraction=0.6)
    task, starts = task_for("planar")
    pid = CascadedPID(task.vehicle, CONTROL_DT, gains=gains)
    variables = init_controller(task, pid, jax.random.PRNGKey(0), first(starts))

    recovered = pid.gains_from_params(variables["params"])

    for name in ("kp", "position_gain", "decel_fraction", "rate_gain"):
        assert getattr(recovered, name) == pytest.approx(getattr(gains, name), rel=1e-5), name


@pytest.mark.parametrize("name", ["kp", "attitude_gain", "decel_fraction"])
def test_invalid_gain_is_rejected_with_its_name(name):
    with pytest.raises(ValueError, match=name):
        CascadedGains(**{name: -1.0})


def test_decel_fraction_of_one_is_rejected():
    with pytest.raises(ValueError, match="decel_fraction"):
        CascadedGains(decel_fraction=1.0)


def test_gimbal_turns_the_nose_toward_the_pad():
    """A planar booster to the left of the pad (x < 0), upright and at rest sideways,
    needs to lean its nose towards +x, so the first gimbal command is positive."""
    task, _ = task_for("planar")
    state = make_planar_state(x=-40.0, z=1500.0, vx=0.0, vz=-150.0, mass=30_000.0)
    pid = CascadedPID(task.vehicle, CONTROL_DT)
    variables = init_controller(task, pid, jax.random.PRNGKey(0), state)

    action, _ = pid.apply(variables, state, task.params, pid.initial_carry())

    assert float(action[1]) > 0.0


def test_rcs_vehicle_gets_zero_torque_commands():
    vehicle = RigidBody(rcs=True)
    params = falcon9_like_rigid_body()
    task = LandingTask(vehicle, params, SimConfig(control_dt=CONTROL_DT))
    state = first(rigid_starts())
    pid = CascadedPID(vehicle, CONTROL_DT)
    variables = init_controller(task, pid, jax.random.PRNGKey(0), state)

    action, _ = pid.apply(variables, state, params, pid.initial_carry())

    assert action.shape == (6,)
    np.testing.assert_array_equal(np.asarray(action[3:]), 0.0)


@pytest.mark.parametrize("case", CASES)
def test_cost_gradient_reaches_gains_and_network(case):
    """The NeuroPID's cost gradient is finite and reaches both its PID gains and its
    network (whose output layer starts at zero, so only that layer's gradient is nonzero
    at first)."""
    vehicle, params, starts = CASES[case]
    task = LandingTask(vehicle, params(), SimConfig(control_dt=CONTROL_DT, horizon=40))
    starts = starts()
    controller = NeuroCascadedPID(vehicle, CONTROL_DT, hidden=(8,))
    variables = init_controller(task, controller, jax.random.PRNGKey(0), first(starts))

    def loss(params):
        trajectory = batch_rollout(task, controller, {"params": params}, starts)
        terms, _ = jax.vmap(lambda t: landing_cost_terms(task.vehicle, t, task.params, task.cost))(
            trajectory
        )
        return sum(jnp.mean(value) for value in terms.values())

    grads = jax.jit(jax.grad(loss))(variables["params"])

    leaves = jax.tree_util.tree_leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in leaves)
    assert float(jnp.abs(grads["pid"]["kp"])) > 0.0
    assert float(jnp.abs(grads["pid"]["position_gain"])) > 0.0
    output_layer = grads["correction"]["Dense_1"]["kernel"]
    assert float(jnp.linalg.norm(output_layer)) > 0.0


def test_default_gains_are_the_documented_ones():
    assert CASCADED_GAINS == CascadedGains()
    assert CASCADED_GAINS.position_gain == 6.0
    assert CASCADED_GAINS.velocity_gain == 4.0
