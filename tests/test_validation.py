"""Invalid inputs raise ValueError at construction, with a message naming the value."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffland.controllers import PIDGains
from diffland.dynamics import (
    SimConfig,
    VerticalLander,
    VerticalState,
    falcon9_like,
    final_state,
    final_state_batch,
    make_vertical_params,
    make_vertical_state,
)
from diffland.dynamics.base import check_finite_tree
from diffland.scenarios import LandingBurnScenario, sample_landing_burn_states
from diffland.training import LandingTask, TrainConfig, Trainer

VEHICLE = VerticalLander()
VALID_PARAMS = dict(
    gravity=9.81,
    max_thrust=845.0e3,
    throttle_min=0.4,
    throttle_max=1.0,
    isp=282.0,
    dry_mass=25_600.0,
)


class UncallableController(nn.Module):
    """A controller that fails the test if the trainer initialises or rolls it out."""

    @nn.compact
    def __call__(self, state, params, carry):
        raise AssertionError("the trainer used the controller before validating its inputs")

    def initial_carry(self, dtype=None):
        return ()


def params_with(**overrides):
    return make_vertical_params(**{**VALID_PARAMS, **overrides})


# -- make_vertical_params ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"dry_mass": -1.0}, r"params\.dry_mass = -1\.0 must be positive"),
        ({"dry_mass": 0.0}, r"params\.dry_mass = 0\.0 must be positive"),
        ({"dry_mass": math.nan}, r"dry_mass = nan is NaN"),
        ({"max_thrust": -5.0}, r"params\.max_thrust = -5\.0 must be positive"),
        ({"isp": math.nan}, r"isp = nan is NaN"),
        ({"gravity": math.inf}, r"params\.gravity contains a non-finite value \(inf\)"),
        ({"reference_area": -1.0}, r"params\.reference_area = -1\.0 must be zero or positive"),
        ({"throttle_min": -0.1}, r"throttle bounds \[-0\.1\d*, 1\.0\] must satisfy"),
    ],
    ids=[
        "negative-dry",
        "zero-dry",
        "nan-dry",
        "negative-thrust",
        "nan-isp",
        "inf-gravity",
        "negative-area",
        "negative-throttle",
    ],
)
def test_make_params_rejects(overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        params_with(**overrides)


def test_make_params_rejects_reversed_throttle():
    with pytest.raises(
        ValueError, match=r"throttle_min = 0\.\d+ is not below throttle_max"
    ) as info:
        params_with(throttle_min=0.9, throttle_max=0.4)

    assert "reversed" in str(info.value)


def test_make_params_rejects_equal_throttle():
    with pytest.raises(ValueError, match="is not below throttle_max"):
        params_with(throttle_min=0.5, throttle_max=0.5)


def test_make_params_accepts_numpy_scalars():
    params = params_with(gravity=np.float32(9.81), dry_mass=np.int64(25_600))

    assert float(params.dry_mass) == 25_600.0


# -- vehicle states ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "pattern"),
    [
        ((100.0, -5.0, -30_000.0), r"state\.mass = -30000\.0 must be positive"),
        ((100.0, -5.0, 0.0), r"state\.mass = 0\.0 must be positive"),
        ((100.0, -5.0, math.nan), r"state\.mass contains a non-finite value \(nan\)"),
        ((math.nan, -5.0, 30_000.0), r"state\.altitude contains a non-finite value \(nan\)"),
        ((100.0, math.inf, 30_000.0), r"state\.velocity contains a non-finite value \(inf\)"),
        (
            (100.0, -5.0, 20_000.0),
            r"state\.mass = 20000\.0 kg is below params\.dry_mass = 25600\.0 kg",
        ),
    ],
    ids=["negative-mass", "zero-mass", "nan-mass", "nan-altitude", "inf-velocity", "below-dry"],
)
def test_vehicle_validate_rejects(state, pattern):
    with pytest.raises(ValueError, match=pattern):
        VEHICLE.validate(make_vertical_state(*state), falcon9_like())


def test_vehicle_validate_accepts_valid_batch():
    states = make_vertical_state([100.0, 2000.0], [-5.0, -250.0], [25_600.0, 31_000.0])

    assert VEHICLE.validate(states, falcon9_like()) is None


# -- trainer construction ----------------------------------------------------------------


def batch_with(mass_values, altitude_values=(2000.0, 1800.0, 2500.0)):
    return make_vertical_state(list(altitude_values), [-250.0, -220.0, -260.0], mass_values)


@pytest.mark.parametrize(
    ("states", "pattern"),
    [
        (batch_with([31_000.0, -1.0, 30_000.0]), r"state\.mass = \[.*-1\..*\] must be positive"),
        (batch_with([31_000.0, math.nan, 30_000.0]), r"state\.mass contains a non-finite value"),
        (
            batch_with([31_000.0, 20_000.0, 30_000.0]),
            r"below params\.dry_mass = 25600\.0 kg",
        ),
        (
            batch_with([31_000.0, 29_000.0, 30_000.0], [2000.0, math.nan, 2500.0]),
            r"state\.altitude contains a non-finite value",
        ),
    ],
    ids=["negative-mass", "nan-mass", "below-dry", "nan-altitude"],
)
def test_trainer_rejects_bad_train_states(states, pattern):
    task = LandingTask(VEHICLE, falcon9_like(), SimConfig(horizon=10))

    with pytest.raises(ValueError, match=pattern):
        Trainer(task, UncallableController(), TrainConfig(steps=1, batch_size=2), states)


def test_trainer_rejects_bad_eval_states():
    task = LandingTask(VEHICLE, falcon9_like(), SimConfig(horizon=10))
    good = batch_with([31_000.0, 29_000.0, 30_000.0])
    bad = batch_with([31_000.0, math.nan, 30_000.0])

    with pytest.raises(ValueError, match=r"state\.mass contains a non-finite value"):
        Trainer(task, UncallableController(), TrainConfig(steps=1, batch_size=2), good, bad)


def test_trainer_rejects_reversed_task_throttle():
    # Parameters built without make_vertical_params skip its check, so the trainer repeats it.
    params = falcon9_like().replace(
        throttle_min=jax.numpy.float32(0.9), throttle_max=jax.numpy.float32(0.4)
    )
    task = LandingTask(VEHICLE, params, SimConfig(horizon=10))
    states = batch_with([31_000.0, 29_000.0, 30_000.0])

    with pytest.raises(ValueError, match="is not below throttle_max"):
        Trainer(task, UncallableController(), TrainConfig(steps=1, batch_size=2), states)


# -- configuration objects ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "pattern"),
    [
        ({"control_dt": 0.0}, r"control_dt = 0\.0 is invalid"),
        ({"control_dt": -0.1}, r"control_dt = -0\.1 is invalid"),
        ({"control_dt": math.nan}, r"control_dt = nan is invalid"),
        ({"control_dt": "0.1"}, r"control_dt = '0\.1' is invalid"),
        ({"substeps": 0}, r"substeps = 0 must be an integer >= 1"),
        ({"substeps": 1.5}, r"substeps = 1\.5 must be an integer >= 1"),
        ({"horizon": 0}, r"horizon = 0 must be an integer >= 1"),
    ],
    ids=[
        "zero-dt",
        "negative-dt",
        "nan-dt",
        "string-dt",
        "zero-substeps",
        "float-substeps",
        "zero-horizon",
    ],
)
def test_sim_config_rejects(settings, pattern):
    with pytest.raises(ValueError, match=pattern):
        SimConfig(**settings)


def test_sim_config_rejects_infinite_dt():
    with pytest.raises(ValueError, match="control_dt = inf"):
        SimConfig(control_dt=math.inf)


@pytest.mark.parametrize(
    ("settings", "pattern"),
    [
        ({"steps": 0}, r"TrainConfig\.steps = 0 must be an integer >= 1"),
        ({"batch_size": -4}, r"TrainConfig\.batch_size = -4 must be an integer >= 1"),
        ({"checkpoint_every": 0}, r"TrainConfig\.checkpoint_every = 0"),
        ({"learning_rate": 0.0}, r"TrainConfig\.learning_rate = 0\.0 must be a positive"),
        ({"learning_rate": math.nan}, r"learning_rate = nan"),
        ({"clip_norm": -1.0}, r"TrainConfig\.clip_norm = -1\.0 must be a positive number"),
        ({"warmup_steps": -5}, r"TrainConfig\.warmup_steps = -5 must be an integer >= 0"),
        ({"final_learning_rate_fraction": 2.0}, r"final_learning_rate_fraction = 2\.0 must lie"),
        ({"final_learning_rate_fraction": "0.1"}, r"final_learning_rate_fraction = '0\.1' must"),
        ({"max_consecutive_nonfinite": 0}, r"TrainConfig\.max_consecutive_nonfinite = 0 must"),
        ({"seed": 1.5}, r"TrainConfig\.seed = 1\.5 must be an integer"),
        ({"num_devices": 0}, r"TrainConfig\.num_devices = 0 must be an integer >= 1, or None"),
    ],
    ids=[
        "zero-steps",
        "negative-batch",
        "zero-checkpoint",
        "zero-lr",
        "nan-lr",
        "negative-clip",
        "negative-warmup",
        "fraction-above-one",
        "fraction-string",
        "zero-nonfinite-limit",
        "float-seed",
        "zero-devices",
    ],
)
def test_train_config_rejects(settings, pattern):
    with pytest.raises(ValueError, match=pattern):
        TrainConfig(**settings)


@pytest.mark.parametrize(
    ("settings", "pattern"),
    [
        ({"kp": -0.1}, r"PIDGains\.kp = -0\.1 must be a positive number"),
        ({"ki": math.nan}, r"PIDGains\.ki = nan must be a positive number"),
        ({"touchdown_speed": 0.0}, r"PIDGains\.touchdown_speed = 0\.0 must be a positive"),
        ({"decel_fraction": 1.0}, r"PIDGains\.decel_fraction = 1\.0 must lie strictly"),
        ({"decel_fraction": 0.0}, r"PIDGains\.decel_fraction = 0\.0 must lie strictly"),
    ],
    ids=["negative-kp", "nan-ki", "zero-touchdown-speed", "beta-one", "beta-zero"],
)
def test_pid_gains_reject(settings, pattern):
    with pytest.raises(ValueError, match=pattern):
        PIDGains(**settings)


@pytest.mark.parametrize(
    "settings",
    [
        {"altitude_range": (3000.0, 1500.0)},
        {"speed_range": (0.0, 300.0)},
        {"propellant_range": (3000.0, math.nan)},
    ],
    ids=["reversed-altitude", "zero-speed", "nan-propellant"],
)
def test_scenario_rejects_bad_ranges(settings):
    name = next(iter(settings))

    with pytest.raises(ValueError, match=rf"{name} = .* must satisfy 0 < low <= high"):
        LandingBurnScenario(**settings)


def test_sample_count_must_be_positive():
    with pytest.raises(ValueError, match="count = 0 must be at least 1"):
        sample_landing_burn_states(jax.random.PRNGKey(0), 0, VEHICLE, falcon9_like())


# -- start-state batches and other constructor arguments ---------------------------------


@pytest.mark.parametrize(
    ("states", "pattern"),
    [
        (
            VerticalState(
                altitude=jnp.array([2000.0, 2100.0, 2200.0]),
                velocity=jnp.array([-250.0, -240.0]),
                mass=jnp.array([31000.0, 31000.0]),
            ),
            r"different batch sizes",
        ),
        (make_vertical_state(2000.0, -250.0, 31000.0), r"has no batch axis"),
        (
            VerticalState(
                altitude=jnp.array([2000, 2100]),
                velocity=jnp.array([-250.0, -240.0]),
                mass=jnp.array([31000.0, 31000.0]),
            ),
            r"\.altitude has dtype int32",
        ),
        (
            make_vertical_state([2000.0, -5.0], [-250.0, -240.0], [31000.0, 31000.0]),
            r"state\.altitude = \[ *2000\.? +-5\.?\] m: a lander must start above the ground",
        ),
    ],
    ids=["mismatched-batch", "no-batch-axis", "integer-field", "below-ground"],
)
def test_trainer_rejects_bad_start_batch(states, pattern):
    task = LandingTask(VerticalLander(), falcon9_like(), SimConfig(horizon=10))
    with pytest.raises(ValueError, match=pattern):
        Trainer(task, UncallableController(), TrainConfig(steps=1), states)


def test_sim_config_rejects_string_integrator():
    with pytest.raises(ValueError, match="integrator = 'rk4' is not an Integrator"):
        SimConfig(integrator="rk4")


def test_make_params_rejects_integer_dtype():
    with pytest.raises(ValueError, match="dtype = int32 is invalid"):
        params_with(dtype=jnp.int32)


def test_non_finite_message_gives_index():
    altitude = np.full(4096, 100.0)
    altitude[5] = math.nan
    states = make_vertical_state(altitude, np.full(4096, -5.0), np.full(4096, 30_000.0))

    with pytest.raises(ValueError, match=r"at index \[5\] \(1 of 4096 entries\)"):
        check_finite_tree(states, "state")


# -- state dtypes at the simulation entry points -----------------------------------------


def _cast_states(states, dtype):
    return jax.tree_util.tree_map(lambda x: jnp.round(x).astype(dtype), states)


def _hold_throttle(state, params, carry):
    return jnp.array([0.7], jnp.float32), carry


@pytest.mark.parametrize(
    ("dtype", "pattern"),
    [
        (jnp.int32, r"initial_states\.altitude has dtype int32; .* must be a float"),
        (jnp.bfloat16, r"initial_states\.altitude has dtype bfloat16, too coarse"),
        (jnp.float16, r"initial_states\.altitude has dtype float16, too coarse"),
    ],
)
def test_batch_rejects_non_float32_states(dtype, pattern):
    states = make_vertical_state([2000.0, 2100.0], [-250.0, -240.0], [31000.0, 31000.0])
    with pytest.raises(ValueError, match=pattern):
        final_state_batch(
            VEHICLE,
            SimConfig(horizon=3),
            _hold_throttle,
            _cast_states(states, dtype),
            falcon9_like(),
            (),
            devices=jax.local_devices()[:1],
        )


def test_jit_rejects_bfloat16_state():
    state = _cast_states(make_vertical_state(2000.0, -250.0, 31000.0), jnp.bfloat16)

    def run(state):
        return final_state(VEHICLE, SimConfig(horizon=3), _hold_throttle, state, falcon9_like(), ())

    # The check reads only dtypes, so it also stops a jitted call before XLA compiles it.
    with pytest.raises(ValueError, match=r"state\.velocity has dtype bfloat16"):
        jax.jit(run).lower(state.replace(altitude=state.altitude.astype(jnp.float32)))


def _run_three_steps(state, policy, params):
    return final_state(VEHICLE, SimConfig(horizon=3), policy, state, params, ())


def _throttle_policy(dtype):
    return lambda state, params, carry: (jnp.array([0.7], dtype), carry)


def test_state_of_python_numbers_runs():
    state = VerticalState(altitude=2000.0, velocity=-250.0, mass=31000.0)

    final = _run_three_steps(state, _throttle_policy(jnp.float32), falcon9_like())

    assert final.vehicle.altitude.dtype == jnp.float32
    assert final.touched_down.dtype == jnp.bool_


def test_mixed_state_dtypes_rejected(x64):
    state = VerticalState(
        altitude=jnp.float32(2000.0), velocity=jnp.float64(-250.0), mass=jnp.float32(31000.0)
    )

    with pytest.raises(ValueError, match=r"state\.altitude has dtype float32 but state\.velocity"):
        _run_three_steps(state, _throttle_policy(jnp.float32), falcon9_like())


@pytest.mark.parametrize(
    ("state_dtype", "action_dtype", "params_dtype", "pattern"),
    [
        (jnp.float32, jnp.float64, jnp.float32, r"the action has dtype float64 but the state"),
        (None, jnp.float32, None, r"state has dtype float64 \(its leaves are Python numbers"),
        (jnp.float32, jnp.float32, jnp.float64, r"params\.gravity has dtype float64 but"),
    ],
    ids=["float32-state-float64-action", "weak-state-float32-action", "float64-params"],
)
def test_step_dtype_mismatch_rejected(x64, state_dtype, action_dtype, params_dtype, pattern):
    state = make_vertical_state(2000.0, -250.0, 31000.0, dtype=state_dtype)
    policy = _throttle_policy(action_dtype)
    params = falcon9_like(dtype=params_dtype)

    with pytest.raises(ValueError, match=pattern):
        _run_three_steps(state, policy, params)
    with pytest.raises(ValueError, match=pattern):
        jax.jit(lambda s: _run_three_steps(s, policy, params)).lower(state)


@pytest.mark.parametrize(
    ("action_dtype", "params_dtype"),
    [(jnp.float64, None), (jnp.float32, jnp.float64), (jnp.float64, jnp.float32)],
    ids=["weak-params", "float32-action", "float32-params"],
)
def test_float64_state_with_narrower_leaves_runs(x64, action_dtype, params_dtype):
    # JAX computes with the wider dtype, so float32 inputs keep a float64 state float64.
    state = make_vertical_state(2000.0, -250.0, 31000.0, dtype=jnp.float64)
    params = falcon9_like(dtype=params_dtype)

    final = _run_three_steps(state, _throttle_policy(action_dtype), params)

    assert final.vehicle.altitude.dtype == jnp.float64


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.int32])
def test_environment_rejects_narrow_dtype(dtype):
    from diffland.envs import LandingEnv

    states = make_vertical_state([2000.0, 2100.0], [-250.0, -240.0], [31000.0, 31000.0])

    with pytest.raises(ValueError, match=r"dtype = .* is invalid: .* float32 or float64"):
        LandingEnv(VEHICLE, falcon9_like(), states, dtype=dtype)
