"""Vertical-lander dynamics against closed-form solutions, in float64.

The analytic references are the equations of motion in ``diffland.dynamics.vertical``:
``dh/dt = v``, ``dv/dt = T / m - g``, ``dm/dt = -T / (Isp g0)`` with ``T = 0`` at the dry
mass. Under constant thrust their solution is the rocket equation with gravity loss,
``v(t) = v0 - g t + c ln(m0 / m(t))`` with ``c = Isp g0`` and ``m(t) = m0 - mdot t``.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffland.controllers import VerticalPID
from diffland.dynamics import (
    RK4,
    STANDARD_GRAVITY,
    Integrator,
    SemiImplicitEuler,
    SimConfig,
    VerticalLander,
    falcon9_like,
    initial_sim_state,
    make_vertical_params,
    make_vertical_state,
    open_loop_policy,
    physics_step,
    rollout,
)
from diffland.training import LandingTask, batch_rollout, controller_rollout, init_controller

GRAVITY = 9.81
VEHICLE = VerticalLander()


def lander_params(**overrides):
    """Return float64 parameters of a Falcon-9-like stage, with ``overrides`` applied."""
    values = dict(
        gravity=GRAVITY,
        max_thrust=845.0e3,
        throttle_min=0.4,
        throttle_max=1.0,
        isp=282.0,
        dry_mass=25_600.0,
    )
    values.update(overrides)
    return make_vertical_params(**values, dtype=jnp.float64)


def float64_state(altitude, velocity, mass):
    return make_vertical_state(altitude, velocity, mass, dtype=jnp.float64)


@functools.partial(jax.jit, static_argnums=(0, 1))
def open_loop_rollout(vehicle, config, throttles, state, params):
    """Roll out ``throttles`` (shape ``(steps, 1)``), holding the last one when used up."""
    step_index = jnp.zeros((), jnp.int32)
    return rollout(vehicle, config, open_loop_policy(throttles), state, params, step_index)


def constant_throttle(value):
    return jnp.full((1, 1), value, jnp.float64)


def sample_times(config):
    """Return the start time of every control step and the end time of the rollout."""
    starts = config.control_dt * np.arange(config.horizon)
    return starts, config.duration


# -- free fall: the engine is cut because only dry mass is left -------------------------


def test_free_fall_rk4_exact(x64):
    params = lander_params(dry_mass=30_000.0)
    start = float64_state(1000.0, 0.0, 30_000.0)
    config = SimConfig(control_dt=0.5, substeps=1, horizon=10, integrator=RK4())

    trajectory = open_loop_rollout(VEHICLE, config, constant_throttle(1.0), start, params)

    times, end = sample_times(config)
    np.testing.assert_allclose(
        trajectory.states.altitude, 1000.0 - 0.5 * GRAVITY * times**2, rtol=1e-13
    )
    np.testing.assert_allclose(trajectory.states.velocity, -GRAVITY * times, atol=1e-12)
    final = trajectory.final.vehicle
    assert float(final.altitude) == pytest.approx(1000.0 - 0.5 * GRAVITY * end**2, rel=1e-13)
    assert float(final.velocity) == pytest.approx(-GRAVITY * end, rel=1e-13)
    assert not bool(trajectory.final.touched_down)


def test_free_fall_dry_mass_no_mass_flow(x64):
    params = lander_params(dry_mass=30_000.0)
    start = float64_state(1000.0, 0.0, 30_000.0)
    config = SimConfig(control_dt=0.5, substeps=2, horizon=10)

    trajectory = open_loop_rollout(VEHICLE, config, constant_throttle(1.0), start, params)

    assert np.all(np.asarray(trajectory.states.mass) == 30_000.0)
    assert float(trajectory.final.vehicle.mass) == 30_000.0


def test_free_fall_semi_implicit_euler(x64):
    # Semi-implicit Euler moves the altitude with the updated velocity, so after n steps
    # h_n = h0 - g dt^2 n (n + 1) / 2 = h0 - g t_n (t_n + dt) / 2, while v_n = -g t_n exactly.
    params = lander_params(dry_mass=30_000.0)
    start = float64_state(1000.0, 0.0, 30_000.0)
    dt = 0.5
    config = SimConfig(control_dt=dt, substeps=1, horizon=10, integrator=SemiImplicitEuler())

    trajectory = open_loop_rollout(VEHICLE, config, constant_throttle(1.0), start, params)

    times, _ = sample_times(config)
    expected = 1000.0 - 0.5 * GRAVITY * times * (times + dt)
    np.testing.assert_allclose(trajectory.states.altitude, expected, rtol=1e-13)
    np.testing.assert_allclose(trajectory.states.velocity, -GRAVITY * times, atol=1e-12)


def test_thrust_stops_at_dry_mass(x64):
    # 50 kg of propellant lasts 50 / mdot = 0.16 s at full thrust, and then the stage falls.
    params = lander_params()
    start = float64_state(5000.0, 0.0, 25_650.0)
    dt = 0.1
    config = SimConfig(control_dt=dt, substeps=1, horizon=20, integrator=RK4())

    trajectory = open_loop_rollout(VEHICLE, config, constant_throttle(1.0), start, params)

    masses = np.asarray(trajectory.states.mass)
    assert masses.min() >= 25_600.0
    assert float(trajectory.final.vehicle.mass) == 25_600.0
    velocities = np.append(trajectory.states.velocity, trajectory.final.vehicle.velocity)
    late_changes = np.diff(velocities)[5:]
    np.testing.assert_allclose(late_changes, -GRAVITY * dt, rtol=1e-12)


# -- constant throttle with a burning mass -----------------------------------------------


def rocket_solution(time, altitude0, velocity0, mass0, thrust, params):
    """Return the exact altitude, velocity and mass after ``time`` s of constant thrust."""
    exhaust = float(params.isp) * STANDARD_GRAVITY
    flow = thrust / exhaust
    mass = mass0 - flow * time
    log_ratio = np.log(mass0 / mass)
    velocity = velocity0 - GRAVITY * time + exhaust * log_ratio
    # Integral of -ln(1 - k s) over [0, t] is t + (1 - k t) ln(1 - k t) / k with k = mdot / m0.
    k = flow / mass0
    lost = time + (1.0 - k * time) * np.log(1.0 - k * time) / k
    altitude = altitude0 + velocity0 * time - 0.5 * GRAVITY * time**2 + exhaust * lost
    return altitude, velocity, mass


def test_constant_throttle_rocket_equation(x64):
    params = lander_params()
    start = float64_state(5000.0, -100.0, 31_000.0)
    config = SimConfig(control_dt=0.1, substeps=1, horizon=100, integrator=RK4())

    trajectory = open_loop_rollout(VEHICLE, config, constant_throttle(0.7), start, params)

    times, _ = sample_times(config)
    altitude, velocity, mass = rocket_solution(
        times, 5000.0, -100.0, 31_000.0, 0.7 * 845.0e3, params
    )
    np.testing.assert_allclose(trajectory.states.mass, mass, rtol=1e-13)
    np.testing.assert_allclose(trajectory.states.velocity, velocity, rtol=0, atol=1e-8)
    np.testing.assert_allclose(trajectory.states.altitude, altitude, rtol=1e-12)
    assert float(mass[-1]) < 29_000.0


@pytest.mark.parametrize(
    ("integrator", "order"), [(SemiImplicitEuler(), 1.0), (RK4(), 4.0)], ids=["euler", "rk4"]
)
def test_integrator_convergence_order(x64, integrator, order):
    # A 40 s full-thrust climb burns 82 % of the mass, so the 1 / m(t) term grows fast and
    # RK4 errors at dt = 2 ... 0.25 s stay far above float64 round-off.
    params = lander_params(max_thrust=1.0e6, isp=100.0, dry_mass=5000.0)
    duration = 40.0
    thrust = 1.0e6
    exact_altitude, exact_velocity, _ = rocket_solution(
        duration, 1000.0, 0.0, 50_000.0, thrust, params
    )
    start = float64_state(1000.0, 0.0, 50_000.0)

    velocity_errors, altitude_errors = [], []
    for dt in (2.0, 1.0, 0.5, 0.25):
        steps = int(round(duration / dt))
        config = SimConfig(control_dt=dt, substeps=1, horizon=steps, integrator=integrator)
        final = open_loop_rollout(VEHICLE, config, constant_throttle(1.0), start, params).final
        assert not bool(final.touched_down)
        velocity_errors.append(abs(float(final.vehicle.velocity) - exact_velocity))
        altitude_errors.append(abs(float(final.vehicle.altitude) - exact_altitude))

    velocity_orders = np.log2(np.array(velocity_errors[:-1]) / np.array(velocity_errors[1:]))
    altitude_orders = np.log2(np.array(altitude_errors[:-1]) / np.array(altitude_errors[1:]))
    np.testing.assert_allclose(velocity_orders[-1], order, atol=0.1)
    np.testing.assert_allclose(altitude_orders[-1], order, atol=0.1)
    assert np.all(velocity_orders > order - 0.2)
    assert np.all(altitude_orders > order - 0.2)


def test_tsiolkovsky_any_throttle_sequence(x64):
    # With gravity near zero, delta-v = Isp g0 ln(m0 / m1) whatever the throttle history.
    params = lander_params(gravity=1e-9)
    start = float64_state(1000.0, 0.0, 31_000.0)
    config = SimConfig(control_dt=0.2, substeps=2, horizon=50, integrator=RK4())
    phase = np.linspace(0.0, 3.0 * np.pi, config.horizon)
    throttles = jnp.asarray(0.45 + 0.5 * np.sin(phase) ** 2, jnp.float64)[:, None]

    trajectory = open_loop_rollout(VEHICLE, config, throttles, start, params)

    final = trajectory.final.vehicle
    exhaust = 282.0 * STANDARD_GRAVITY
    gravity_loss = 1e-9 * config.duration
    expected = exhaust * np.log(31_000.0 / float(final.mass)) - gravity_loss
    assert float(final.velocity) == pytest.approx(expected, rel=1e-10)
    assert float(final.mass) < 29_000.0
    assert len(np.unique(np.asarray(trajectory.actions))) > 10


# -- touchdown ---------------------------------------------------------------------------

FREE_FALL_STARTS = [(100.0, -3.0), (37.5, 0.0), (12.0, 8.0), (500.0, -60.0)]


def free_fall_touchdown(altitude, velocity):
    """Return the exact touchdown velocity and time of a free fall from (h0, v0)."""
    speed = np.sqrt(velocity**2 + 2.0 * GRAVITY * altitude)
    return -speed, (velocity + speed) / GRAVITY


def free_fall_rollout(altitude, velocity, dt=1.0, horizon=15):
    params = lander_params(dry_mass=30_000.0)
    start = float64_state(altitude, velocity, 30_000.0)
    config = SimConfig(control_dt=dt, substeps=1, horizon=horizon, integrator=RK4())
    return open_loop_rollout(VEHICLE, config, constant_throttle(0.5), start, params)


@pytest.mark.parametrize(("altitude", "velocity"), FREE_FALL_STARTS)
def test_touchdown_velocity_and_time_exact(x64, altitude, velocity):
    # The quadratic fit of the height is exact for constant acceleration, so a 1 s step
    # must still give the analytic crossing.
    trajectory = free_fall_rollout(altitude, velocity)

    expected_velocity, expected_time = free_fall_touchdown(altitude, velocity)
    assert bool(trajectory.final.touched_down)
    assert float(trajectory.final.vehicle.velocity) == pytest.approx(expected_velocity, rel=1e-12)
    assert float(trajectory.final.touchdown_time) == pytest.approx(expected_time, rel=1e-12)


def test_touchdown_altitude_is_ground(x64):
    trajectory = free_fall_rollout(100.0, -3.0)

    assert float(trajectory.final.vehicle.altitude) == pytest.approx(0.0, abs=1e-6)


def test_state_frozen_after_touchdown(x64):
    trajectory = free_fall_rollout(100.0, -3.0)

    _, touchdown_time = free_fall_touchdown(100.0, -3.0)
    landed_step = int(np.ceil(touchdown_time))
    active = np.asarray(trajectory.active)
    assert np.all(active[:landed_step])
    assert not np.any(active[landed_step:])

    final = trajectory.final.vehicle
    for field in ("altitude", "velocity", "mass"):
        after = np.asarray(getattr(trajectory.states, field))[landed_step:]
        np.testing.assert_array_equal(after, float(getattr(final, field)))
    assert float(trajectory.final.time) == pytest.approx(15.0)


def test_no_touchdown_time_is_rollout_end(x64):
    trajectory = free_fall_rollout(5000.0, 0.0, dt=0.5, horizon=8)

    assert not bool(trajectory.final.touched_down)
    assert float(trajectory.final.touchdown_time) == pytest.approx(4.0, rel=1e-14)
    assert np.all(np.asarray(trajectory.active))


# -- batching ----------------------------------------------------------------------------


def test_vmapped_rollout_matches_loop(x64):
    params = falcon9_like(dtype=jnp.float64)
    task = LandingTask(VEHICLE, params, SimConfig(control_dt=0.05, substeps=1, horizon=120))
    controller = VerticalPID(VEHICLE, 0.05)
    starts = float64_state(
        [2000.0, 1500.0, 2600.0, 900.0, 3000.0, 1800.0],
        [-250.0, -200.0, -280.0, -120.0, -300.0, -210.0],
        [31_000.0, 29_000.0, 33_500.0, 27_000.0, 34_000.0, 30_500.0],
    )
    first = jax.tree_util.tree_map(lambda x: x[0], starts)
    variables = init_controller(task, controller, jax.random.PRNGKey(0), first)

    batched = jax.jit(lambda s: batch_rollout(task, controller, variables, s))(starts)
    single = jax.jit(lambda s: controller_rollout(task, controller, variables, s))

    for index in range(6):
        start = jax.tree_util.tree_map(lambda x, i=index: x[i], starts)
        expected = single(start)
        actual = jax.tree_util.tree_map(lambda x, i=index: x[i], batched)
        expected_leaves = jax.tree_util.tree_leaves_with_path(expected)
        actual_leaves = jax.tree_util.tree_leaves(actual)
        for (path, want), got in zip(expected_leaves, actual_leaves, strict=True):
            np.testing.assert_allclose(
                got,
                want,
                rtol=1e-12,
                atol=1e-9,
                err_msg=f"lander {index}, {jax.tree_util.keystr(path)}",
            )


def test_touchdown_reversed_within_step(x64):
    # 1 cm up at 0.9 m/s down, full throttle of the Falcon-9-like stage: the fitted height
    # dips below the ground inside the 0.1 s step although both ends are above it.
    params = falcon9_like(dtype=jnp.float64)
    sim = SimConfig(control_dt=0.1, substeps=1, horizon=3)
    start = make_vertical_state(0.01, -0.9, 30_000.0, dtype=jnp.float64)
    policy = open_loop_policy(jnp.ones((3, 1), jnp.float64))

    trajectory = rollout(VerticalLander(), sim, policy, start, params, jnp.array(0))

    assert bool(trajectory.final.touched_down)
    assert float(trajectory.final.touchdown_time) < 0.1
    assert abs(float(trajectory.final.vehicle.altitude)) < 1e-9
    assert float(trajectory.final.vehicle.velocity) < 0.0


# -- the physics step evaluates the start rate once --------------------------------------


@dataclasses.dataclass(frozen=True)
class CountingLander(VerticalLander):
    """The 1-D lander, recording each call of its derivative while a step is traced."""

    calls: list = dataclasses.field(default_factory=list, compare=False)

    def derivative(self, state, action, params):
        self.calls.append(action)
        return super().derivative(state, action, params)


@dataclasses.dataclass(frozen=True)
class CopyingRK4(RK4):
    """RK4 handed a copy of the start state, so the step cannot reuse its start rate."""

    def step(self, vehicle, state, action, params, dt):
        copy = jax.tree_util.tree_map(lambda x: x, state)
        return super().step(vehicle, copy, action, params, dt)


@dataclasses.dataclass(frozen=True)
class MeanRateEuler(Integrator):
    """Explicit Euler on the mean of the rates at the step's action and at zero
    throttle, both taken at the start state."""

    order: int = 1

    def step(self, vehicle, state, action, params, dt):
        at_action = vehicle.derivative(state, action, params)
        at_zero = vehicle.derivative(state, jnp.zeros_like(action), params)
        return jax.tree_util.tree_map(
            lambda x, a, b: x + 0.5 * dt * (a + b), state, at_action, at_zero
        )


def one_step(vehicle, integrator, dt=0.1):
    """Return ``f(altitude, velocity)``: the float64 state after one physics step of 0.6
    throttle from a 30 t stage."""

    def step(altitude, velocity):
        start = make_vertical_state(altitude, velocity, 30_000.0, dtype=jnp.float64)
        sim = initial_sim_state(start)
        action = jnp.array([0.6], jnp.float64)
        return physics_step(vehicle, integrator, sim, action, lander_params(), dt)

    return step


@pytest.mark.parametrize(
    ("integrator", "calls"), [(RK4(), 4), (SemiImplicitEuler(), 2), (CopyingRK4(), 5)]
)
def test_physics_step_derivative_calls(x64, integrator, calls):
    # RK4 evaluates 4 rates and semi-implicit Euler 2, the first at the start state, which
    # the step has already evaluated for its touchdown check.
    vehicle = CountingLander()

    jax.make_jaxpr(one_step(vehicle, integrator))(100.0, -20.0)

    assert len(vehicle.calls) == calls


@pytest.mark.parametrize(
    ("altitude", "velocity"),
    [(100.0, -20.0), (0.5, -10.0)],
    ids=["in-flight", "touchdown-within-step"],
)
def test_start_rate_reuse_matches_copy(x64, altitude, velocity):
    # The copy defeats the reuse, so both derivative calls at the start are traced and
    # differentiated separately.
    reused = one_step(VerticalLander(), RK4())
    separate = one_step(VerticalLander(), CopyingRK4())

    def flat(step):
        def outputs(a, v):
            sim = step(a, v)
            vehicle = sim.vehicle
            return jnp.stack([vehicle.altitude, vehicle.velocity, vehicle.mass, sim.touchdown_time])

        return outputs

    value, want_value = flat(reused)(altitude, velocity), flat(separate)(altitude, velocity)
    jacobian = jax.jacobian(flat(reused), argnums=(0, 1))(altitude, velocity)
    want_jacobian = jax.jacobian(flat(separate), argnums=(0, 1))(altitude, velocity)
    # Central finite differences in altitude and velocity, 1e-6 m and 1e-6 m/s.
    delta = 1e-6
    finite_differences = (
        (flat(reused)(altitude + delta, velocity) - flat(reused)(altitude - delta, velocity))
        / (2.0 * delta),
        (flat(reused)(altitude, velocity + delta) - flat(reused)(altitude, velocity - delta))
        / (2.0 * delta),
    )

    assert bool(reused(altitude, velocity).touched_down) == (altitude < 1.0)
    np.testing.assert_allclose(value, want_value, rtol=1e-14)
    for got, want, estimate in zip(jacobian, want_jacobian, finite_differences, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got, estimate, rtol=1e-6, atol=1e-6)


def test_start_rate_reuse_needs_same_action(x64):
    # The second rate is at the start state too, but at another action.
    start = make_vertical_state(100.0, -20.0, 30_000.0, dtype=jnp.float64)
    action = jnp.array([0.6], jnp.float64)
    params = lander_params()

    stepped = physics_step(VEHICLE, MeanRateEuler(), initial_sim_state(start), action, params, 0.1)
    expected = MeanRateEuler().step(VEHICLE, start, action, params, 0.1)

    assert not bool(stepped.touched_down)
    np.testing.assert_allclose(stepped.vehicle.velocity, expected.velocity, rtol=1e-14)
    np.testing.assert_allclose(stepped.vehicle.mass, expected.mass, rtol=1e-14)


@dataclasses.dataclass
class MutableEuler(Integrator):
    """Explicit Euler declared without ``frozen=True``, so it has no hash."""

    order: int = 1

    def step(self, vehicle, state, action, params, dt):
        rate = vehicle.derivative(state, action, params)
        return jax.tree_util.tree_map(lambda x, r: x + dt * r, state, rate)


def test_sim_config_rejects_unhashable_integrator():
    with pytest.raises(ValueError, match="frozen=True") as error:
        SimConfig(horizon=3, integrator=MutableEuler())

    assert "MutableEuler" in str(error.value)
