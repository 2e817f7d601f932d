"""Tests of the brax landing environments: registration, shapes, brax's wrappers, the
reward at crashes, landings and losses, and brax's PPO and APG trainers on them."""

import functools
import math

import brax.envs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax.envs.wrappers.training import AutoResetWrapper, EpisodeWrapper, EvalWrapper
from brax.training.agents.ppo import networks as ppo_networks
from brax.training.agents.ppo import train as ppo

import diffland  # noqa: F401  (registers the environments)
from diffland.controllers import PIDGains, VerticalPID
from diffland.dynamics import (
    SimConfig,
    VerticalLander,
    falcon9_like,
    make_planar_state,
    make_rigid_body_state,
    make_vertical_state,
    open_loop_policy,
    rollout,
)
from diffland.envs import (
    METRIC_NAMES,
    LandingEnv,
    PlanarLandingEnv,
    RigidBodyLandingEnv,
    VerticalLandingEnv,
    touchdown_cost,
)
from diffland.envs.landing import ShapingScales
from diffland.training import landing_cost_terms

POOL_SIZE = 64
MIN_THROTTLE = jnp.array([-1.0])
FULL_THROTTLE = jnp.array([1.0])
SOFT_LANDING_GAINS = PIDGains(kp=0.2, ki=1e-4, kd=1e-4, decel_fraction=0.6, touchdown_speed=1.0)
"""PID gains for a 0.1 s control step. When they were chosen, they landed all 64 start
states of the vertical test pool within the limits (HAND_TUNED_GAINS landed 12)."""


def stack(*states):
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *states)


def planar_starts():
    """Two planar starts low enough that minimum throttle reaches the ground in 40 steps."""
    return stack(
        make_planar_state(x=12.0, z=135.0, vx=3.0, vz=-40.0, mass=30_000.0, pitch=0.05),
        make_planar_state(x=-8.0, z=165.0, vx=-2.0, vz=-45.0, mass=30_000.0, pitch=-0.03),
    )


def rigid_body_starts():
    return stack(
        make_rigid_body_state(position=(20.0, 5.0, 800.0), velocity=(2.0, 0.0, -120.0), mass=31e3),
        make_rigid_body_state(
            position=(-30.0, 0.0, 1200.0), velocity=(0.0, 1.0, -150.0), mass=32e3
        ),
    )


def low_fast_start():
    """Return a vertical start 100 m up at 60 m/s; minimum throttle hits the ground in
    under 2 s."""
    return make_vertical_state([100.0], [-60.0], [30_000.0])


@pytest.fixture(scope="module")
def vertical_env():
    return VerticalLandingEnv(pool_size=POOL_SIZE)


@pytest.fixture(scope="module")
def planar_env():
    return PlanarLandingEnv(start_states=planar_starts())


@pytest.fixture(scope="module")
def rigid_body_env():
    return RigidBodyLandingEnv(start_states=rigid_body_starts())


def crash_env(**options):
    return LandingEnv(VerticalLander(), falcon9_like(), low_fast_start(), **options)


@pytest.fixture(scope="module")
def crash_run():
    """Return the env, the reset state and 40 stepped states of a vertical lander at
    minimum throttle from 100 m and 60 m/s. It crashes in under 2 s."""
    env = crash_env(crash_penalty=100.0)
    start = env.reset(jax.random.PRNGKey(0))
    return env, start, run_episode(env, lambda _: MIN_THROTTLE, start, 40)


def at(states, index):
    return jax.tree_util.tree_map(lambda leaf: leaf[index], states)


def run_episode(env, policy, state, steps):
    """Scan ``steps`` env steps with ``policy(state) -> action``; return the states after
    each step, stacked."""

    def body(current, _):
        following = env.step(current, policy(current))
        return following, following

    _, states = jax.jit(lambda s: jax.lax.scan(body, s, None, length=steps))(state)
    return states


def first_done(states) -> int:
    done = np.asarray(states.done)
    assert done.any(), "the episode did not end"
    return int(np.argmax(done))


def episode_return(states) -> float:
    end = first_done(states)
    return float(np.sum(np.asarray(states.reward)[: end + 1]))


