"""Planar booster: closed-form checks, sign conventions, actuator, landing gear, wind and
validation.

The references are the equations in the module docstrings of
``diffland.dynamics.planar``, ``landing_gear`` and ``aero``. Precision checks run in
float64 through the ``x64`` fixture.
"""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffland.dynamics import (
    RK4,
    STANDARD_GRAVITY,
    PlanarBooster,
    SemiImplicitEuler,
    SimConfig,
    aero,
    falcon9_like_planar,
    landing_gear,
    make_planar_params,
    make_planar_state,
    open_loop_policy,
    rollout,
)
from diffland.dynamics.presets import FALCON9_LIKE_GEOMETRY
from diffland.scenarios import PLANAR_SCENARIO, sample_booster_states
from diffland.training import LandingTask

VEHICLE = PlanarBooster()
GRAVITY = 9.81
COM_HEIGHT = FALCON9_LIKE_GEOMETRY["com_height"]
LEG_RADIUS = FALCON9_LIKE_GEOMETRY["leg_radius"]
ENGINE_OFFSET = FALCON9_LIKE_GEOMETRY["engine_offset"]
GYRATION = FALCON9_LIKE_GEOMETRY["radius_of_gyration"]

FREE_SIM = SimConfig(control_dt=0.5, substeps=1, horizon=10)
"""5 s in RK4 steps of 0.5 s: RK4 is exact for the polynomial motion of a free fall."""


def booster_params(drag=False, **overrides):
    """Return float64 parameters of the Falcon-9-like booster with ``overrides``."""
    return falcon9_like_planar(drag=drag, dtype=jnp.float64, **overrides)


def state64(x, z, vx, vz, mass, **fields):
    return make_planar_state(x, z, vx, vz, mass, dtype=jnp.float64, **fields)


def as_actions(rows):
    return jnp.asarray(np.atleast_2d(rows), jnp.float64)


@functools.partial(jax.jit, static_argnums=(0, 1))
def open_loop_rollout(vehicle, config, actions, state, params):
    """Roll out ``actions`` (shape ``(steps, 2)``), holding the last one."""
    step_index = jnp.zeros((), jnp.int32)
    return rollout(vehicle, config, open_loop_policy(actions), state, params, step_index)


# -- free fall and burns with closed-form solutions --------------------------------------


def test_free_fall_exact(x64):
    """With only dry mass left the engine gives no thrust: uniform motion in x and pitch,
    constant acceleration -g in z. RK4 integrates these polynomials exactly, so the error
    is rounding only (1e-13 relative)."""
    params = booster_params(dry_mass=30_000.0)
    start = state64(-20.0, 1000.0, 3.0, -10.0, 30_000.0, pitch=0.1, pitch_rate=0.05)

    trajectory = open_loop_rollout(VEHICLE, FREE_SIM, as_actions([1.0, 0.05]), start, params)

    assert not bool(trajectory.final.touched_down)
    times = FREE_SIM.control_dt * np.arange(FREE_SIM.horizon)
    states = trajectory.states
    np.testing.assert_allclose(states.x, -20.0 + 3.0 * times, rtol=1e-13)
    np.testing.assert_allclose(
        states.z, 1000.0 - 10.0 * times - 0.5 * GRAVITY * times**2, rtol=1e-13
    )
    np.testing.assert_allclose(states.pitch, 0.1 + 0.05 * times, rtol=1e-13)
    np.testing.assert_allclose(states.vx, 3.0, rtol=1e-13)
    np.testing.assert_allclose(states.vz, -10.0 - GRAVITY * times, rtol=1e-13)
    np.testing.assert_allclose(states.pitch_rate, 0.05, rtol=1e-13)
    np.testing.assert_array_equal(states.mass, 30_000.0)


def rocket_along_axis(time, start, pitch, thrust, params):
    """Return the exact position and velocity after ``time`` s of constant thrust along a
    fixed body axis ``(sin pitch, cos pitch)``, from ``start = (x, z, vx, vz, m)``.

    The speed gained along the axis is ``c ln(m0 / m(t))`` with ``c = Isp g0`` and
    ``m(t) = m0 - mdot t``; its integral over time is ``c (t + (1 - k t) ln(1 - k t) / k)``
    with ``k = mdot / m0``.
    """
    x, z, vx, vz, mass = start
    exhaust = float(params.isp) * STANDARD_GRAVITY
    k = thrust / exhaust / mass
    gained = -exhaust * np.log(1.0 - k * time)
    travelled = exhaust * (time + (1.0 - k * time) * np.log(1.0 - k * time) / k)
    axis = np.array([np.sin(pitch), np.cos(pitch)])
    position = np.array([x + vx * time, z + vz * time - 0.5 * GRAVITY * time**2])
    velocity = np.array([vx, vz - GRAVITY * time])
    return position + travelled * axis, velocity + gained * axis


