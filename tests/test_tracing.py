"""Jitted entry points trace once when called again with arguments of the same shapes.

``chex.assert_max_traces(n=1)`` raises on a second trace, which a changed dtype, weak
type or pytree structure of an argument (for example a controller carry that comes back
different from how it went in) would cause.
"""

import chex
import jax
import jax.numpy as jnp
import pytest

from diffland.controllers import MLPPolicy, NeuroPID, VerticalPID
from diffland.dynamics import (
    SimConfig,
    VerticalLander,
    falcon9_like,
    initial_sim_state,
    make_vertical_state,
    physics_step,
)
from diffland.optimal import fuel_optimal_burn
from diffland.training import LandingTask, controller_rollout, init_controller

VEHICLE = VerticalLander()
CONTROL_DT = 0.05
SIM = SimConfig(control_dt=CONTROL_DT, substeps=1, horizon=50)
STARTS = [(2000.0, -250.0, 31_000.0), (1700.0, -215.0, 29_000.0), (2900.0, -290.0, 33_000.0)]


def start_state(values):
    return make_vertical_state(*values, dtype=jnp.float32)


def controllers():
    return {
        "pid": VerticalPID(VEHICLE, CONTROL_DT),
        "neuro_pid": NeuroPID(VEHICLE, CONTROL_DT, hidden=(8, 8)),
        "mlp": MLPPolicy(VEHICLE, hidden=(8, 8)),
    }


@pytest.mark.parametrize("name", ["pid", "neuro_pid", "mlp"])
def test_controller_apply_traces_once(name):
    controller = controllers()[name]
    params = falcon9_like()
    task = LandingTask(VEHICLE, params, SIM)
    state = start_state(STARTS[0])
    variables = init_controller(task, controller, jax.random.PRNGKey(0), state)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def act(variables, state, params, carry):
        return controller.apply(variables, state, params, carry)

    carry = controller.initial_carry(jnp.float32)
    actions = []
    for values in STARTS:
        action, carry = act(variables, start_state(values), params, carry)
        actions.append(float(action[0]))

    assert len(set(actions)) == 3


@pytest.mark.parametrize("name", ["pid", "mlp"])
def test_rollout_traces_once(name):
    controller = controllers()[name]
    params = falcon9_like()
    task = LandingTask(VEHICLE, params, SIM)
    variables = init_controller(task, controller, jax.random.PRNGKey(0), start_state(STARTS[0]))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(variables, state):
        return controller_rollout(task, controller, variables, state).final.vehicle.velocity

    velocities = [float(run(variables, start_state(values))) for values in STARTS]

    assert len(set(velocities)) == 3


def test_physics_step_traces_once():
    params = falcon9_like()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def advance(sim, action):
        return physics_step(VEHICLE, SIM.integrator, sim, action, params, SIM.physics_dt)

    sim = initial_sim_state(start_state(STARTS[0]))
    for throttle in (0.5, 0.8, 1.0):
        sim = advance(sim, jnp.array([throttle], jnp.float32))

    assert float(sim.time) == pytest.approx(3 * SIM.physics_dt)


def test_fuel_optimal_burn_traces_once(x64):
    params = falcon9_like(dtype=jnp.float64)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def solve(state, params):
        return fuel_optimal_burn(VEHICLE, state, params)

    switch_times = [
        float(solve(make_vertical_state(*values, dtype=jnp.float64), params).switch_time)
        for values in STARTS
    ]

    assert len(set(switch_times)) == 3


def test_trace_guard_detects_retrace():
    # The guard itself must fire when a dtype change forces a second trace.
    @jax.jit
    @chex.assert_max_traces(n=1)
    def double(x):
        return 2.0 * x

    double(jnp.ones(3, jnp.float32))
    with pytest.raises(AssertionError, match="traced > 1 times"):
        double(jnp.ones(3, jnp.int32))
