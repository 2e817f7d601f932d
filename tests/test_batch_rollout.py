"""final_state_batch against jax.vmap of final_state, and the vectorised sine and cosine."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffland.dynamics import (
    PlanarBooster,
    RigidBody,
    SimConfig,
    VerticalLander,
    aero,
    components,
    falcon9_like,
    falcon9_like_planar,
    falcon9_like_rigid_body,
    final_state,
    final_state_batch,
    lower_final_state_batch,
    rotation,
    simulate,
)
from diffland.dynamics.integrators import RK4, SemiImplicitEuler
from diffland.dynamics.planar import make_planar_state
from diffland.dynamics.rigid_body import make_rigid_body_state
from diffland.dynamics.vertical import make_vertical_state

COUNT = 24


def rigid_body_starts(drag: bool):
    """Landers tilted, turning and drifting; with drag, in gusty wind. The centre of mass
    is 17 to 95 m up (the feet about 15 m lower), descending at 10 to 2 m/s, so the low
    ones touch down within a few seconds and the high ones do not."""
    keys = jax.random.split(jax.random.PRNGKey(3), COUNT)
    heights = jnp.linspace(17.0, 95.0, COUNT)
    speeds = jnp.linspace(10.0, 2.0, COUNT)
    angles = jnp.linspace(-0.06, 0.06, COUNT)

    def start(key, height, speed, angle):
        wind = aero.sample_wind(key, 2, 8.0, 2.0, dtype=jnp.float64) if drag else None
        attitude = rotation.from_axis_angle(jnp.array([1.0, 0.4, 0.0]), angle)
        return make_rigid_body_state(
            jnp.stack([3.0, -2.0, height]),
            jnp.stack([1.0, -0.5, -speed]),
            30_000.0,
            attitude,
            angular_velocity=jnp.stack([0.01, -angle / 5.0, 0.002]),
            wind=wind,
        )

    return jax.vmap(start)(keys, heights, speeds, angles)


def steering_policy(state, params, count):
    """Throttle and gimbal that depend on the state, with a step counter as the carry."""
    del params
    throttle = jnp.clip(0.45 + 0.01 * state.velocity[2], 0.4, 1.0)
    gimbal = jnp.clip(-0.2 * state.angular_velocity[:2], -0.08, 0.08)
    return jnp.concatenate([throttle[None], gimbal]), count + 1


def assert_same_final(batched, reference, rtol=1e-9, atol=1e-9):
    np.testing.assert_array_equal(batched.touched_down, reference.touched_down)
    for got, expected in zip(
        jax.tree_util.tree_leaves(batched), jax.tree_util.tree_leaves(reference), strict=True
    ):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


def vmapped_final(vehicle, config, policy, starts, params, carry):
    run = jax.vmap(lambda start: final_state(vehicle, config, policy, start, params, carry))
    return jax.jit(run)(starts)


@pytest.mark.parametrize(
    ("drag", "gimbal_lag", "config"),
    [
        (
            False,
            False,
            SimConfig(control_dt=0.05, substeps=1, horizon=80, integrator=SemiImplicitEuler()),
        ),
        (True, False, SimConfig(control_dt=0.1, substeps=2, horizon=40, integrator=RK4())),
        # With the actuator lag the gimbal angles are a state, not a constant field.
        (True, True, SimConfig(control_dt=0.1, substeps=2, horizon=40, integrator=RK4())),
    ],
    ids=["core", "drag-rk4", "gimbal-lag"],
)
def test_rigid_body_batch_matches_vmap(x64, drag, gimbal_lag, config):
    vehicle = RigidBody(drag=drag, gimbal_lag=gimbal_lag)
    params = falcon9_like_rigid_body(drag=drag, dtype=jnp.float64)
    starts = rigid_body_starts(drag)
    carry = jnp.array(0.0)

    batched = final_state_batch(vehicle, config, steering_policy, starts, params, carry)
    reference = vmapped_final(vehicle, config, steering_policy, starts, params, carry)

    touched = np.asarray(reference.touched_down)
    assert touched.any()
    assert not touched.all()
    assert_same_final(batched, reference)
    # With the lag the gimbal follows its commands. Without it, the angles stay constant.
    moved = np.abs(np.asarray(batched.vehicle.gimbal - starts.gimbal)).max()
    if gimbal_lag:
        assert moved > 1e-3
    else:
        assert moved == 0.0


def test_planar_batch_matches_vmap(x64):
    vehicle = PlanarBooster(drag=True)
    params = falcon9_like_planar(drag=True, dtype=jnp.float64)
    keys = jax.random.split(jax.random.PRNGKey(5), COUNT)
    # The feet are 15 m below the centre of mass, so the lowest lander starts 2 m up.
    heights = jnp.linspace(17.0, 60.0, COUNT)

    def start(key, height):
        wind = aero.sample_wind(key, 1, 8.0, 2.0, dtype=jnp.float64)
        return make_planar_state(2.0, height, 1.0, -height / 4.0, 30_000.0, 0.03, wind=wind)

    starts = jax.vmap(start)(keys, heights)
    config = SimConfig(control_dt=0.1, substeps=2, horizon=40)

    def policy(state, params, carry):
        del params
        throttle = jnp.clip(0.55 - 0.01 * state.vz, 0.4, 1.0)
        return jnp.stack([throttle, -0.2 * state.pitch]), carry

    batched = final_state_batch(vehicle, config, policy, starts, params, ())
    reference = vmapped_final(vehicle, config, policy, starts, params, ())
    assert_same_final(batched, reference)


def vertical_starts():
    heights = jnp.linspace(10.0, 80.0, COUNT)
    return make_vertical_state(heights, -heights / 3.0, jnp.full(COUNT, 30_000.0))


def test_vertical_batch_matches_vmap(x64):
    vehicle = VerticalLander()
    params = falcon9_like(dtype=jnp.float64)
    starts = vertical_starts()
    config = SimConfig(control_dt=0.1, substeps=2, horizon=40)

    def policy(state, params, carry):
        del params
        return jnp.clip(0.6 - 0.02 * state.velocity, 0.4, 1.0)[None], carry

    batched = final_state_batch(vehicle, config, policy, starts, params, ())
    reference = vmapped_final(vehicle, config, policy, starts, params, ())
    assert_same_final(batched, reference)


@pytest.mark.parametrize("landers", [1, 2, 3, 4])
def test_vertical_small_shard_matches_vmap(landers):
    """One or two landers on a device once made XLA abort while compiling (float32, 1-D
    lander, semi-implicit Euler)."""
    vehicle = VerticalLander()
    params = falcon9_like()
    starts = make_vertical_state(
        jnp.linspace(60.0, 80.0, landers), jnp.full(landers, -20.0), jnp.full(landers, 30_000.0)
    )
    config = SimConfig(control_dt=0.1, substeps=1, horizon=20, integrator=SemiImplicitEuler())

    def policy(state, params, carry):
        del params
        return jnp.clip(0.6 - 0.02 * state.velocity, 0.4, 1.0)[None], carry

    batched = final_state_batch(
        vehicle, config, policy, starts, params, (), devices=jax.local_devices()[:1]
    )
    reference = vmapped_final(vehicle, config, policy, starts, params, ())
    assert_same_final(batched, reference, rtol=1e-6, atol=1e-5)


def test_batch_float32_close_to_vmap():
    vehicle = RigidBody(drag=True)
    params = falcon9_like_rigid_body(drag=True)
    with jax.enable_x64(True):
        starts = rigid_body_starts(True)
    starts = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), starts)
    config = SimConfig(control_dt=0.1, substeps=2, horizon=10)
    carry = jnp.array(0.0, jnp.float32)

    batched = final_state_batch(vehicle, config, steering_policy, starts, params, carry)
    reference = vmapped_final(vehicle, config, steering_policy, starts, params, carry)
    assert_same_final(batched, reference, rtol=1e-4, atol=1e-3)


def test_batch_rejects_uneven_split():
    vehicle = VerticalLander()
    params = falcon9_like()
    starts = make_vertical_state(jnp.ones(3) * 50.0, -jnp.ones(3), jnp.ones(3) * 30_000.0)
    config = SimConfig(horizon=2)
    devices = [jax.devices()[0]] * 2
    with pytest.raises(ValueError, match="does not split evenly over 2 devices"):
        final_state_batch(
            vehicle, config, lambda s, p, c: (jnp.ones(1), c), starts, params, (), devices=devices
        )


@pytest.mark.parametrize(
    ("starts", "devices", "message"),
    [
        (
            make_vertical_state(jnp.ones(0), jnp.ones(0), jnp.ones(0)),
            None,
            "contains no lander",
        ),
        (
            make_vertical_state(jnp.ones(4) * 50.0, -jnp.ones(2), jnp.ones(4) * 30_000.0),
            None,
            r"batch sizes \[2, 4\]",
        ),
        (
            make_vertical_state(jnp.ones(2) * 50.0, -jnp.ones(2), jnp.ones(2) * 30_000.0),
            jax.devices()[0],
            "is one device",
        ),
    ],
    ids=["empty", "uneven-leaves", "one-device"],
)
def test_batch_rejects_bad_input(starts, devices, message):
    with pytest.raises(ValueError, match=message):
        lower_final_state_batch(
            VerticalLander(),
            SimConfig(horizon=2),
            lambda s, p, c: (jnp.ones(1), c),
            starts,
            falcon9_like(),
            (),
            devices=devices,
        )


def two_vertical_landers(altitude: float = 50.0) -> object:
    """Two vertical landers, the first at ``altitude`` m and the second at 50 m."""
    altitudes = jnp.array([altitude, 50.0])
    return make_vertical_state(altitudes, -jnp.ones(2), jnp.ones(2) * 30_000.0)


def fail_if_compiled(*args, **kwargs):
    pytest.fail("the batch program ran although the inputs are invalid")


@pytest.mark.parametrize(
    ("starts", "params", "message"),
    [
        (two_vertical_landers(float("nan")), falcon9_like(), r"state.*altitude.*non-finite"),
        (two_vertical_landers(), falcon9_like().replace(max_thrust=-1.0), "params.max_thrust"),
    ],
    ids=["nan-state", "negative-thrust"],
)
@pytest.mark.parametrize("entry", [final_state_batch, lower_final_state_batch])
def test_batch_rejects_invalid_values(monkeypatch, entry, starts, params, message):
    monkeypatch.setattr(simulate, "_final_state_batch", fail_if_compiled)
    monkeypatch.setattr(simulate, "_final_state_batch_nested", fail_if_compiled)

    with pytest.raises(ValueError, match=message):
        entry(
            VerticalLander(),
            SimConfig(horizon=2),
            lambda s, p, c: (jnp.ones(1), c),
            starts,
            params,
            (),
        )


def test_batch_under_jit_checks_closed_over_params():
    params = falcon9_like().replace(max_thrust=-1.0)

    def run(starts):
        return final_state_batch(
            VerticalLander(),
            SimConfig(horizon=2),
            lambda s, p, c: (jnp.ones(1), c),
            starts,
            params,
            (),
        )

    with pytest.raises(ValueError, match="params.max_thrust"):
        jax.jit(run)(two_vertical_landers())


def test_batch_without_validation_runs_nan_state():
    starts = two_vertical_landers(float("nan"))

    final = final_state_batch(
        VerticalLander(),
        SimConfig(horizon=2),
        lambda s, p, c: (jnp.ones(1), c),
        starts,
        falcon9_like(),
        (),
        validate=False,
    )

    assert np.isnan(np.asarray(final.vehicle.altitude)[0])


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "jit"])
def test_sin_cos_float32_accuracy(compiled):
    angles = np.concatenate(
        [
            np.linspace(-400.0, 400.0, 200_001),
            np.random.default_rng(0).uniform(-5e4, 5e4, 10_000),
            # Multiples of pi/2 up to 5e4 rad, where the reduction needs every part.
            np.arange(-31_830, 31_831) * (np.pi / 2),
        ]
    ).astype(np.float32)
    function = jax.jit(components.sin_cos) if compiled else components.sin_cos
    sine, cosine = function(jnp.asarray(angles))
    exact = angles.astype(np.float64)
    np.testing.assert_allclose(np.asarray(sine, np.float64), np.sin(exact), rtol=0, atol=2e-7)
    np.testing.assert_allclose(np.asarray(cosine, np.float64), np.cos(exact), rtol=0, atol=2e-7)


def test_sin_cos_derivative():
    gradient = jax.grad(
        lambda angle: components.sin_cos(angle)[0] + 2 * components.sin_cos(angle)[1]
    )
    value = float(gradient(jnp.float32(0.7)))
    assert value == pytest.approx(np.cos(0.7) - 2.0 * np.sin(0.7), rel=1e-6)


def test_sin_cos_float64_uses_jnp(x64):
    angle = jnp.float64(1.234567890123)
    sine, cosine = components.sin_cos(angle)
    assert float(sine) == float(jnp.sin(angle))
    assert float(cosine) == float(jnp.cos(angle))


def sine_test_angles():
    """float32 angles over [-5e4, 5e4] rad: a dense grid, multiples of pi / 2 (which
    include those of pi) rounded to float32, their float32 neighbours, and random ones."""
    half_turns = np.arange(-31_831, 31_832) * (np.pi / 2)
    multiples = half_turns.astype(np.float32)
    neighbours = np.concatenate(
        [np.nextafter(multiples, np.float32(np.inf)), np.nextafter(multiples, np.float32(-np.inf))]
    )
    random = np.random.default_rng(1).uniform(-5e4, 5e4, 100_000).astype(np.float32)
    grid = np.linspace(-5e4, 5e4, 2_000_001).astype(np.float32)
    return np.concatenate([grid, multiples, neighbours, random])


def test_sin_float32_accuracy():
    angles = sine_test_angles()
    exact = np.sin(angles.astype(np.float64))
    compiled = jax.jit(components.sin)(jnp.asarray(angles))
    eager = components.sin(jnp.asarray(angles))
    np.testing.assert_allclose(np.asarray(compiled, np.float64), exact, rtol=0, atol=2e-7)
    np.testing.assert_allclose(np.asarray(eager, np.float64), exact, rtol=0, atol=2e-7)


def test_sin_zero_and_small_angles():
    assert float(components.sin(jnp.float32(0.0))) == 0.0
    # Below about 4e-4 rad, sin(x) rounds to x in float32. The smallest angle is the
    # smallest normal float32, because XLA on CPU returned 0 for the subnormal 1e-38.
    tiny = np.array([np.finfo(np.float32).tiny, 1e-30, 1e-20, 1e-10, 1e-5, 3e-4], np.float32)
    for angles in (tiny, -tiny):
        np.testing.assert_array_equal(np.asarray(components.sin(jnp.asarray(angles))), angles)
    small = np.array([1e-3, -1e-3, 0.01, -0.05, 0.1, 0.3], np.float32)
    np.testing.assert_allclose(
        np.asarray(components.sin(jnp.asarray(small)), np.float64),
        np.sin(small.astype(np.float64)),
        rtol=1.2e-7,
        atol=0,
    )


def test_sin_float64_uses_jnp(x64):
    angles = jnp.asarray([-4.0e4, -3.0, -1e-9, 0.0, 0.7, 1.234567890123, 2.5e4], jnp.float64)
    sine = components.sin(angles)
    assert sine.dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(sine), np.asarray(jnp.sin(angles)))


def test_sin_polynomial_and_reduction_constants():
    """The float32 constants in components do what their comments state."""
    # The first two parts of pi have 8 significant bits, so n * part is exact for |n| < 2^16.
    for part in components._PI_PARTS[:2]:
        mantissa, _ = np.frexp(part)
        assert (mantissa * 2**8).is_integer()
    assert abs(sum(components._PI_PARTS) - np.pi) < 1.2e-13
    for part in components._PI_PARTS:
        assert np.float32(part) == part
    reduced = np.linspace(-np.pi / 2, np.pi / 2, 1_000_001)
    square = reduced * reduced
    polynomial = np.polyval(np.asarray(components._SIN_PI_COEFFICIENTS[::-1], np.float32), square)
    error = reduced + reduced * square * polynomial - np.sin(reduced)
    assert np.max(np.abs(error)) < 5.0e-9


def test_sin_derivative_float64(x64):
    angles = jnp.asarray([-4.0e4, -3.0, 0.0, 0.7, 1.5, 2.5e4], jnp.float64)
    gradient = jax.vmap(jax.grad(components.sin))(angles)
    np.testing.assert_array_equal(np.asarray(gradient), np.asarray(jnp.cos(angles)))


def test_sin_derivative_float32():
    angles = np.random.default_rng(2).uniform(-5e4, 5e4, 10_000).astype(np.float32)
    gradient = jax.jit(jax.vmap(jax.grad(components.sin)))(jnp.asarray(angles))
    exact = np.cos(angles.astype(np.float64))
    np.testing.assert_allclose(np.asarray(gradient, np.float64), exact, rtol=0, atol=2e-7)
    value = float(jax.grad(components.sin)(jnp.float32(0.7)))
    assert value == pytest.approx(np.cos(0.7), rel=2e-7)


def test_sin_jit_and_vmap_match_eager():
    angles = jnp.asarray(np.random.default_rng(3).uniform(-5e4, 5e4, 20_000).astype(np.float32))
    eager = np.asarray(components.sin(angles))
    compiled = np.asarray(jax.jit(components.sin)(angles))
    np.testing.assert_array_equal(np.asarray(jax.vmap(components.sin)(angles)), eager)
    np.testing.assert_array_equal(np.asarray(jax.jit(jax.vmap(components.sin))(angles)), compiled)
    # Under jax.jit XLA fuses the operations, and a result can differ from the eager one
    # by a rounding: up to 1.2e-7 measured with jax 0.10.2 on CPU.
    np.testing.assert_allclose(compiled, eager, rtol=0, atol=2.4e-7)


def test_sin_needs_fewer_flops_than_sin_cos():
    angles = jnp.zeros(4096, jnp.float32)

    def flops_per_value(function):
        return jax.jit(function).lower(angles).compile().cost_analysis()["flops"] / 4096

    sine = flops_per_value(components.sin)
    assert sine < flops_per_value(lambda angle: components.sin_cos(angle)[0])
    assert sine < flops_per_value(components.sin_cos)


def test_batch_in_chunks_matches_vmap(x64, monkeypatch):
    monkeypatch.setattr(simulate, "_CHUNK", 8)
    vehicle = VerticalLander()
    params = falcon9_like(dtype=jnp.float64)
    starts = vertical_starts()
    config = SimConfig(control_dt=0.1, substeps=1, horizon=30)

    def policy(state, params, carry):
        del params
        return jnp.clip(0.6 - 0.02 * state.velocity, 0.4, 1.0)[None], carry + 1.0

    carry = jnp.array(0.0)
    batched = final_state_batch(vehicle, config, policy, starts, params, carry)
    reference = vmapped_final(vehicle, config, policy, starts, params, carry)
    assert_same_final(batched, reference)


def test_batch_inside_jit_and_grad(x64):
    vehicle = VerticalLander()
    params = falcon9_like(dtype=jnp.float64)
    starts = vertical_starts()
    config = SimConfig(control_dt=0.1, substeps=1, horizon=20)

    def policy(state, params, carry):
        del params
        return jnp.clip(0.6 - 0.02 * state.velocity, 0.4, 1.0)[None], carry

    def batched_loss(states):
        final = final_state_batch(vehicle, config, policy, states, params, ())
        return jnp.sum(final.vehicle.velocity**2)

    def vmapped_loss(states):
        final = vmapped_final(vehicle, config, policy, states, params, ())
        return jnp.sum(final.vehicle.velocity**2)

    np.testing.assert_allclose(jax.jit(batched_loss)(starts), vmapped_loss(starts), rtol=1e-12)
    gradient = jax.grad(batched_loss)(starts)
    expected = jax.grad(vmapped_loss)(starts)
    np.testing.assert_allclose(gradient.velocity, expected.velocity, rtol=1e-9, atol=1e-12)