@functools.partial(jax.jit, static_argnums=(0, 1))
def integrate(vehicle, integrator, state, action, params, dt, steps):
    """Take ``steps`` integrator steps of ``dt`` s; ``dt`` and ``steps`` are traced, so
    every step size runs through one compiled program."""

    def advance(_, current):
        return vehicle.project(integrator.step(vehicle, current, action, params, dt), params)

    return jax.lax.fori_loop(0, steps, advance, state)


@pytest.mark.parametrize(
    ("integrator", "order"), [(SemiImplicitEuler(), 1.0), (RK4(), 4.0)], ids=["euler", "rk4"]
)
def test_tilted_burn_convergence_order(x64, integrator, order):
    """A 40 s full-thrust burn along a body axis fixed at 0.3 rad (zero gimbal, no pitch
    rate, no drag) has the closed form of :func:`rocket_along_axis`. The burn takes 82 % of
    the mass, so the errors at dt = 2 ... 0.25 s stay far above rounding, and each
    halving of dt must divide the error by 2^order: the measured order is within 0.1 of
    the nominal one at the finest pair and within 0.2 everywhere."""
    params = booster_params(max_thrust=1.0e6, isp=100.0, dry_mass=5000.0)
    start_values = (0.0, 1000.0, 5.0, 0.0, 50_000.0)
    start = state64(*start_values, pitch=0.3)
    action = jnp.asarray([1.0, 0.0], jnp.float64)
    duration = 40.0
    exact_position, exact_velocity = rocket_along_axis(duration, start_values, 0.3, 1.0e6, params)

    position_errors, velocity_errors = [], []
    for dt in (2.0, 1.0, 0.5, 0.25):
        steps = int(round(duration / dt))
        final = integrate(VEHICLE, integrator, start, action, params, dt, steps)
        assert float(final.pitch) == pytest.approx(0.3, abs=1e-15)
        position = np.array([final.x, final.z])
        velocity = np.array([final.vx, final.vz])
        position_errors.append(np.linalg.norm(position - exact_position))
        velocity_errors.append(np.linalg.norm(velocity - exact_velocity))

    for name, errors in (("position", position_errors), ("velocity", velocity_errors)):
        orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
        assert orders[-1] == pytest.approx(order, abs=0.1), f"{name}: orders {orders}"
        assert np.all(orders > order - 0.2), f"{name}: orders {orders}"


# -- sign conventions and inertia ---------------------------------------------------------


@pytest.mark.parametrize("gimbal", [0.03, -0.03])
def test_gimbal_sign_convention(x64, gimbal):
    """Upright, a positive gimbal angle pushes the tail towards -x: positive pitch
    acceleration and negative x acceleration (the mirror image for a negative angle).
    The values follow ``l_e T sin(delta) / (m k^2)`` and ``T sin(-delta) / m``."""
    params = booster_params()
    state = state64(0.0, 500.0, 0.0, -50.0, 30_000.0)
    thrust = 0.8 * 845.0e3

    rates = VEHICLE.derivative(state, jnp.asarray([0.8, gimbal], jnp.float64), params)

    assert np.sign(float(rates.pitch_rate)) == np.sign(gimbal)
    assert np.sign(float(rates.vx)) == -np.sign(gimbal)
    expected_pitch = ENGINE_OFFSET * thrust * np.sin(gimbal) / (30_000.0 * GYRATION**2)
    assert float(rates.pitch_rate) == pytest.approx(expected_pitch, rel=1e-13)
    assert float(rates.vx) == pytest.approx(-thrust * np.sin(gimbal) / 30_000.0, rel=1e-13)
    expected_vz = thrust * np.cos(gimbal) / 30_000.0 - GRAVITY
    assert float(rates.vz) == pytest.approx(expected_vz, rel=1e-13)


