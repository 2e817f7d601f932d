"""Domain randomisation of the planar booster: ranges, episodes, sensor model, the new
actuator terms and the adaptive NeuroPID.

Physics checks compare with closed forms in float64 (``x64`` fixture): the thrust-line
offset of ``engine_misalignment`` and the first-order response of the throttle lag.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffland.controllers.cascaded import CascadedPID, NeuroCascadedPID
from diffland.dynamics import (
    PlanarBooster,
    SimConfig,
    components,
    falcon9_like_planar,
    make_planar_state,
    open_loop_policy,
    rollout,
    simulate,
)
from diffland.randomization import (
    PLANAR_OUT_OF_DISTRIBUTION_RANGES,
    PLANAR_TRAINING_RANGES,
    Episode,
    RandomizationRanges,
    SensorModel,
    sample_episodes,
)
from diffland.training import LandingTask, batch_rollout, controller_rollout, init_controller
from diffland.training.task import batch_landing_summary

SIM = SimConfig(control_dt=0.25, substeps=1, horizon=12)
"""3 s of flight in 0.25 s steps: enough to exercise the controllers, cheap to compile."""

UNIT_FACTORS = RandomizationRanges(
    dry_mass_scale=(1.0, 1.0),
    max_thrust_scale=(1.0, 1.0),
    isp_scale=(1.0, 1.0),
    radius_of_gyration_scale=(1.0, 1.0),
    engine_misalignment_deg=(0.0, 0.0),
)


def start_states(count, dtype=jnp.float32, throttle=None):
    """Return ``count`` planar start states 1-2 km up, a little off the pad and tilted."""
    index = np.arange(count)
    states = [
        make_planar_state(
            x=10.0 + 3.0 * i,
            z=1000.0 + 100.0 * i,
            vx=-1.0 + 0.5 * i,
            vz=-150.0 - 5.0 * i,
            mass=31_000.0 + 200.0 * i,
            pitch=0.01 * ((-1) ** i),
            pitch_rate=0.002 * i,
            dtype=dtype,
            throttle=throttle,
        )
        for i in index
    ]
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *states)


def first(tree):
    return jax.tree_util.tree_map(lambda x: x[0], tree)


def take(tree, index):
    return jax.tree_util.tree_map(lambda x: x[index], tree)


# -- ranges and the sampler ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "bounds", "message"),
    [
        ("max_thrust_scale", (1.1, 0.9), "low 1.1 is above high 0.9"),
        ("isp_scale", (0.0, 1.1), "must be positive"),
        ("steady_wind", (-1.0, 3.0), "must be >= 0"),
        ("throttle_time_constant", (0.0, 0.2), "time constant must be positive"),
        ("engine_misalignment_deg", (-95.0, 1.0), "within (-90, 90) degrees"),
        ("latency_steps", (0, 1.5), "whole numbers"),
        ("gust_rms", (0.0, math.nan), "finite numbers"),
        ("dry_mass_scale", 1.0, "pair of finite numbers"),
    ],
)
def test_ranges_reject_invalid(field, bounds, message):
    with pytest.raises(ValueError, match=field) as error:
        RandomizationRanges(**{field: bounds})
    assert message in str(error.value)


def test_sampler_draws_within_ranges():
    params = falcon9_like_planar(drag=True)
    states = start_states(4)
    states = jax.tree_util.tree_map(lambda x: jnp.tile(x, (64,) + (1,) * (x.ndim - 1)), states)
    ranges = PLANAR_TRAINING_RANGES
    episodes = sample_episodes(jax.random.PRNGKey(3), states, params, ranges, throttle_lag=True)
    drawn = episodes.params

    def within(values, bounds):
        values = np.asarray(values)
        return bool(np.all(values >= bounds[0] - 1e-6) and np.all(values <= bounds[1] + 1e-6))

    assert within(drawn.dry_mass / params.dry_mass, ranges.dry_mass_scale)
    assert within(drawn.max_thrust / params.max_thrust, ranges.max_thrust_scale)
    assert within(drawn.isp / params.isp, ranges.isp_scale)
    assert within(
        drawn.radius_of_gyration / params.radius_of_gyration, ranges.radius_of_gyration_scale
    )
    assert within(np.rad2deg(drawn.engine_misalignment), ranges.engine_misalignment_deg)
    assert within(drawn.throttle_time_constant, ranges.throttle_time_constant)
    assert within(np.abs(episodes.state.wind.steady), ranges.steady_wind)
    assert within(episodes.noise_scale, ranges.noise_scale)
    assert set(np.unique(episodes.latency)) == {0, 1}
    # The propellant on board is unchanged: the start mass moves with the dry mass.
    np.testing.assert_allclose(
        episodes.state.mass - drawn.dry_mass, states.mass - params.dry_mass, atol=0.01
    )
    np.testing.assert_array_equal(episodes.state.throttle, params.throttle_min)
    # The draws vary from episode to episode.
    assert np.std(np.asarray(drawn.max_thrust)) > 0.01 * float(params.max_thrust)


def test_sampler_excludes_training_box():
    params = falcon9_like_planar(drag=True)
    states = start_states(4)
    states = jax.tree_util.tree_map(lambda x: jnp.tile(x, (32,) + (1,) * (x.ndim - 1)), states)
    episodes = sample_episodes(
        jax.random.PRNGKey(4),
        states,
        params,
        PLANAR_OUT_OF_DISTRIBUTION_RANGES,
        excluded=PLANAR_TRAINING_RANGES,
        throttle_lag=True,
    )
    draws = {
        "max_thrust_scale": np.asarray(episodes.params.max_thrust / params.max_thrust),
        "dry_mass_scale": np.asarray(episodes.params.dry_mass / params.dry_mass),
        "isp_scale": np.asarray(episodes.params.isp / params.isp),
        "radius_of_gyration_scale": np.asarray(
            episodes.params.radius_of_gyration / params.radius_of_gyration
        ),
        "engine_misalignment_deg": np.rad2deg(np.asarray(episodes.params.engine_misalignment)),
        "throttle_time_constant": np.asarray(episodes.params.throttle_time_constant),
        "noise_scale": np.asarray(episodes.noise_scale),
        "latency_steps": np.asarray(episodes.latency),
    }
    # Wind is left out of this check: its sign is drawn, only its speed is ranged.
    draws["steady_wind"] = np.abs(np.asarray(episodes.state.wind.steady[:, 0]))
    inside = PLANAR_TRAINING_RANGES.contains(draws)
    assert not inside.any()


def test_throttle_range_needs_lag():
    params = falcon9_like_planar()
    ranges = RandomizationRanges(throttle_time_constant=(0.1, 0.2))
    with pytest.raises(ValueError, match="throttle_lag=True"):
        sample_episodes(jax.random.PRNGKey(0), start_states(2), params, ranges)


# -- zero-width ranges and the nominal model -----------------------------------------------


def test_unit_factors_reproduce_nominal_model():
    vehicle = PlanarBooster(drag=True)
    params = falcon9_like_planar(drag=True)
    task = LandingTask(vehicle, params, SIM)
    states = start_states(3)
    episodes = sample_episodes(jax.random.PRNGKey(1), states, params, UNIT_FACTORS)

    # The drawn parameters and start states are the nominal ones, bit for bit.
    for name, value in vars(params).items():
        np.testing.assert_array_equal(
            getattr(episodes.params, name), np.broadcast_to(value, (3,)), err_msg=name
        )
    for name in ("x", "z", "pitch", "vx", "vz", "pitch_rate", "mass"):
        np.testing.assert_array_equal(
            getattr(episodes.state, name), getattr(states, name), err_msg=name
        )
    action = jnp.array([0.7, 0.02])
    drawn = vehicle.derivative(first(episodes.state), action, first(episodes.params))
    nominal = vehicle.derivative(first(states), action, params)
    for name in ("vx", "vz", "pitch_rate", "mass"):
        np.testing.assert_array_equal(getattr(drawn, name), getattr(nominal, name), err_msg=name)

    # Whole rollouts compile to different programs (parameters per lander or shared), so
    # they agree to float32 rounding.
    controller = CascadedPID(vehicle, SIM.control_dt)
    variables = init_controller(task, controller, jax.random.PRNGKey(0), first(states))
    nominal = jax.jit(lambda s: batch_rollout(task, controller, variables, s))(states)
    randomised = jax.jit(lambda e: batch_rollout(task, controller, variables, e))(episodes)
    for name in ("x", "z", "pitch", "vx", "vz", "pitch_rate", "mass"):
        np.testing.assert_allclose(
            getattr(randomised.states, name),
            getattr(nominal.states, name),
            rtol=1e-5,
            atol=1e-6,
            err_msg=name,
        )
    np.testing.assert_allclose(randomised.actions, nominal.actions, rtol=1e-5, atol=1e-6)


# -- actuator terms, analytic --------------------------------------------------------------


def test_misalignment_side_force_and_torque(x64):
    offset = 0.01
    params = falcon9_like_planar(dtype=jnp.float64, engine_misalignment=offset)
    state = make_planar_state(0.0, 1000.0, 0.0, -100.0, 30_000.0, dtype=jnp.float64)
    action = jnp.array([1.0, 0.0])

    rate = PlanarBooster().derivative(state, action, params)

    thrust = float(params.max_thrust)
    inertia = 30_000.0 * float(params.radius_of_gyration) ** 2
    np.testing.assert_allclose(rate.vx, -thrust * math.sin(offset) / 30_000.0, rtol=1e-12)
    np.testing.assert_allclose(
        rate.vz, thrust * math.cos(offset) / 30_000.0 - float(params.gravity), rtol=1e-12
    )
    expected_torque = float(params.engine_offset) * thrust * math.sin(offset)
    np.testing.assert_allclose(rate.pitch_rate, expected_torque / inertia, rtol=1e-12)


def test_throttle_lag_step_response(x64):
    tau = 0.5
    params = falcon9_like_planar(dtype=jnp.float64, throttle_time_constant=tau)
    vehicle = PlanarBooster(throttle_lag=True)
    start = make_planar_state(0.0, 2000.0, 0.0, -100.0, 35_000.0, dtype=jnp.float64, throttle=0.4)
    config = SimConfig(control_dt=0.05, substeps=5, horizon=21)
    actions = jnp.array([[1.0, 0.0]])

    trajectory = rollout(vehicle, config, open_loop_policy(actions), start, params, jnp.array(0))

    times = config.control_dt * np.arange(config.horizon)
    expected = 1.0 - 0.6 * np.exp(-times / tau)
    np.testing.assert_allclose(trajectory.states.throttle, expected, rtol=1e-7)
    # At t = tau the throttle has covered 1 - 1/e of the step.
    covered = (trajectory.states.throttle[10] - 0.4) / 0.6
    np.testing.assert_allclose(covered, 1.0 - math.exp(-1.0), rtol=1e-7)
    # The thrust follows the lagged throttle, not the command.
    rate = vehicle.derivative(start, actions[0], params)
    np.testing.assert_allclose(
        rate.vz, 0.4 * float(params.max_thrust) / 35_000.0 - float(params.gravity), rtol=1e-12
    )


def test_throttle_state_must_match_option():
    params = falcon9_like_planar()
    state = make_planar_state(0.0, 1000.0, 0.0, -100.0, 30_000.0)
    with pytest.raises(ValueError, match="state.throttle is None"):
        PlanarBooster(throttle_lag=True).validate(state, params)
    lagged = make_planar_state(0.0, 1000.0, 0.0, -100.0, 30_000.0, throttle=0.2)
    with pytest.raises(ValueError, match="outside the throttle bounds"):
        PlanarBooster(throttle_lag=True).validate(lagged, params)


# -- sensor model ----------------------------------------------------------------------------


def sensed_sequence(sensor, episode, steps):
    """Feed states whose x is the step number through the sensor; return the x seen."""

    def policy(state, params, carry):
        del params
        return state.x, carry

    sensed, carry = sensor.wrap(policy, (), episode)

    def step(carry, index):
        state = episode.state.replace(x=index.astype(episode.state.x.dtype))
        seen, carry = sensed(state, None, carry)
        return carry, seen

    _, seen = jax.lax.scan(step, carry, jnp.arange(steps))
    return np.asarray(seen)


def single_episode(noise_scale=0.0, latency=0, key=0):
    state = make_planar_state(0.0, 1000.0, 0.0, -100.0, 30_000.0)
    return Episode(
        state=state,
        params=falcon9_like_planar(),
        sensor_key=jax.random.key_data(jax.random.PRNGKey(key)),
        noise_scale=jnp.asarray(noise_scale, jnp.float32),
        latency=jnp.asarray(latency, jnp.int32),
    )


@pytest.mark.parametrize("latency", [0, 1, 3])
def test_latency_delivers_state_from_d_steps_ago(latency):
    sensor = SensorModel(max_latency=3)
    seen = sensed_sequence(sensor, single_episode(latency=latency), 10)
    steps = np.arange(10)
    # Before `latency` steps the start state (x = 0) is seen.
    np.testing.assert_array_equal(seen, np.maximum(steps - latency, 0))


def test_noise_has_configured_std():
    sensor = SensorModel((("x", 2.0), ("vz", 0.5)))
    episode = single_episode(noise_scale=0.5, key=7)

    def policy(state, params, carry):
        del params
        return jnp.stack([state.x, state.z, state.vz]), carry

    sensed, carry = sensor.wrap(policy, (), episode)

    def step(carry, _):
        seen, carry = sensed(episode.state, None, carry)
        return carry, seen

    _, seen = jax.lax.scan(step, carry, None, length=20_000)
    seen = np.asarray(seen)
    # Standard deviations 2.0 * 0.5 and 0.5 * 0.5; the sample std has a relative
    # standard error of 1/sqrt(2 n) = 0.5 %, so 3 % is about six standard errors.
    np.testing.assert_allclose(seen[:, 0].std(), 1.0, rtol=0.03)
    np.testing.assert_allclose(seen[:, 2].std(), 0.25, rtol=0.03)
    assert abs(seen[:, 0].mean()) < 0.03
    np.testing.assert_array_equal(seen[:, 1], 1000.0)  # z has no noise configured


def test_sensor_rejects_bad_settings():
    with pytest.raises(ValueError, match="max_latency"):
        SensorModel(max_latency=-1)
    with pytest.raises(ValueError, match="noise_std"):
        SensorModel((("x", -1.0),))
    vehicle = PlanarBooster()
    params = falcon9_like_planar()
    task = LandingTask(vehicle, params, SIM, sensor=SensorModel((("height", 1.0),), 1))
    states = start_states(2)
    with pytest.raises(ValueError, match="pass a batch of episodes"):
        task.validate(states)
    episodes = sample_episodes(jax.random.PRNGKey(0), states, params, UNIT_FACTORS)
    with pytest.raises(ValueError, match="does not have"):
        task.validate(episodes)
    task = LandingTask(vehicle, params, SIM, sensor=SensorModel(max_latency=1))
    with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
        task.validate(episodes.replace(latency=jnp.array([0, 2], jnp.int32)))


# -- batched and per-episode rollouts ------------------------------------------------------


def test_batched_episodes_match_single_rollouts(x64):
    vehicle = PlanarBooster(drag=True, throttle_lag=True)
    params = falcon9_like_planar(drag=True, dtype=jnp.float64)
    task = LandingTask(vehicle, params, SIM, sensor=SensorModel((("x", 0.5), ("vz", 0.1)), 1))
    states = start_states(3, dtype=jnp.float64)
    episodes = sample_episodes(
        jax.random.PRNGKey(5), states, params, PLANAR_TRAINING_RANGES, throttle_lag=True
    )
    task.validate(episodes)
    controller = NeuroCascadedPID(vehicle, SIM.control_dt, adaptive=True)
    variables = init_controller(task, controller, jax.random.PRNGKey(0), first(episodes))

    batched = jax.jit(lambda e: batch_rollout(task, controller, variables, e))(episodes)
    single = jax.jit(lambda e: controller_rollout(task, controller, variables, e))

    for index in range(3):
        alone = single(take(episodes, index))
        np.testing.assert_allclose(
            batched.actions[index], alone.actions, rtol=1e-9, atol=1e-12, err_msg=str(index)
        )
        np.testing.assert_allclose(
            batched.states.z[index], alone.states.z, rtol=1e-9, err_msg=str(index)
        )
    # The episodes differ, so a wrong pairing of parameters and states would show.
    assert not np.allclose(batched.actions[0], batched.actions[1])


def test_episodes_skip_component_layout(monkeypatch):
    # Each episode has its own physical parameters, which the component layout does not
    # take, so episodes run through jax.vmap even where plain start states do not.
    def fail_on_component_layout(*args):
        raise AssertionError("component layout used")

    monkeypatch.setattr(simulate, "_component_start", fail_on_component_layout)
    vehicle = PlanarBooster()
    params = falcon9_like_planar()
    task = LandingTask(vehicle, params, SIM)
    states = start_states(2)
    episodes = sample_episodes(jax.random.PRNGKey(0), states, params, UNIT_FACTORS)
    controller = CascadedPID(vehicle, SIM.control_dt)
    variables = init_controller(task, controller, jax.random.PRNGKey(0), first(states))
    with components.materializing():
        finals, _ = batch_landing_summary(task, controller, variables, episodes)
        assert finals.vehicle.z.shape == (2,)
        with pytest.raises(AssertionError, match="component layout"):
            batch_landing_summary(task, controller, variables, states)


# -- adaptive NeuroPID -----------------------------------------------------------------------


def test_adaptive_neuro_pid_is_pid_at_zero_correction():
    vehicle = PlanarBooster(drag=True)
    params = falcon9_like_planar(drag=True)
    task = LandingTask(vehicle, params, SIM)
    states = start_states(3)
    pid = CascadedPID(vehicle, SIM.control_dt)
    adaptive = NeuroCascadedPID(vehicle, SIM.control_dt, adaptive=True)
    pid_variables = init_controller(task, pid, jax.random.PRNGKey(0), first(states))
    neuro_variables = init_controller(task, adaptive, jax.random.PRNGKey(1), first(states))
    # The network sees 12 observation features, 4 errors and the thrust estimate.
    kernel = neuro_variables["params"]["correction"]["Dense_0"]["kernel"]
    assert kernel.shape[0] == 12 + 4 + 1

    expected = jax.jit(lambda s: batch_rollout(task, pid, pid_variables, s))(states)
    actual = jax.jit(lambda s: batch_rollout(task, adaptive, neuro_variables, s))(states)

    np.testing.assert_array_equal(actual.actions, expected.actions)


def thrust_ratio_after_rollout(scale):
    """Return the adaptive NeuroPID's thrust estimate after 3 s with thrust scaled."""
    vehicle = PlanarBooster()
    params = falcon9_like_planar()
    task = LandingTask(vehicle, params, SIM)
    states = start_states(1)
    ranges = RandomizationRanges(max_thrust_scale=(scale, scale))
    episode = first(sample_episodes(jax.random.PRNGKey(0), states, params, ranges))
    controller = NeuroCascadedPID(vehicle, SIM.control_dt, adaptive=True)
    variables = init_controller(task, controller, jax.random.PRNGKey(0), episode)
    trajectory = controller_rollout(task, controller, variables, episode)

    def step(carry, state):
        _, carry = controller.apply(variables, state, params, carry)
        return carry, None

    carry, _ = jax.lax.scan(step, controller.initial_carry(), trajectory.states)
    return float(carry.thrust_ratio)