def run_pid_episode(env, state, steps):
    """Scan ``steps`` env steps under VerticalPID with SOFT_LANDING_GAINS."""
    pid = VerticalPID(env.vehicle, env.dt, SOFT_LANDING_GAINS)
    example = state.pipeline_state.vehicle
    variables = pid.init(jax.random.PRNGKey(0), example, env.params, pid.initial_carry())
    low, high = env.vehicle.action_bounds(env.params)

    def body(carry, _):
        current, memory = carry
        vehicle_state = current.pipeline_state.vehicle
        throttle, memory = pid.apply(variables, vehicle_state, env.params, memory)
        following = env.step(current, 2.0 * (throttle - low) / (high - low) - 1.0)
        return (following, memory), following

    def run(start):
        return jax.lax.scan(body, (start, pid.initial_carry()), None, length=steps)[1]

    return jax.jit(run)(state)


def test_registration_returns_classes():
    built = {
        "diffland_vertical": brax.envs.get_environment("diffland_vertical", pool_size=8),
        "diffland_planar": brax.envs.get_environment(
            "diffland_planar", start_states=planar_starts()
        ),
        "diffland_rigid_body": brax.envs.get_environment(
            "diffland_rigid_body", start_states=rigid_body_starts()
        ),
    }

    assert type(built["diffland_vertical"]) is VerticalLandingEnv
    assert type(built["diffland_planar"]) is PlanarLandingEnv
    assert type(built["diffland_rigid_body"]) is RigidBodyLandingEnv
    assert built["diffland_vertical"].pool_size == 8


def test_registration_is_idempotent():
    diffland.envs.register_environments()

    env = brax.envs.get_environment("diffland_planar", start_states=planar_starts())

    assert type(env) is PlanarLandingEnv


def test_env_defaults(vertical_env):
    assert vertical_env.dt == 0.1
    assert vertical_env.sim_config.substeps == 2
    assert vertical_env.episode_length == 300
    assert vertical_env.backend == "diffland"
    assert vertical_env.pool_size == POOL_SIZE


def test_kwargs_override_sim_settings():
    env = PlanarLandingEnv(
        start_states=planar_starts(), control_dt=0.05, substeps=3, episode_length=40
    )

    assert env.dt == 0.05
    assert env.sim_config.substeps == 3
    assert env.episode_length == 40
    assert env.pool_size == 2


@pytest.mark.parametrize(
    ("name", "sizes"),
    [("vertical_env", (6, 1)), ("planar_env", (12, 2)), ("rigid_body_env", (18, 3))],
)
def test_reset_step_shapes_and_dtypes(name, sizes, request):
    env = request.getfixturevalue(name)

    def reset_and_step(key):
        state = env.reset(key)
        return state, env.step(state, jnp.zeros(env.action_size))

    state, stepped = jax.jit(reset_and_step)(jax.random.PRNGKey(3))

    assert (env.observation_size, env.action_size) == sizes
    for current in (state, stepped):
        assert current.obs.shape == (env.observation_size,)
        assert current.obs.dtype == jnp.float32
        assert current.reward.shape == ()
        assert current.reward.dtype == jnp.float32
        assert current.done.shape == ()
        assert current.done.dtype == jnp.float32
        assert set(current.metrics) == set(METRIC_NAMES)
        assert "steps" not in current.info
    assert float(stepped.pipeline_state.time) == pytest.approx(env.dt)
    assert float(stepped.done) == 0.0
    assert np.isfinite(float(stepped.reward))


def test_reset_draws_from_pool(vertical_env):
    keys = jax.random.split(jax.random.PRNGKey(0), 32)

    starts = jax.jit(jax.vmap(vertical_env.reset))(keys).pipeline_state.vehicle

    pool_altitudes = np.asarray(vertical_env.pool.altitude)
    assert np.all(np.isin(np.asarray(starts.altitude), pool_altitudes))
    assert len(np.unique(np.asarray(starts.altitude))) > 1


def test_action_maps_onto_bounds(vertical_env):
    low = float(vertical_env.params.throttle_min)
    high = float(vertical_env.params.throttle_max)

    def throttle(unit):
        return float(vertical_env.physical_action(jnp.array([unit]))[0])

    assert throttle(-1.0) == pytest.approx(low)
    assert throttle(1.0) == pytest.approx(high)
    assert throttle(0.0) == pytest.approx(0.5 * (low + high))
    assert throttle(-5.0) == pytest.approx(low)
    assert throttle(5.0) == pytest.approx(high)