def test_positive_pitch_thrusts_towards_positive_x(x64):
    """A nose leaning towards +x with zero gimbal thrusts towards +x, with no torque."""
    params = booster_params()
    state = state64(0.0, 500.0, 0.0, -50.0, 30_000.0, pitch=0.2)

    rates = VEHICLE.derivative(state, jnp.asarray([0.8, 0.0], jnp.float64), params)

    thrust = 0.8 * 845.0e3
    assert float(rates.vx) == pytest.approx(thrust * np.sin(0.2) / 30_000.0, rel=1e-13)
    assert float(rates.pitch_rate) == 0.0


def test_gimbal_command_clipped_to_limit(x64):
    params = booster_params()
    state = state64(0.0, 500.0, 0.0, -50.0, 30_000.0)
    limit = float(params.gimbal_limit)

    beyond = VEHICLE.derivative(state, jnp.asarray([0.8, 3.0 * limit], jnp.float64), params)
    at_limit = VEHICLE.derivative(state, jnp.asarray([0.8, limit], jnp.float64), params)

    assert float(beyond.pitch_rate) == float(at_limit.pitch_rate)
    assert float(beyond.vx) == float(at_limit.vx)


@pytest.mark.parametrize("drag", [False, True], ids=["engine-torque", "engine-and-drag"])
def test_pitch_acceleration_inverse_to_mass(x64, drag):
    """``I = m k^2``: at a fixed torque (same thrust, gimbal and airflow) the pitch
    acceleration times the mass is the same for every mass, to rounding (1e-13)."""
    params = booster_params(drag=drag, pressure_center_offset=5.0)
    vehicle = PlanarBooster(drag=drag)
    wind = aero.steady_wind(jnp.asarray([-8.0], jnp.float64))
    action = jnp.asarray([0.8, 0.04], jnp.float64)

    products = []
    for mass in (26_000.0, 30_000.0, 34_000.0):
        state = state64(0.0, 500.0, 2.0, -60.0, mass, pitch=0.1, wind=wind)
        rates = vehicle.derivative(state, action, params)
        products.append(float(rates.pitch_rate) * mass)

    np.testing.assert_allclose(products, products[0], rtol=1e-13)
    engine_torque = ENGINE_OFFSET * 0.8 * 845.0e3 * np.sin(0.04)
    if drag:
        # The air meets the body axis at about 0.27 rad, so the drag torque is sizeable.
        assert abs(products[0] / (engine_torque / GYRATION**2) - 1.0) > 0.01
    else:
        assert products[0] == pytest.approx(engine_torque / GYRATION**2, rel=1e-13)


# -- gimbal actuator ----------------------------------------------------------------------

LAG_SIM = SimConfig(control_dt=0.01, substeps=1, horizon=100)
"""1 s in steps of 0.01 s, a tenth of the 0.1 s gimbal time constant."""
LAG_VEHICLE = PlanarBooster(gimbal_lag=True)


def gimbal_response(command):
    """Return the times and gimbal angles of a lagged gimbal after a step to ``command``."""
    params = booster_params()
    start = state64(0.0, 3000.0, 0.0, 0.0, 30_000.0)
    actions = as_actions([0.5, command])

    trajectory = open_loop_rollout(LAG_VEHICLE, LAG_SIM, actions, start, params)

    assert not bool(trajectory.final.touched_down)
    times = LAG_SIM.control_dt * np.arange(LAG_SIM.horizon + 1)
    angles = np.append(np.asarray(trajectory.states.gimbal), float(trajectory.final.vehicle.gimbal))
    return params, times, angles


def test_gimbal_lag_small_step_time_constant(x64):
    """A step far below the saturation angle ``tau * rate_limit`` (0.035 rad) is a linear
    first-order lag, ``delta(t) = c (1 - exp(-t / tau))``. With a 1e-4 rad step, tanh
    departs from linear by 3e-6 relative, and RK4 at dt = tau / 10 adds less than that,
    so 1e-5 relative is used."""
    command = 1.0e-4
    params, times, angles = gimbal_response(command)

    tau = float(params.gimbal_time_constant)
    expected = command * (1.0 - np.exp(-times / tau))
    np.testing.assert_allclose(angles, expected, rtol=1e-5, atol=1e-12)
    at_tau = int(round(tau / LAG_SIM.control_dt))
    assert angles[at_tau] == pytest.approx(command * (1.0 - math.exp(-1.0)), rel=1e-5)