def test_thrust_estimate_tracks_true_thrust():
    """Without drag the measured acceleration along the body axis is the thrust per
    unit mass (times the cosine of the small gimbal angle), so the estimate converges to
    the ratio of actual to nominal thrust."""
    assert thrust_ratio_after_rollout(1.0) == pytest.approx(1.0, abs=0.02)
    assert thrust_ratio_after_rollout(0.9) == pytest.approx(0.9, abs=0.02)


def test_sensor_rollout_with_truncation():
    """Gradient truncation passes every carry leaf through ``jnp.where``, the sensor's
    noise key included; the forward rollout stays the same."""
    vehicle = PlanarBooster()
    params = falcon9_like_planar()
    sensor = SensorModel((("vz", 0.1),), 1)
    states = start_states(2)
    episodes = sample_episodes(
        jax.random.PRNGKey(2), states, params, RandomizationRanges(latency_steps=(1, 1))
    )
    controller = CascadedPID(vehicle, SIM.control_dt)
    results = []
    for truncation in (None, 3):
        config = SimConfig(control_dt=0.25, substeps=1, horizon=12, truncation=truncation)
        task = LandingTask(vehicle, params, config, sensor=sensor)
        variables = init_controller(task, controller, jax.random.PRNGKey(0), first(episodes))
        results.append(batch_rollout(task, controller, variables, episodes).actions)

    np.testing.assert_array_equal(results[0], results[1])


def test_ranges_accept_numpy_scalars():
    ranges = RandomizationRanges(isp_scale=(np.float32(0.9), np.float32(1.1)))

    low, high = ranges.isp_scale
    assert type(low) is float
    assert abs(high - 1.1) < 1e-6
    with pytest.raises(ValueError, match="tuple of \\(field, standard deviation\\) pairs"):
        SensorModel(noise_std=("x", 1.0))
