"""Cross-checks of the booster models against each other and against an independent solver.

- The planar booster, upright with no gimbal in calm air, is the 1-D lander shifted up by
  ``com_height``.
- The 6-DOF booster moving in the x-z plane is the planar booster.
- Both boosters follow scipy's DOP853 solution of their equations of motion, which are
  transcribed here in numpy from the module docstrings of ``diffland.dynamics.planar``,
  ``rigid_body`` and ``aero`` (diffland's derivative is not called).
- Gradients of the touchdown state agree with central finite differences.

Everything runs in float64.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from diffland.dynamics import (
    PlanarBooster,
    RigidBody,
    SimConfig,
    VerticalLander,
    aero,
    falcon9_like_planar,
    falcon9_like_rigid_body,
    make_planar_state,
    make_rigid_body_state,
    make_vertical_params,
    make_vertical_state,
    open_loop_policy,
    rollout,
    rotation,
)

G0 = 9.80665
"""Standard gravity, m/s^2, which converts the specific impulse to an exhaust velocity."""
Y_AXIS = (0.0, 1.0, 0.0)

PLANAR = PlanarBooster(drag=True)
RIGID = RigidBody(drag=True)
PLANAR_LAG = PlanarBooster(drag=True, gimbal_lag=True)
RIGID_ALL = RigidBody(drag=True, gimbal_lag=True, rcs=True, planet_rotation=True)

FINE_SIM = SimConfig(control_dt=0.01, substeps=1, horizon=500)
"""5 s in RK4 steps of 0.01 s, shared by the model comparisons so they compile once."""


@functools.partial(jax.jit, static_argnums=(0, 1))
def open_loop_rollout(vehicle, config, actions, state, params):
    """Roll out ``actions`` (shape ``(steps, action_size)``), holding the last one."""
    step_index = jnp.zeros((), jnp.int32)
    return rollout(vehicle, config, open_loop_policy(actions), state, params, step_index)


def as_actions(rows):
    return jnp.asarray(np.atleast_2d(rows), jnp.float64)


def pitch_of(quaternion):
    """Return the angle of a rotation about +y from quaternions ``(..., 4)`` (w, x, y, z)."""
    quaternion = np.asarray(quaternion)
    return 2.0 * np.arctan2(quaternion[..., 2], quaternion[..., 0])


def in_plane_wind(steady, amplitudes, wavenumbers, phases, axes):
    """Return a wind along world x with one gust mode per entry of ``wavenumbers``.

    With ``axes=2`` the y entries are zero, so a 6-DOF booster meets the planar wind.
    """
    amplitudes = np.asarray(amplitudes, np.float64)[:, None]
    phases = np.asarray(phases, np.float64)[:, None]
    pad = np.zeros((len(wavenumbers), axes - 1))
    return aero.Wind(
        steady=jnp.asarray([steady] + [0.0] * (axes - 1), jnp.float64),
        gust_amplitude=jnp.asarray(np.hstack([amplitudes, pad])),
        gust_wavenumber=jnp.asarray(wavenumbers, jnp.float64),
        gust_phase=jnp.asarray(np.hstack([phases, pad])),
    )


# -- planar booster against the 1-D lander -----------------------------------------------

DESCENT_THROTTLES = np.where(np.arange(240) < 40, 0.9, 0.4)[:, None]
"""Throttle 0.9 for 4 s, then 0.4: touchdown after 17 s at 66 m/s without drag, after
21 s at 37 m/s with drag."""


@pytest.mark.parametrize(
    ("drag", "com_height", "leg_radius"),
    [(False, 15.0, 9.0), (True, 0.0, 9.0), (True, 15.0, 9.0)],
    ids=["no-drag", "drag-feet-at-com", "drag-shifted-density"],
)
def test_planar_upright_reproduces_vertical(x64, drag, com_height, leg_radius):
    """The 1-D altitude is the planar height of the feet, ``z - com_height`` when upright.

    The planar density is taken at the centre of mass, the 1-D density at the 1-D
    altitude, which is the height of the feet here, ``com_height`` lower. With the feet at
    the centre of mass the two coincide. Otherwise the 1-D sea-level density is scaled by
    ``exp(-com_height / H)``, which makes the two densities equal at every height.

    Both models then evaluate the same arithmetic up to the order of operations, so
    states agree to 1e-12 relative and heights to 1e-9 m (measured: 1e-15 relative, and
    4e-13 m, the rounding of ``z - com_height``).
    """
    planar_params = falcon9_like_planar(
        drag=drag, com_height=com_height, leg_radius=leg_radius, dtype=jnp.float64
    )
    vertical_params = make_vertical_params(
        gravity=float(planar_params.gravity),
        max_thrust=float(planar_params.max_thrust),
        throttle_min=float(planar_params.throttle_min),
        throttle_max=float(planar_params.throttle_max),
        isp=float(planar_params.isp),
        dry_mass=float(planar_params.dry_mass),
        drag_coefficient=float(planar_params.axial_drag_coefficient),
        reference_area=float(planar_params.reference_area),
        sea_level_density=float(
            planar_params.sea_level_density * np.exp(-com_height / planar_params.scale_height)
        ),
        scale_height=float(planar_params.scale_height),
        dtype=jnp.float64,
    )
    config = SimConfig(control_dt=0.1, substeps=1, horizon=len(DESCENT_THROTTLES))
    planar_start = make_planar_state(
        0.0, 1500.0 + com_height, 0.0, -150.0, 31_000.0, dtype=jnp.float64
    )
    vertical_start = make_vertical_state(1500.0, -150.0, 31_000.0, dtype=jnp.float64)
    throttles = as_actions(DESCENT_THROTTLES)
    gimbal = jnp.zeros_like(throttles)

    planar = open_loop_rollout(
        PlanarBooster(drag=drag),
        config,
        jnp.hstack([throttles, gimbal]),
        planar_start,
        planar_params,
    )
    vertical = open_loop_rollout(
        VerticalLander(drag=drag), config, throttles, vertical_start, vertical_params
    )

    assert bool(vertical.final.touched_down)
    assert bool(planar.final.touched_down)
    speed = float(VerticalLander().touchdown_speed(vertical.final.vehicle, vertical_params))
    assert 30.0 < speed < 70.0
    np.testing.assert_array_equal(planar.active, vertical.active)

    heights = jax.vmap(lambda s: PlanarBooster().height(s, planar_params))(planar.states)
    np.testing.assert_allclose(heights, vertical.states.altitude, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(
        planar.states.z - com_height, vertical.states.altitude, rtol=1e-12, atol=1e-9
    )
    np.testing.assert_allclose(planar.states.vz, vertical.states.velocity, rtol=1e-12)
    np.testing.assert_allclose(planar.states.mass, vertical.states.mass, rtol=1e-13)
    for field in ("x", "vx", "pitch", "pitch_rate"):
        np.testing.assert_array_equal(getattr(planar.states, field), 0.0, err_msg=field)

    assert float(planar.final.touchdown_time) == pytest.approx(
        float(vertical.final.touchdown_time), rel=1e-12
    )
    planar_speed = PlanarBooster().touchdown_speed(planar.final.vehicle, planar_params)
    assert float(planar_speed) == pytest.approx(speed, rel=1e-12)
    planar_measures = PlanarBooster().touchdown_measures(planar.final.vehicle, planar_params)
    assert float(planar_measures.vertical_speed) == pytest.approx(speed, rel=1e-12)
    assert float(planar_measures.tilt) == 0.0
    assert float(planar_measures.lateral_speed) == 0.0
    assert float(planar.final.vehicle.z - com_height) == pytest.approx(
        float(vertical.final.vehicle.altitude), abs=1e-9
    )


# -- 6-DOF booster against the planar booster --------------------------------------------


def rigid_params(**overrides):
    """Return float64 6-DOF parameters of the Falcon-9-like booster with drag."""
    return falcon9_like_rigid_body(drag=True, dtype=jnp.float64, **overrides)


def planar_params(**overrides):
    """Return float64 planar parameters of the Falcon-9-like booster with drag."""
    return falcon9_like_planar(drag=True, dtype=jnp.float64, **overrides)


def in_plane_pair(x, z, vx, vz, pitch, pitch_rate, mass, gimbal, wind_args):
    """Return a planar state and the 6-DOF state that moves in the x-z plane like it."""
    planar = make_planar_state(
        x,
        z,
        vx,
        vz,
        mass,
        pitch=pitch,
        pitch_rate=pitch_rate,
        gimbal=gimbal,
        wind=in_plane_wind(*wind_args, axes=1),
        dtype=jnp.float64,
    )
    rigid = make_rigid_body_state(
        (x, 0.0, z),
        (vx, 0.0, vz),
        mass,
        quaternion=rotation.from_axis_angle(jnp.asarray(Y_AXIS, jnp.float64), pitch),
        angular_velocity=(0.0, pitch_rate, 0.0),
        gimbal=(0.0, gimbal),
        wind=in_plane_wind(*wind_args, axes=2),
        dtype=jnp.float64,
    )
    return planar, rigid


PAIR_OVERRIDES = dict(pressure_center_offset=4.0)
"""A centre of pressure 4 m above the centre of mass, so the normal drag makes a torque."""


@pytest.mark.parametrize("lag", [False, True], ids=["direct-gimbal", "gimbal-lag"])
def test_rigid_body_derivative_matches_planar(x64, lag):
    """In-plane states give the same time derivative to rounding (1e-12 relative).

    The attitude rate is compared through ``d(pitch)/dt = 2 (w dy/dt - y dw/dt)`` for
    ``q = (w, 0, y, 0)`` of unit norm. The out-of-plane rates must be zero.
    """
    planar_vehicle = PlanarBooster(drag=True, gimbal_lag=lag)
    rigid_vehicle = RigidBody(drag=True, gimbal_lag=lag)
    planar_p = planar_params(**PAIR_OVERRIDES)
    rigid_p = rigid_params(**PAIR_OVERRIDES)
    generator = np.random.default_rng(4)

    for _ in range(8):
        pitch = generator.uniform(-0.6, 0.6)
        pitch_rate = generator.uniform(-0.3, 0.3)
        gimbal = generator.uniform(-0.08, 0.08)
        wind_args = (generator.uniform(-10, 10), [3.0], [generator.uniform(0.01, 0.1)], [1.0])
        planar, rigid = in_plane_pair(
            generator.uniform(-50, 50),
            generator.uniform(100, 2000),
            generator.uniform(-20, 20),
            generator.uniform(-200, 10),
            pitch,
            pitch_rate,
            generator.uniform(26_000, 34_000),
            gimbal,
            wind_args,
        )
        throttle = generator.uniform(0.4, 1.0)
        command = generator.uniform(-0.1, 0.1)
        planar_rate = planar_vehicle.derivative(planar, jnp.asarray([throttle, command]), planar_p)
        rigid_rate = rigid_vehicle.derivative(rigid, jnp.asarray([throttle, 0.0, command]), rigid_p)

        pairs = {
            "x": (rigid_rate.position[0], planar_rate.x),
            "z": (rigid_rate.position[2], planar_rate.z),
            "vx": (rigid_rate.velocity[0], planar_rate.vx),
            "vz": (rigid_rate.velocity[2], planar_rate.vz),
            "pitch_rate": (rigid_rate.angular_velocity[1], planar_rate.pitch_rate),
            "mass": (rigid_rate.mass, planar_rate.mass),
            "gimbal": (rigid_rate.gimbal[1], planar_rate.gimbal),
        }
        for name, (rigid_value, planar_value) in pairs.items():
            np.testing.assert_allclose(
                rigid_value, planar_value, rtol=1e-12, atol=1e-12, err_msg=name
            )
        w, y = rigid.quaternion[0], rigid.quaternion[2]
        pitch_from_quaternion = 2.0 * (w * rigid_rate.quaternion[2] - y * rigid_rate.quaternion[0])
        np.testing.assert_allclose(pitch_from_quaternion, pitch_rate, rtol=1e-12)
        out_of_plane = [
            rigid_rate.position[1],
            rigid_rate.velocity[1],
            rigid_rate.quaternion[1],
            rigid_rate.quaternion[3],
            rigid_rate.angular_velocity[0],
            rigid_rate.angular_velocity[2],
            rigid_rate.gimbal[0],
        ]
        np.testing.assert_allclose(out_of_plane, 0.0, atol=1e-14)


def test_rigid_body_rollout_matches_planar(x64):
    """A touchdown in the x-z plane with drag, a steady wind with a gust, a nonzero pitch,
    pitch rate and a varying gimbal command gives the same trajectory in both models.

    RK4 on the quaternion is not RK4 on the pitch angle, so the rollouts may differ by
    the difference of two O(dt^4) truncation errors (the derivatives themselves agree to
    rounding, see the test above). At dt = 0.01 s the measured difference before
    touchdown is 2e-13 m/s in velocity, 1e-13 m in position and 1e-15 rad in pitch. The
    touchdown state interpolates the quaternion, not the angle, which adds an O(dt^3)
    difference (measured 7e-12 rad in pitch). The tolerances leave a factor of about 100.
    """
    planar_p = planar_params(**PAIR_OVERRIDES)
    rigid_p = rigid_params(**PAIR_OVERRIDES)
    planar, rigid = in_plane_pair(
        -30.0, 380.0, 8.0, -90.0, 0.05, -0.02, 31_000.0, 0.0, (6.0, [2.0], [0.03], [0.4])
    )
    times = FINE_SIM.control_dt * np.arange(FINE_SIM.horizon)
    throttle = np.where(times < 3.0, 0.4, 0.9)
    gimbal = 0.03 * np.sin(times / 0.8)
    planar_actions = as_actions(np.stack([throttle, gimbal], axis=1))
    rigid_actions = as_actions(np.stack([throttle, np.zeros_like(gimbal), gimbal], axis=1))

    planar_run = open_loop_rollout(PLANAR, FINE_SIM, planar_actions, planar, planar_p)
    rigid_run = open_loop_rollout(RIGID, FINE_SIM, rigid_actions, rigid, rigid_p)

    assert bool(planar_run.final.touched_down)
    assert bool(rigid_run.final.touched_down)
    # The pitch changes sign, so the tilted footprint height meets both of its branches.
    assert float(planar_run.final.vehicle.pitch) < -0.02
    assert float(rigid_run.final.touchdown_time) == pytest.approx(
        float(planar_run.final.touchdown_time), abs=1e-12
    )
    np.testing.assert_array_equal(rigid_run.active, planar_run.active)

    flying = np.asarray(planar_run.active)
    expected = planar_run.states
    actual = rigid_run.states
    comparisons = {
        "x": (actual.position[:, 0], expected.x, 1e-11),
        "z": (actual.position[:, 2], expected.z, 1e-11),
        "pitch": (pitch_of(actual.quaternion), expected.pitch, 1e-13),
        "vx": (actual.velocity[:, 0], expected.vx, 1e-11),
        "vz": (actual.velocity[:, 2], expected.vz, 1e-11),
        "pitch_rate": (actual.angular_velocity[:, 1], expected.pitch_rate, 1e-13),
        "mass": (actual.mass, expected.mass, 1e-9),
    }
    for name, (rigid_values, planar_values, tolerance) in comparisons.items():
        np.testing.assert_allclose(
            np.asarray(rigid_values)[flying],
            np.asarray(planar_values)[flying],
            rtol=0.0,
            atol=tolerance,
            err_msg=name,
        )
    for index in (1, 3):
        np.testing.assert_allclose(actual.quaternion[:, index], 0.0, atol=1e-14)
    for name in ("position", "velocity"):
        np.testing.assert_allclose(getattr(actual, name)[:, 1], 0.0, atol=1e-14, err_msg=name)

    planar_end = planar_run.final.vehicle
    rigid_end = rigid_run.final.vehicle
    touchdown_pairs = {
        "x": (rigid_end.position[0], planar_end.x),
        "z": (rigid_end.position[2], planar_end.z),
        "pitch": (pitch_of(rigid_end.quaternion), planar_end.pitch),
        "vx": (rigid_end.velocity[0], planar_end.vx),
        "vz": (rigid_end.velocity[2], planar_end.vz),
        "pitch_rate": (rigid_end.angular_velocity[1], planar_end.pitch_rate),
        "mass": (rigid_end.mass, planar_end.mass),
    }
    for name, (rigid_value, planar_value) in touchdown_pairs.items():
        np.testing.assert_allclose(rigid_value, planar_value, rtol=0.0, atol=1e-9, err_msg=name)
    assert abs(float(rigid_end.position[1])) < 1e-14


# -- independent integration with scipy ---------------------------------------------------


def plain_params(params):
    """Return the parameters as a dict of numpy float64 values."""
    return {name: np.asarray(value, np.float64) for name, value in vars(params).items()}


def plain_wind(wind):
    return {name: np.asarray(value, np.float64) for name, value in vars(wind).items()}


def gust_wind(wind, height):
    """Return the horizontal wind at ``height``: steady part plus sine gust modes."""
    angles = wind["gust_wavenumber"][:, None] * height + wind["gust_phase"]
    return wind["steady"] + np.sum(wind["gust_amplitude"] * np.sin(angles), axis=0)


def drag_forces(air_velocity, axis, density, p):
    """Return the axial and normal drag forces ``-0.5 rho A |u| C u_part``."""
    axial_velocity = np.dot(air_velocity, axis) * axis
    normal_velocity = air_velocity - axial_velocity
    pressure = 0.5 * density * p["reference_area"] * np.linalg.norm(air_velocity)
    return (
        -pressure * p["axial_drag_coefficient"] * axial_velocity,
        -pressure * p["normal_drag_coefficient"] * normal_velocity,
    )


def engine_thrust(mass, action, p):
    throttle = np.clip(action[0], p["throttle_min"], p["throttle_max"])
    return throttle * p["max_thrust"] if mass > p["dry_mass"] else 0.0


def gimbal_slew(command, angle, p):
    """Return ``rate_limit tanh((command - angle) / (tau rate_limit))``."""
    rate_limit = p["gimbal_rate_limit"]
    return rate_limit * np.tanh((command - angle) / (p["gimbal_time_constant"] * rate_limit))


def planar_rates(y, action, p, wind, lag):
    """Return the planar equations of motion for ``y = (x, z, pitch, vx, vz, pitch_rate,
    mass, gimbal)``."""
    x, z, pitch, vx, vz, pitch_rate, mass, gimbal = y
    thrust = engine_thrust(mass, action, p)
    command = np.clip(action[1], -p["gimbal_limit"], p["gimbal_limit"])
    delta = gimbal if lag else command

    axis = np.array([np.sin(pitch), np.cos(pitch)])
    air_velocity = np.array([vx - gust_wind(wind, z)[0], vz])
    density = p["sea_level_density"] * np.exp(-z / p["scale_height"])
    axial, normal = drag_forces(air_velocity, axis, density, p)
    # Torque about +y of the normal force at (l_cp b): r_z F_x - r_x F_z.
    lever = p["pressure_center_offset"] * axis
    aero_torque = lever[1] * normal[0] - lever[0] * normal[1]
    drag = axial + normal

    inertia = mass * p["radius_of_gyration"] ** 2
    torque = p["engine_offset"] * thrust * np.sin(delta) + aero_torque
    return np.array(
        [
            vx,
            vz,
            pitch_rate,
            (thrust * np.sin(pitch - delta) + drag[0]) / mass,
            (thrust * np.cos(pitch - delta) + drag[1]) / mass - p["gravity"],
            torque / inertia,
            -thrust / (p["isp"] * G0),
            gimbal_slew(command, gimbal, p) if lag else 0.0,
        ]
    )


def hamilton_product(a, b):
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


def body_to_world(q):
    """Return the matrix whose column i is ``q (0, e_i) q*``, body axis i in the world."""
    conjugate = q * np.array([1.0, -1.0, -1.0, -1.0])
    columns = [
        hamilton_product(hamilton_product(q, np.r_[0.0, e]), conjugate)[1:] for e in np.eye(3)
    ]
    return np.stack(columns, axis=1)


def rigid_rates(y, action, p, wind, options):
    """Return the 6-DOF equations of motion for ``y = (position, velocity, quaternion,
    angular velocity, mass, gimbal)`` of length 3 + 3 + 4 + 3 + 1 + 2."""
    position, velocity, q, omega = y[0:3], y[3:6], y[6:10], y[10:13]
    mass, gimbal = y[13], y[14:16]
    thrust = engine_thrust(mass, action, p)
    command = np.clip(action[1:3], -p["gimbal_limit"], p["gimbal_limit"])
    g_x, g_y = gimbal if options["gimbal_lag"] else command

    engine_force = thrust * np.array(
        [-np.sin(g_y) * np.cos(g_x), np.sin(g_x), np.cos(g_y) * np.cos(g_x)]
    )
    engine_torque = np.cross([0.0, 0.0, -p["engine_offset"]], engine_force)

    matrix = body_to_world(q)
    axis = matrix[:, 2]
    horizontal_wind = gust_wind(wind, position[2])
    air_velocity = velocity - np.array([horizontal_wind[0], horizontal_wind[1], 0.0])
    density = p["sea_level_density"] * np.exp(-position[2] / p["scale_height"])
    axial, normal = drag_forces(air_velocity, axis, density, p)
    aero_torque = matrix.T @ np.cross(p["pressure_center_offset"] * axis, normal)

    acceleration = (matrix @ engine_force + axial + normal) / mass
    acceleration -= np.array([0.0, 0.0, p["gravity"]])
    if options["planet_rotation"]:
        spin = p["planet_angular_velocity"]
        acceleration -= 2.0 * np.cross(spin, velocity) + np.cross(spin, np.cross(spin, position))

    rcs = np.zeros(3)
    if options["rcs"]:
        rcs = np.clip(action[3:6], -p["rcs_torque_limit"], p["rcs_torque_limit"])
    inertia = mass * p["radius_of_gyration"] ** 2
    torque = engine_torque + aero_torque + rcs
    angular_acceleration = (torque - np.cross(omega, inertia * omega)) / inertia

    gimbal_rate = gimbal_slew(command, gimbal, p) if options["gimbal_lag"] else np.zeros(2)
    return np.concatenate(
        [
            velocity,
            acceleration,
            0.5 * hamilton_product(q, np.r_[0.0, omega]),
            angular_acceleration,
            [-thrust / (p["isp"] * G0)],
            gimbal_rate,
        ]
    )


def reference_solution(rates, y0, times):
    """Integrate ``dy/dt = rates(y)`` with DOP853 at rtol 1e-12 and return y at ``times``."""
    solution = solve_ivp(
        lambda t, y: rates(y),
        (0.0, float(times[-1])),
        y0,
        method="DOP853",
        t_eval=times,
        rtol=1e-12,
        atol=1e-12,
    )
    assert solution.success, solution.message
    return solution.y.T


def assert_close_to_reference(name, actual, expected, relative, scale_floor):
    """Assert ``|actual - expected| <= relative * max(|expected|, scale_floor)``."""
    actual = np.asarray(actual)
    scale = np.maximum(np.abs(expected), scale_floor)
    error = np.max(np.abs(actual - expected) / scale)
    assert error <= relative, f"{name}: relative error {error:.3g} > {relative:.0e}"


ODE_WIND = (7.0, [2.0, 1.0], [0.02, 0.07], [0.3, 1.9])
"""Steady 7 m/s along +x with two gust modes (wavelengths of 314 m and 90 m)."""


def ode_tolerance(vehicle):
    """Return the relative tolerance of an RK4 rollout at 0.01 s against DOP853 over 5 s.

    Without gimbal lag the measured error is up to 5e-10 of the scale of a state entry,
    so 1e-8 is used. The 0.1 s time constant of the gimbal lag is only ten RK4 steps, and
    there the measured truncation error is up to 5e-7 (it falls 16-fold per halving of dt,
    as fourth order should), so 2e-6 is used. A wrong or missing term of the dynamics
    gives errors of 1e-4 and more.
    """
    return 2e-6 if vehicle.gimbal_lag else 1e-8


def rollout_samples(trajectory):
    """Return the states after each control step: the recorded starts from the second
    step on, followed by the final state."""
    return jax.tree_util.tree_map(
        lambda rows, last: np.concatenate([np.asarray(rows)[1:], np.asarray(last)[None]]),
        trajectory.states,
        trajectory.final.vehicle,
    )


@pytest.mark.parametrize("vehicle", [PLANAR, PLANAR_LAG], ids=["planar", "planar-gimbal-lag"])
def test_planar_matches_scipy(x64, vehicle):
    """Planar RK4 rollout at 0.01 s against DOP853 on the transcribed equations.

    A 5 s powered descent from 1500 m with drag, a gusty wind, a centre of pressure
    above the centre of mass and a constant nonzero gimbal command. It stays airborne,
    so no touchdown logic is involved. Each state entry is compared relative to its own
    scale (at least 1 m, 1 m/s, 0.01 rad, 0.01 rad/s or 1 kg).
    """
    params = planar_params(pressure_center_offset=4.0)
    wind = in_plane_wind(*ODE_WIND, axes=1)
    start = make_planar_state(
        -40.0,
        1500.0,
        10.0,
        -90.0,
        32_000.0,
        pitch=0.08,
        pitch_rate=-0.03,
        wind=wind,
        dtype=jnp.float64,
    )
    action = np.array([0.7, 0.04])

    trajectory = open_loop_rollout(vehicle, FINE_SIM, as_actions(action), start, params)

    assert not bool(trajectory.final.touched_down)
    times = FINE_SIM.control_dt * np.arange(1, FINE_SIM.horizon + 1)
    y0 = np.array([-40.0, 1500.0, 0.08, 10.0, -90.0, -0.03, 32_000.0, 0.0])
    expected = reference_solution(
        lambda y: planar_rates(
            y, action, plain_params(params), plain_wind(wind), vehicle.gimbal_lag
        ),
        y0,
        times,
    )
    names = ("x", "z", "pitch", "vx", "vz", "pitch_rate", "mass", "gimbal")
    floors = (1.0, 1.0, 0.01, 1.0, 1.0, 0.01, 1.0, 0.01)
    states = rollout_samples(trajectory)
    for column, (name, floor) in enumerate(zip(names, floors, strict=True)):
        assert_close_to_reference(
            name, getattr(states, name), expected[:, column], ode_tolerance(vehicle), floor
        )
    assert abs(float(trajectory.final.vehicle.pitch) - 0.08) > 0.05
    if vehicle.gimbal_lag:
        assert float(trajectory.final.vehicle.gimbal) == pytest.approx(0.04, rel=1e-3)


RIGID_ODE_ACTIONS = {
    "drag": (0.7, 0.01, -0.015),
    "drag-lag-rcs-planet": (0.7, 0.01, -0.015, 2.0e4, -3.0e4, 6.0e4),
}
"""Constant actions; the last RCS torque exceeds its 5e4 N m limit, so it is clipped."""


@pytest.mark.parametrize(
    ("vehicle", "action_name"),
    [(RIGID, "drag"), (RIGID_ALL, "drag-lag-rcs-planet")],
    ids=["rigid", "rigid-lag-rcs-planet"],
)
def test_rigid_body_matches_scipy(x64, vehicle, action_name):
    """6-DOF RK4 rollout at 0.01 s against DOP853 on the transcribed equations.

    A 5 s powered descent from 1500 m with drag and a gusty wind along x and y. The
    booster starts tilted about an oblique axis and spinning about all three body axes.
    Its transverse radii of gyration differ, so ``omega x I omega`` is nonzero, and both
    gimbal axes are deflected. The second vehicle adds gimbal lag, RCS torques and a
    planet rotation of 3.7e-3 rad/s, exaggerated 50 times over Earth's so that the
    Coriolis term shows. The reference integrates the
    quaternion with its kinematic equation and normalises it only at the sample times;
    diffland normalises after every step. Tolerances as in :func:`ode_tolerance`.
    """
    params = rigid_params(
        pressure_center_offset=4.0,
        radius_of_gyration=(10.0, 11.5, 1.5),
        planet_angular_velocity=(1.0e-3, -2.0e-3, 3.0e-3),
    )
    wind = aero.Wind(
        steady=jnp.asarray([6.0, -3.0], jnp.float64),
        gust_amplitude=jnp.asarray([[2.0, 1.0], [1.0, -1.5]], jnp.float64),
        gust_wavenumber=jnp.asarray([0.02, 0.07], jnp.float64),
        gust_phase=jnp.asarray([[0.3, 2.0], [1.9, 0.5]], jnp.float64),
    )
    attitude = rotation.from_axis_angle(jnp.asarray([0.3, 1.0, 0.2], jnp.float64), 0.1)
    start = make_rigid_body_state(
        (-40.0, 25.0, 1500.0),
        (10.0, -6.0, -90.0),
        32_000.0,
        quaternion=attitude,
        angular_velocity=(0.02, -0.03, 0.05),
        wind=wind,
        dtype=jnp.float64,
    )
    action = np.array(RIGID_ODE_ACTIONS[action_name])

    trajectory = open_loop_rollout(vehicle, FINE_SIM, as_actions(action), start, params)

    assert not bool(trajectory.final.touched_down)
    options = {
        "gimbal_lag": vehicle.gimbal_lag,
        "rcs": vehicle.rcs,
        "planet_rotation": vehicle.planet_rotation,
    }
    y0 = np.concatenate(
        [
            start.position,
            start.velocity,
            start.quaternion,
            start.angular_velocity,
            [start.mass],
            start.gimbal,
        ]
    )
    times = FINE_SIM.control_dt * np.arange(1, FINE_SIM.horizon + 1)
    expected = reference_solution(
        lambda y: rigid_rates(y, action, plain_params(params), plain_wind(wind), options),
        y0,
        times,
    )
    quaternions = expected[:, 6:10]
    expected[:, 6:10] = quaternions / np.linalg.norm(quaternions, axis=1, keepdims=True)

    states = rollout_samples(trajectory)
    blocks = {
        "position": (slice(0, 3), 1.0),
        "velocity": (slice(3, 6), 1.0),
        "quaternion": (slice(6, 10), 0.01),
        "angular_velocity": (slice(10, 13), 0.01),
        "mass": (slice(13, 14), 1.0),
        "gimbal": (slice(14, 16), 0.01),
    }
    for name, (columns, floor) in blocks.items():
        actual = np.asarray(getattr(states, name)).reshape(len(times), -1)
        assert_close_to_reference(name, actual, expected[:, columns], ode_tolerance(vehicle), floor)
    tilt = np.degrees(np.arccos(np.asarray(vehicle.body_axis(trajectory.final.vehicle))[2]))
    assert tilt > 10.0
    # The roll rate starts at 0.05 rad/s and is driven by omega x I omega (and the RCS).
    assert abs(float(trajectory.final.vehicle.angular_velocity[2]) - 0.05) > 0.05


# -- gradients of the touchdown state -----------------------------------------------------

GRADIENT_SIM = SimConfig(control_dt=0.05, substeps=1, horizon=60)
"""3 s; the short descents below touch down after about 2.3 s."""
GRADIENT_THROTTLE = 0.42
"""Slightly above the hover throttle of a 35 t booster (0.406), so the descent from 60 m
at 20 m/s slows only a little before touchdown."""


def planar_touchdown(inputs, params):
    """Return (touchdown time, vz, x, pitch) at touchdown and the touchdown flag, for
    ``inputs = (z, vz, x, pitch, gimbal command)`` at the start of an open-loop descent."""
    z, vz, x, pitch, gimbal = inputs
    wind = aero.steady_wind(jnp.asarray([5.0], jnp.float64))
    start = make_planar_state(
        x, z, 1.0, vz, 35_000.0, pitch=pitch, pitch_rate=0.01, wind=wind, dtype=jnp.float64
    )
    actions = jnp.stack([jnp.asarray(GRADIENT_THROTTLE, jnp.float64), gimbal])[None]
    step_index = jnp.zeros((), jnp.int32)
    final = rollout(
        PLANAR, GRADIENT_SIM, open_loop_policy(actions), start, params, step_index
    ).final
    vehicle = final.vehicle
    outputs = jnp.stack([final.touchdown_time, vehicle.vz, vehicle.x, vehicle.pitch])
    return outputs, final.touched_down


def rigid_touchdown(inputs, params):
    """Return (touchdown time, vz, x, pitch, y) at touchdown and the touchdown flag, for
    ``inputs = (z, vz, x, pitch, g_y command, g_x command)``.

    The pitch is ``2 atan2(q_y, q_w)``, the planar pitch while the motion stays in the
    x-z plane and a smooth function of the attitude near it otherwise.
    """
    z, vz, x, pitch, gimbal_y, gimbal_x = inputs
    zero = jnp.zeros_like(z)
    start = make_rigid_body_state(
        jnp.stack([x, zero, z]),
        jnp.stack([zero + 1.0, zero, vz]),
        jnp.asarray(35_000.0, jnp.float64),
        quaternion=rotation.from_axis_angle(jnp.asarray(Y_AXIS, jnp.float64), pitch),
        angular_velocity=jnp.stack([zero, zero + 0.01, zero]),
        gimbal=jnp.zeros(2, jnp.float64),
        wind=aero.steady_wind(jnp.asarray([5.0, 0.0], jnp.float64)),
    )
    throttle = jnp.asarray(GRADIENT_THROTTLE, jnp.float64)
    actions = jnp.stack([throttle, gimbal_x, gimbal_y])[None]
    step_index = jnp.zeros((), jnp.int32)
    final = rollout(RIGID, GRADIENT_SIM, open_loop_policy(actions), start, params, step_index).final
    vehicle = final.vehicle
    pitch_end = 2.0 * jnp.arctan2(vehicle.quaternion[2], vehicle.quaternion[0])
    outputs = jnp.stack(
        [
            final.touchdown_time,
            vehicle.velocity[2],
            vehicle.position[0],
            pitch_end,
            vehicle.position[1],
        ]
    )
    return outputs, final.touched_down


@functools.partial(jax.jit, static_argnums=0)
def touchdown_jvp(touchdown, inputs, direction, params):
    """Return the outputs of ``touchdown``, their derivative along ``direction`` and the
    touchdown flag (forward mode: five or six inputs, one compile for all directions)."""
    return jax.jvp(lambda i: touchdown(i, params), (inputs,), (direction,), has_aux=True)


def jacobian_and_differences(touchdown, inputs, steps, params):
    """Return the forward-mode Jacobian and its central finite-difference estimate."""
    inputs = jnp.asarray(inputs, jnp.float64)
    identity = jnp.eye(inputs.shape[0], dtype=jnp.float64)
    outputs, _, touched = touchdown_jvp(touchdown, inputs, identity[0], params)
    assert bool(touched)
    jacobian = np.stack(
        [np.asarray(touchdown_jvp(touchdown, inputs, row, params)[1]) for row in identity],
        axis=1,
    )
    differences = []
    for row, step in zip(identity, steps, strict=True):
        plus, _, plus_touched = touchdown_jvp(touchdown, inputs + step * row, row, params)
        minus, _, minus_touched = touchdown_jvp(touchdown, inputs - step * row, row, params)
        assert bool(plus_touched)
        assert bool(minus_touched)
        differences.append((np.asarray(plus) - np.asarray(minus)) / (2.0 * step))
    return np.asarray(outputs), jacobian, np.stack(differences, axis=1)


GRADIENT_STEPS = (1e-3, 1e-3, 1e-3, 1e-5, 1e-5, 1e-5)
"""Finite-difference steps for z (m), vz (m/s), x (m), pitch (rad) and the gimbal
commands (rad). Ten times larger steps raise the disagreement a hundredfold (truncation),
ten times smaller ones add rounding."""
GRADIENT_RTOL = 1e-7
"""With :data:`GRADIENT_STEPS` the measured disagreement is 5e-9 in the measure of
:func:`assert_jacobian_close`; a missing chain-rule term changes an entry by 1e-3 or
more."""


def assert_jacobian_close(actual, expected, rtol):
    """Assert ``|actual - expected| <= rtol * (|expected| + 1e-3 * row scale)`` entrywise.

    The row scale is the largest entry of that output's row in ``expected``, so entries
    that are zero by symmetry are compared with a small absolute tolerance instead.
    """
    expected = np.asarray(expected)
    row_scale = np.max(np.abs(expected), axis=1, keepdims=True)
    error = np.abs(np.asarray(actual) - expected) / (np.abs(expected) + 1e-3 * row_scale)
    worst = np.unravel_index(np.argmax(error), error.shape)
    assert error[worst] <= rtol, (
        f"output {worst[0]}, input {worst[1]}: {actual[worst]:.10g} vs {expected[worst]:.10g} "
        f"(relative error {error[worst]:.2g} > {rtol:.0e})"
    )


@pytest.mark.parametrize("gimbal", [0.0, 0.02], ids=["zero-gimbal", "gimbal"])
def test_planar_touchdown_gradients_fd(x64, gimbal):
    """Forward-mode derivatives of the touchdown time, vz, x and pitch with respect to the
    start z, vz, x, pitch and a constant gimbal command match central differences."""
    params = planar_params(pressure_center_offset=3.0)
    inputs = (60.0, -20.0, 3.0, 0.04, gimbal)

    outputs, jacobian, differences = jacobian_and_differences(
        planar_touchdown, inputs, GRADIENT_STEPS[:5], params
    )

    assert 1.5 < outputs[0] < 3.0
    assert_jacobian_close(jacobian, differences, GRADIENT_RTOL)
    # The final x moves one to one with the start x, and nothing else depends on it.
    np.testing.assert_allclose(jacobian[:, 2], [0.0, 0.0, 1.0, 0.0], atol=1e-12)
    assert np.all(np.abs(jacobian[:, 4]) > 1e-3)


@pytest.mark.parametrize("gimbal", [0.0, 0.02], ids=["zero-gimbal", "gimbal"])
def test_rigid_body_touchdown_gradients_fd(x64, gimbal):
    """As for the planar booster, with the 6-DOF booster and the out-of-plane gimbal g_x
    (held at zero) as a sixth input and the lateral position y as a fifth output."""
    params = rigid_params(pressure_center_offset=3.0)
    inputs = (60.0, -20.0, 3.0, 0.04, gimbal, 0.0)

    outputs, jacobian, differences = jacobian_and_differences(
        rigid_touchdown, inputs, GRADIENT_STEPS, params
    )

    assert 1.5 < outputs[0] < 3.0
    assert_jacobian_close(jacobian, differences, GRADIENT_RTOL)
    # g_x tilts the booster out of the plane: y moves, the in-plane outputs do not at first
    # order (mirror symmetry in y).
    assert abs(jacobian[4, 5]) > 1e-3
    np.testing.assert_allclose(jacobian[:4, 5], 0.0, atol=1e-9)


@pytest.mark.parametrize("gimbal", [0.0, 0.02], ids=["zero-gimbal", "gimbal"])
def test_rigid_body_touchdown_gradients_match_planar(x64, gimbal):
    """The in-plane block of the 6-DOF Jacobian is the planar Jacobian, up to the
    different RK4 truncation of the quaternion and the angle at dt = 0.05 s (measured
    3e-8, tolerance 1e-6)."""
    planar_p = planar_params(pressure_center_offset=3.0)
    rigid_p = rigid_params(pressure_center_offset=3.0)
    inputs = jnp.asarray((60.0, -20.0, 3.0, 0.04, gimbal), jnp.float64)

    planar_columns, rigid_columns = [], []
    for row in np.eye(5):
        planar_columns.append(touchdown_jvp(planar_touchdown, inputs, row, planar_p)[1])
        rigid_inputs = jnp.concatenate([inputs, jnp.zeros(1, jnp.float64)])
        rigid_row = jnp.asarray(np.append(row, 0.0), jnp.float64)
        rigid_columns.append(touchdown_jvp(rigid_touchdown, rigid_inputs, rigid_row, rigid_p)[1])

    planar_jacobian = np.stack(planar_columns, axis=1)
    rigid_jacobian = np.stack(rigid_columns, axis=1)
    assert_jacobian_close(rigid_jacobian[:4], planar_jacobian, 1e-6)
    np.testing.assert_allclose(rigid_jacobian[4], 0.0, atol=1e-12)