def test_gimbal_lag_large_step_rate_limited(x64):
    """A step to 0.08 rad slews at no more than the rate limit (0.35 rad/s) and comes
    within 5 % of it, because ``tanh(0.08 / 0.035)`` is 0.98. After 1 s the angle is
    within 0.1 % of the command (measured 0.01 %, after 0.2 s of slewing and eight time
    constants of the lag)."""
    command = 0.08
    params, times, angles = gimbal_response(command)

    rate_limit = float(params.gimbal_rate_limit)
    slew_rates = np.diff(angles) / LAG_SIM.control_dt
    assert np.all(slew_rates >= 0.0)
    assert np.max(slew_rates) <= rate_limit * (1.0 + 1e-12)
    assert np.max(slew_rates) > 0.95 * rate_limit
    assert angles[-1] == pytest.approx(command, rel=1e-3)
    # A pure first-order lag with the same time constant would be faster at first.
    linear = command * (1.0 - np.exp(-times / float(params.gimbal_time_constant)))
    assert angles[10] < 0.8 * linear[10]


def test_gimbal_rate_never_exceeds_limit(x64):
    """For errors from 1e-6 rad to 3 rad in both directions, the gimbal rate is bounded by
    the rate limit. At 3 rad the tanh has saturated and the rate equals the limit to
    rounding."""
    params = booster_params()
    limit = float(params.gimbal_limit)
    rate_limit = float(params.gimbal_rate_limit)
    for error in (1e-6, 0.01, 0.035, 0.1, 1.0, 3.0):
        for sign in (1.0, -1.0):
            angle = -sign * error + sign * limit
            state = state64(0.0, 500.0, 0.0, 0.0, 30_000.0, gimbal=angle)
            action = jnp.asarray([0.5, sign * limit], jnp.float64)
            rate = float(LAG_VEHICLE.derivative(state, action, params).gimbal)
            assert abs(rate) <= rate_limit * (1.0 + 1e-15)
            assert np.sign(rate) == sign


# -- landing gear -------------------------------------------------------------------------


@pytest.mark.parametrize("pitch", [0.0, 0.1, -0.1, 0.5])
def test_footprint_height(x64, pitch):
    """The lowest foot is ``z - L cos(theta) - r |sin(theta)|`` for either lean."""
    params = booster_params()
    state = state64(0.0, 40.0, 0.0, 0.0, 30_000.0, pitch=pitch)

    height = float(VEHICLE.height(state, params))

    expected = 40.0 - COM_HEIGHT * math.cos(pitch) - LEG_RADIUS * abs(math.sin(pitch))
    assert height == pytest.approx(expected, rel=1e-14)


def free_fall_touchdown_time(z, vz, pitch):
    """Return when the lowest foot of a booster falling at a fixed pitch reaches zero."""
    feet = z - COM_HEIGHT * math.cos(pitch) - LEG_RADIUS * abs(math.sin(pitch))
    return (vz + math.sqrt(vz**2 + 2.0 * GRAVITY * feet)) / GRAVITY


def test_tilted_lander_touches_down_first(x64):
    """Falling at a fixed pitch of +-0.2 rad, the downhill foot reaches the ground before
    the feet of an upright booster do. The height is then quadratic in time, so the
    interpolated touchdown time is exact to rounding (1e-12 relative) even with 0.5 s
    steps, and the touchdown state has its lowest foot at the ground."""
    params = booster_params(dry_mass=30_000.0)
    actions = as_actions([1.0, 0.0])

    times = {}
    for pitch in (0.0, 0.2, -0.2):
        start = state64(0.0, 60.0, 0.0, -2.0, 30_000.0, pitch=pitch)
        trajectory = open_loop_rollout(VEHICLE, FREE_SIM, actions, start, params)
        assert bool(trajectory.final.touched_down)
        times[pitch] = float(trajectory.final.touchdown_time)
        assert times[pitch] == pytest.approx(free_fall_touchdown_time(60.0, -2.0, pitch), rel=1e-12)
        feet = float(VEHICLE.height(trajectory.final.vehicle, params))
        assert feet == pytest.approx(0.0, abs=1e-9)

    # The downhill foot starts 1.5 m lower, which is 0.05 s at about 30 m/s.
    assert times[0.2] < times[0.0] - 0.03
    assert times[-0.2] == pytest.approx(times[0.2], rel=1e-14)