def test_episode_wrapper_ends_at_episode_length(vertical_env):
    # The pool's starts are at least 1500 m up, at most 300 m/s down, with 3 t of
    # propellant or more. Full throttle then needs over 5.8 s to reach the ground and
    # 9.8 s to burn 3 t, so the lander is still flying after 25 steps of 0.1 s.
    length = 25
    env = EpisodeWrapper(vertical_env, episode_length=length, action_repeat=1)
    state = env.reset(jax.random.PRNGKey(5))

    states = run_episode(env, lambda _: FULL_THROTTLE, state, length)

    done = np.asarray(states.done)
    steps = np.asarray(states.info["steps"])
    assert np.all(done[: length - 1] == 0.0)
    assert done[length - 1] == 1.0
    np.testing.assert_array_equal(steps, np.arange(1, length + 1))
    assert float(states.info["truncation"][length - 1]) == 1.0
    assert np.all(np.asarray(states.pipeline_state.vehicle.altitude) > 0.0)


def test_auto_reset_restarts_after_done(vertical_env):
    env = AutoResetWrapper(EpisodeWrapper(vertical_env, episode_length=300, action_repeat=1))
    state = env.reset(jax.random.PRNGKey(7))

    states = run_episode(env, lambda _: MIN_THROTTLE, state, 200)

    end = first_done(states)
    after = at(states, end)
    np.testing.assert_array_equal(np.asarray(after.obs), np.asarray(state.obs))
    assert float(after.pipeline_state.time) == 0.0
    assert not bool(after.pipeline_state.touched_down)
    assert float(after.metrics["crashed"]) == 1.0
    assert float(states.info["steps"][end + 1]) == 1.0
    assert float(states.pipeline_state.time[end + 1]) == pytest.approx(vertical_env.dt)


def test_eval_wrapper_steps(vertical_env):
    # Brax's evaluator wraps the env in EvalWrapper, which adds metrics["reward"] at
    # reset; EpisodeWrapper's scan needs step to keep that key.
    env = EvalWrapper(EpisodeWrapper(vertical_env, episode_length=10, action_repeat=1))

    state = jax.jit(lambda key: env.step(env.reset(key), MIN_THROTTLE))(jax.random.PRNGKey(0))

    assert set(state.metrics) == {"reward", *METRIC_NAMES}
    assert float(state.info["eval_metrics"].episode_steps) == 1.0


def test_crash_sets_done_and_penalty(crash_run):
    # The last reward is the shaping step to the zero potential at touchdown, less the
    # propellant cost, the terminal cost and the crash penalty.
    env, _, states = crash_run
    end = first_done(states)
    before = at(states, end - 1).pipeline_state.vehicle
    final = at(states, end)

    measures = env.vehicle.touchdown_measures(before, env.params)
    potential = env.shaping.potential(env.vehicle.height(before, env.params), measures)
    burnt = float(before.mass - final.pipeline_state.vehicle.mass)
    expected = (
        -float(potential)
        - env.cost.propellant * burnt / env.cost.propellant_scale
        - float(final.metrics["terminal_cost"])
        - 100.0
    )
    assert float(final.done) == 1.0
    assert float(final.metrics["crashed"]) == 1.0
    assert float(final.metrics["touched_down"]) == 1.0
    assert float(final.metrics["success"]) == 0.0
    assert float(final.metrics["terminal_cost"]) > 100.0
    assert float(final.reward) == pytest.approx(expected, rel=1e-5)


def test_crash_return_matches_cost_terms(crash_run):
    # The shaping sums to -Phi(s_0) over an episode that ends, so the return is that
    # constant less the propellant cost, the terminal cost and the crash penalty.
    env, start, states = crash_run
    end = first_done(states)
    final = at(states, end)

    initial = start.pipeline_state.vehicle
    measures = env.vehicle.touchdown_measures(initial, env.params)
    potential = env.shaping.potential(env.vehicle.height(initial, env.params), measures)
    burnt = float(initial.mass - final.pipeline_state.vehicle.mass)
    expected = (
        -float(potential)
        - env.cost.propellant * burnt / env.cost.propellant_scale
        - float(final.metrics["terminal_cost"])
        - env.crash_penalty
    )
    assert episode_return(states) == pytest.approx(expected, rel=1e-4)