STATIC_TIP_ANGLE = math.atan2(LEG_RADIUS, COM_HEIGHT)
"""0.540 rad: beyond this lean the centre of mass is outside the downhill foot."""


def tip_over_by_hand(vx, pitch_rate, pitch):
    """Return kinetic energy over the energy barrier of tipping over the downhill foot."""
    barrier = GRAVITY * (
        math.hypot(LEG_RADIUS, COM_HEIGHT)
        - COM_HEIGHT * math.cos(pitch)
        - LEG_RADIUS * abs(math.sin(pitch))
    )
    energy = 0.5 * vx**2 + 0.5 * GYRATION**2 * pitch_rate**2
    return energy / barrier


@pytest.mark.parametrize(
    ("vx", "pitch_rate", "pitch", "tips"),
    [
        (0.3, 0.01, 0.02, False),
        (0.0, 0.0, STATIC_TIP_ANGLE - 0.05, False),
        (5.0, 0.0, 0.0, False),
        (8.0, 0.0, 0.0, True),
        (0.0, 0.6, 0.1, True),
    ],
    ids=["gentle", "still-near-tip-angle", "drifting-5", "drifting-8", "spinning"],
)
def test_tip_over_measure(x64, vx, pitch_rate, pitch, tips):
    """The measure is below 1 when the booster stays up and above 1 when it tips. It
    equals the energy ratio computed by hand (1e-12 relative)."""
    params = booster_params()
    state = state64(3.0, COM_HEIGHT, vx, -1.0, 30_000.0, pitch=pitch, pitch_rate=pitch_rate)

    measure = float(VEHICLE.touchdown_measures(state, params).tip_over)

    assert (measure >= 1.0) == tips
    assert measure == pytest.approx(tip_over_by_hand(vx, pitch_rate, pitch), rel=1e-12)


@pytest.mark.parametrize("pitch", [STATIC_TIP_ANGLE + 0.01, -0.7, 1.2])
def test_tip_over_beyond_static_angle(x64, pitch):
    """Past the static tip angle no energy barrier is left: even at rest the measure is
    the cap, far above 1."""
    params = booster_params()
    state = state64(0.0, COM_HEIGHT, 0.0, -0.5, 30_000.0, pitch=pitch)

    measures = VEHICLE.touchdown_measures(state, params)

    assert float(measures.tip_over) == landing_gear.TIP_OVER_CAP
    assert float(measures.tilt) == pytest.approx(abs(pitch), rel=1e-14)


# -- wind and drag ------------------------------------------------------------------------

DRIFT_SIM = SimConfig(control_dt=0.1, substeps=1, horizon=100)
"""10 s in steps of 0.1 s."""
DRAG_VEHICLE = PlanarBooster(drag=True)


@pytest.mark.parametrize("wind_speed", [12.0, -12.0, 0.0], ids=["east", "west", "calm"])
def test_hover_in_steady_wind_drifts_downwind(x64, wind_speed):
    """A booster at the hover throttle, upright, drifts with a steady wind: after 10 s it
    is downwind and moving downwind, but slower than the air. In calm air it stays put.
    The centre of pressure is at the centre of mass, so it does not pitch."""
    params = booster_params(drag=True)
    mass = 40_000.0
    hover = mass * GRAVITY / 845.0e3
    wind = aero.steady_wind(jnp.asarray([wind_speed], jnp.float64))
    start = state64(0.0, 500.0, 0.0, 0.0, mass, wind=wind)
    actions = as_actions(np.tile([hover, 0.0], (DRIFT_SIM.horizon, 1)))

    trajectory = open_loop_rollout(DRAG_VEHICLE, DRIFT_SIM, actions, start, params)

    final = trajectory.final.vehicle
    assert not bool(trajectory.final.touched_down)
    assert float(final.z) > 490.0
    if wind_speed == 0.0:
        assert float(final.x) == 0.0
        assert float(final.vx) == 0.0
        return
    direction = np.sign(wind_speed)
    assert direction * float(final.x) > 1.0
    assert 0.0 < direction * float(final.vx) < abs(wind_speed)
    assert np.all(np.diff(direction * np.asarray(trajectory.states.vx)) >= 0.0)
    assert float(final.pitch) == 0.0


@pytest.mark.parametrize("axes", [1, 2])
def test_sample_wind_gust_rms(axes):
    """The gust part of a sampled wind, ``w(z) - w_steady``, has a root mean square over
    height that approaches the requested ``gust_rms`` on each axis. Averaged over 64 draws
    and 0-20 km of height, the mean square is within 1 % of ``gust_rms^2`` (measured
    0.1 %, while single draws scatter by 1.4 %). The steady part is never faster than
    ``steady_speed``."""
    gust_rms = 3.0
    keys = jax.random.split(jax.random.PRNGKey(7), 64)
    winds = jax.vmap(lambda key: aero.sample_wind(key, axes, 10.0, gust_rms))(keys)
    heights = jnp.linspace(0.0, 20_000.0, 8001)

    @jax.jit
    @jax.vmap
    def gusts(wind):
        return jax.vmap(lambda z: aero.wind_velocity(wind, z) - wind.steady)(heights)

    gust = np.asarray(gusts(winds))
    mean_square = np.mean(gust**2, axis=(0, 1))

    assert gust.shape == (64, 8001, axes)
    np.testing.assert_allclose(mean_square, gust_rms**2, rtol=0.01)
    steady_speeds = np.linalg.norm(np.asarray(winds.steady), axis=1)
    assert np.all(steady_speeds <= 10.0 + 1e-5)
    assert np.max(steady_speeds) > 5.0


def test_sample_wind_rejects_negative_rms():
    with pytest.raises(ValueError, match=r"gust_rms = -1\.0 must be zero or positive"):
        aero.sample_wind(jax.random.PRNGKey(0), 1, 5.0, -1.0)


# -- validation ---------------------------------------------------------------------------

VALID_PARAMS = dict(
    gravity=GRAVITY,
    max_thrust=845.0e3,
    throttle_min=0.4,
    throttle_max=1.0,
    isp=282.0,
    dry_mass=25_600.0,
    **FALCON9_LIKE_GEOMETRY,
)


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"gravity": math.nan}, r"gravity = nan is NaN"),
        ({"throttle_min": 0.9, "throttle_max": 0.4}, r"throttle bounds \[0\.9, 0\.4\] must"),
        ({"gimbal_limit": 1.6}, r"params\.gimbal_limit = 1\.6 rad must be below pi/2"),
        ({"gimbal_limit": math.pi / 2}, r"params\.gimbal_limit = 1\.5708 rad must be below"),
        ({"gimbal_limt": 0.1}, r"unknown planar parameters \['gimbal_limt'\]"),
        ({"com_height": -1.0}, r"params\.com_height = -1\.0 must be zero or positive"),
    ],
    ids=["nan", "reversed-throttle", "gimbal-limit", "gimbal-limit-right-angle", "unknown", "com"],
)
def test_make_params_rejects(overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_planar_params(**{**VALID_PARAMS, **overrides})


@pytest.mark.parametrize(
    ("fields", "pattern"),
    [
        ({"mass": 20_000.0}, r"state\.mass = 20000\.0 kg is below params\.dry_mass = 25600\.0"),
        ({"z": 10.0}, r"the feet start at height -5\.0 m"),
        ({"z": 16.0, "pitch": 0.3}, r"the feet start at height -0\.98\d* m"),
        ({"x": math.nan}, r"state\.x contains a non-finite value \(nan\)"),
    ],
    ids=["below-dry-mass", "feet-below-ground", "tilted-feet-below-ground", "nan"],
)
def test_validate_rejects_state(fields, pattern):
    params = make_planar_params(**VALID_PARAMS)
    values = {"x": 0.0, "z": 100.0, "vx": 0.0, "vz": -10.0, "mass": 30_000.0, **fields}
    state = make_planar_state(**values)

    with pytest.raises(ValueError, match=pattern):
        VEHICLE.validate(state, params)


def test_task_validate_rejects_bad_lander_in_batch():
    """The batch check evaluates the footprint height of every lander and names them."""
    params = make_planar_params(**VALID_PARAMS)
    singles = [make_planar_state(0.0, z, 0.0, -10.0, 30_000.0) for z in (100.0, 12.0, 80.0)]
    batch = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *singles)
    task = LandingTask(VEHICLE, params, DRIFT_SIM)

    with pytest.raises(ValueError, match=r"the feet start at height \[ *85\. +-3\. +65\.\] m"):
        task.validate(batch)