def test_ended_state_is_absorbing(crash_run):
    _, _, states = crash_run
    end = first_done(states)

    after = jax.tree_util.tree_map(lambda leaf: leaf[end + 1 :], states)

    assert np.all(np.asarray(after.reward) == 0.0)
    assert np.all(np.asarray(after.done) == 1.0)
    assert np.all(np.asarray(after.metrics["crashed"]) == 0.0)
    final_altitude = np.asarray(states.pipeline_state.vehicle.altitude[end])
    np.testing.assert_array_equal(np.asarray(after.pipeline_state.vehicle.altitude), final_altitude)


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf])
def test_non_finite_action_ends_episode(vertical_env, bad):
    state = vertical_env.reset(jax.random.PRNGKey(3))

    after = jax.jit(vertical_env.step)(state, jnp.array([bad], jnp.float32))
    valid = jax.jit(vertical_env.step)(state, MIN_THROTTLE)

    assert float(after.done) == 1.0
    assert float(after.metrics["lost"]) == 1.0
    assert np.isfinite(float(after.reward))
    assert float(after.metrics["terminal_cost"]) > 0.0
    assert float(after.reward) < float(valid.reward) - vertical_env.crash_penalty
    assert np.all(np.isfinite(np.asarray(after.obs)))
    np.testing.assert_array_equal(
        np.asarray(after.pipeline_state.vehicle.altitude),
        np.asarray(state.pipeline_state.vehicle.altitude),
    )


def test_crash_returns_less_than_soft_landing(vertical_env):
    start = vertical_env.reset(jax.random.PRNGKey(11))

    crash = run_episode(vertical_env, lambda _: MIN_THROTTLE, start, 300)
    landing = run_pid_episode(vertical_env, start, 300)

    assert float(at(crash, first_done(crash)).metrics["crashed"]) == 1.0
    assert float(at(landing, first_done(landing)).metrics["success"]) == 1.0
    assert episode_return(crash) < episode_return(landing) - vertical_env.success_bonus


def touchdown_terms_of_rollout(env, start, action, steps):
    """Return the touchdown terms of the APG landing cost for an open-loop rollout."""
    config = SimConfig(control_dt=env.dt, substeps=env.sim_config.substeps, horizon=steps)
    actions = jnp.tile(env.physical_action(action), (steps, 1))

    @jax.jit
    def terms_of(start):
        policy = open_loop_policy(actions)
        trajectory = rollout(env.vehicle, config, policy, start, env.params, jnp.array(0))
        return landing_cost_terms(env.vehicle, trajectory, env.params, env.cost)

    terms, outcome = terms_of(start)
    assert bool(outcome.touched_down)
    return terms["touchdown_speed"] + terms["touchdown_attitude"] + terms["crash"]


def test_terminal_cost_matches_landing_cost_vertical(crash_run):
    env, start, states = crash_run

    expected = touchdown_terms_of_rollout(env, start.pipeline_state.vehicle, MIN_THROTTLE, 40)

    terminal_cost = float(states.metrics["terminal_cost"][first_done(states)])
    assert terminal_cost == pytest.approx(float(expected), rel=1e-4)


def test_terminal_cost_matches_landing_cost_planar(planar_env):
    # A touchdown with lateral speed, tilt and pad distance exercises the attitude terms.
    action = jnp.array([-1.0, 0.0])
    start = planar_env.reset(jax.random.PRNGKey(0))
    states = run_episode(planar_env, lambda _: action, start, 40)

    expected = touchdown_terms_of_rollout(planar_env, start.pipeline_state.vehicle, action, 40)

    end = first_done(states)
    assert float(states.metrics["touched_down"][end]) == 1.0
    terminal_cost = float(states.metrics["terminal_cost"][end])
    assert terminal_cost == pytest.approx(float(expected), rel=1e-4)


def test_lost_vehicle_charged_as_impact():
    # 2 kg of propellant last less than one control step at full throttle, so the
    # lander is lost in flight and charged for the free fall from its state.
    start = make_vertical_state([500.0], [-20.0], [25_602.0])
    env = LandingEnv(VerticalLander(), falcon9_like(), start)

    state = jax.jit(lambda key: env.step(env.reset(key), FULL_THROTTLE))(jax.random.PRNGKey(0))

    final = state.pipeline_state.vehicle
    gravity = float(env.params.gravity)
    impact_speed = math.sqrt(float(final.velocity) ** 2 + 2 * gravity * float(final.altitude))
    measures = env.vehicle.touchdown_measures(final, env.params).replace(
        vertical_speed=jnp.float32(impact_speed)
    )
    assert float(state.done) == 1.0
    assert float(state.metrics["lost"]) == 1.0
    assert float(state.metrics["touched_down"]) == 0.0
    assert float(state.metrics["terminal_cost"]) == pytest.approx(
        float(touchdown_cost(env.cost, measures)), rel=1e-4
    )


def test_invalid_options_raise():
    with pytest.raises(ValueError, match="ceiling_factor"):
        crash_env(ceiling_factor=1.0)
    with pytest.raises(ValueError, match="crash_penalty"):
        crash_env(crash_penalty=-1.0)
    with pytest.raises(ValueError, match="not a batch"):
        LandingEnv(VerticalLander(), falcon9_like(), make_vertical_state(100.0, -60.0, 3e4))
    with pytest.raises(ValueError, match="tilt_deg"):
        ShapingScales(tilt_deg=0.0)


def test_start_without_propellant_raises():
    empty = make_vertical_state([500.0, 400.0], [-20.0, -30.0], [30_000.0, 25_600.5])

    with pytest.raises(ValueError, match="index 1"):
        LandingEnv(VerticalLander(), falcon9_like(), empty)


def test_smoke_ppo_train():
    env = brax.envs.get_environment("diffland_vertical", pool_size=POOL_SIZE, substeps=1)
    network_factory = functools.partial(
        ppo_networks.make_ppo_networks,
        policy_hidden_layer_sizes=(16,),
        value_hidden_layer_sizes=(16,),
    )

    _, params, metrics = ppo.train(
        environment=env,
        num_timesteps=40,
        episode_length=10,
        num_envs=4,
        batch_size=4,
        num_minibatches=2,
        unroll_length=5,
        num_updates_per_batch=1,
        num_evals=1,
        num_eval_envs=4,
        network_factory=network_factory,
        seed=0,
    )

    leaves = jax.tree_util.tree_leaves(params)
    assert leaves
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in leaves)
    assert "eval/episode_success" in metrics
    assert all(np.all(np.isfinite(np.asarray(value))) for value in metrics.values())


def test_apg_loss_gradient_is_finite(crash_run):
    # The loss of brax's APG trainer: minus the mean reward of a rollout of a tanh
    # policy, differentiated through env.step. The 30 steps reach the ground.
    env, start, _ = crash_run
    key = jax.random.PRNGKey(1)
    weights = {
        "kernel": 0.1 * jax.random.normal(key, (env.observation_size, env.action_size)),
        "bias": jnp.zeros(env.action_size),
    }

    def loss(weights):
        def body(state, _):
            action = jnp.tanh(state.obs @ weights["kernel"] + weights["bias"])
            following = env.step(state, action)
            return following, following.reward

        final, rewards = jax.lax.scan(body, start, None, length=30)
        return -jnp.mean(rewards), final

    gradient, final = jax.jit(jax.grad(loss, has_aux=True))(weights)

    assert float(final.done) == 1.0
    for leaf in jax.tree_util.tree_leaves(gradient):
        assert np.all(np.isfinite(np.asarray(leaf)))
    assert float(jnp.abs(gradient["bias"]).sum()) > 0.0


def test_replicated_tree_has_one_copy_per_device():
    from diffland.envs import compat

    tree = {"a": jnp.arange(3.0), "b": jnp.asarray(2.0)}
    devices = jax.local_devices()

    replicated = compat.device_put_replicated(tree, devices)

    assert replicated["a"].shape == (len(devices), 3)
    assert replicated["b"].shape == (len(devices),)
    np.testing.assert_array_equal(np.asarray(replicated["a"])[0], np.arange(3.0))
    assert hasattr(jax, "device_put_replicated")