# -- batching and tracing -----------------------------------------------------------------


def test_vmapped_rollout_matches_loop(x64):
    """A vmapped rollout over start states, winds and parameters equals separate rollouts
    of each lander (1e-12 relative: the same arithmetic, possibly reordered)."""
    starts = [
        (-20.0, 300.0, 4.0, -50.0, 31_000.0, 0.05, 6.0),
        (10.0, 250.0, -2.0, -45.0, 29_000.0, -0.1, -4.0),
        (0.0, 400.0, 0.0, -60.0, 33_000.0, 0.0, 0.0),
        (35.0, 200.0, -6.0, -40.0, 28_000.0, 0.2, 10.0),
    ]
    states = [
        state64(x, z, vx, vz, mass, pitch=pitch, wind=aero.steady_wind([wind]))
        for x, z, vx, vz, mass, pitch, wind in starts
    ]
    params = [
        booster_params(drag=True, max_thrust=thrust) for thrust in (830e3, 845e3, 860e3, 845e3)
    ]
    steps = np.arange(DRIFT_SIM.horizon)
    actions = as_actions(np.stack([0.4 + 0.1 * (steps > 40), 0.03 * np.sin(steps / 10.0)], 1))

    def stack(trees):
        return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *trees)

    batched = jax.jit(
        jax.vmap(
            lambda state, p: rollout(
                DRAG_VEHICLE, DRIFT_SIM, open_loop_policy(actions), state, p, jnp.array(0)
            )
        )
    )(stack(states), stack(params))

    assert bool(jnp.all(batched.final.touched_down))
    assert len({round(float(t), 6) for t in batched.final.touchdown_time}) == 4
    for index, (state, p) in enumerate(zip(states, params, strict=True)):
        single = open_loop_rollout(DRAG_VEHICLE, DRIFT_SIM, actions, state, p)
        lander = jax.tree_util.tree_map(lambda leaf, i=index: leaf[i], batched)
        for (path, expected), actual in zip(
            jax.tree_util.tree_leaves_with_path(single),
            jax.tree_util.tree_leaves(lander),
            strict=True,
        ):
            np.testing.assert_allclose(
                actual,
                expected,
                rtol=1e-12,
                atol=1e-9,
                err_msg=f"lander {index}, {jax.tree_util.keystr(path)}",
            )


def test_jitted_rollout_traces_once(x64):
    """A second and third call with new start values, winds, parameters and actions of
    the same shapes reuse the compiled rollout."""
    config = SimConfig(control_dt=0.1, substeps=1, horizon=20)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def final_state(state, params, actions):
        policy = open_loop_policy(actions)
        return rollout(DRAG_VEHICLE, config, policy, state, params, jnp.array(0)).final

    touchdown_times = []
    for z, wind, thrust, gimbal in (
        (40.0, 3.0, 845e3, 0.0),
        (35.0, -5.0, 800e3, 0.02),
        (50.0, 0.0, 900e3, -0.03),
    ):
        state = state64(0.0, z, 1.0, -20.0, 30_000.0, wind=aero.steady_wind([wind]))
        params = booster_params(drag=True, max_thrust=thrust)
        final = final_state(state, params, as_actions([0.4, gimbal]))
        touchdown_times.append(float(final.touchdown_time))

    assert len(set(touchdown_times)) == 3


def test_zero_leg_radius_is_rejected():
    with pytest.raises(ValueError, match="leg_radius"):
        falcon9_like_planar(leg_radius=0.0)


def test_sampled_offsets_have_independent_sign_and_size():
    """Side of the pad and distance from it are drawn independently, and the feet of a
    tilted start are at the filtered height (1.5-3 km)."""
    params = falcon9_like_planar()
    vehicle = PlanarBooster()
    states = sample_booster_states(
        jax.random.PRNGKey(3), 1000, vehicle, params, PLANAR_SCENARIO, chunk=2048
    )

    for values in (np.asarray(states.x), np.asarray(states.vx)):
        correlation = np.corrcoef(np.sign(values), np.abs(values))[0, 1]
        assert abs(correlation) < 0.1
    feet = np.asarray(jax.vmap(lambda s: vehicle.height(s, params))(states))
    assert feet.min() >= 1500.0 - 1e-2
    assert feet.max() <= 3000.0 + 1e-2
