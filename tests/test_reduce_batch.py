"""reduce_rollout_batch against jax.vmap of reduce_rollout, in float64.

The batched function is compiled as the trainer compiles its update on a CPU. Its final
states, summaries and gradients (with respect to policy parameters and the start states)
agree for the three vehicles in the component layout and for a vehicle without it. They
agree under every remat mode and with truncation. The gradient also matches central
finite differences. Outside ``components.materializing`` the function runs through
``jax.vmap``.
"""

import dataclasses

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
    reduce_rollout,
    reduce_rollout_batch,
    rotation,
    simulate,
)
from diffland.dynamics.planar import make_planar_state
from diffland.dynamics.point_mass import PointMassLander, make_point_mass_state
from diffland.dynamics.presets import gfold_mars_lander
from diffland.dynamics.rigid_body import make_rigid_body_state
from diffland.dynamics.vertical import make_vertical_state

COUNT = 12
RK4_CONFIG = SimConfig(control_dt=0.1, substeps=2, horizon=40)
THETA = (-3.0, 0.05, 1.5)
"""Policy parameters: throttle near its minimum, so that the low landers touch down."""


def rigid_body_case():
    """Return tilted, turning boosters in gusty wind with a lagging gimbal. The low ones
    touch down within the horizon and the high ones do not."""
    keys = jax.random.split(jax.random.PRNGKey(7), COUNT)
    heights = jnp.linspace(17.0, 95.0, COUNT)
    speeds = jnp.linspace(10.0, 2.0, COUNT)
    angles = jnp.linspace(-0.06, 0.06, COUNT)

    def start(key, height, speed, angle):
        return make_rigid_body_state(
            jnp.stack([3.0, -2.0, height]),
            jnp.stack([1.0, -0.5, -speed]),
            30_000.0,
            rotation.from_axis_angle(jnp.array([1.0, 0.4, 0.0]), angle),
            angular_velocity=jnp.stack([0.01, -angle / 5.0, 0.002]),
            wind=aero.sample_wind(key, 2, 8.0, 2.0, dtype=jnp.float64),
        )

    def policy(state, params, theta):
        del params
        throttle = 0.4 + 0.6 * jax.nn.sigmoid(theta[0] + theta[1] * state.velocity[2])
        gimbal = 0.08 * jnp.tanh(-theta[2] * state.angular_velocity[:2])
        return jnp.concatenate([throttle[None], gimbal])

    vehicle = RigidBody(drag=True, gimbal_lag=True)
    params = falcon9_like_rigid_body(drag=True, dtype=jnp.float64)
    return vehicle, params, jax.vmap(start)(keys, heights, speeds, angles), policy


def planar_case():
    keys = jax.random.split(jax.random.PRNGKey(5), COUNT)
    heights = jnp.linspace(25.0, 90.0, COUNT)

    def start(key, height):
        wind = aero.sample_wind(key, 1, 8.0, 2.0, dtype=jnp.float64)
        return make_planar_state(2.0, height, 1.0, -height / 4.0, 30_000.0, 0.03, wind=wind)

    def policy(state, params, theta):
        del params
        throttle = 0.4 + 0.6 * jax.nn.sigmoid(theta[0] + theta[1] * state.vz)
        return jnp.stack([throttle, -theta[2] * 0.2 * state.pitch])

    vehicle = PlanarBooster(drag=True)
    params = falcon9_like_planar(drag=True, dtype=jnp.float64)
    return vehicle, params, jax.vmap(start)(keys, heights), policy


def vertical_case():
    heights = jnp.linspace(10.0, 80.0, COUNT)
    starts = make_vertical_state(heights, -heights / 3.0, jnp.full(COUNT, 30_000.0))

    def policy(state, params, theta):
        del params
        return (0.4 + 0.6 * jax.nn.sigmoid(theta[0] + theta[1] * state.velocity))[None]

    return VerticalLander(), falcon9_like(dtype=jnp.float64), starts, policy


def point_mass_case():
    """A vehicle without the component layout, which runs through jax.vmap."""
    vehicle = PointMassLander()
    params = gfold_mars_lander(dtype=jnp.float64)
    heights = jnp.linspace(20.0, 90.0, COUNT)
    starts = jax.vmap(
        lambda h: make_point_mass_state(
            jnp.stack([5.0, -3.0, h]), jnp.stack([-1.0, 0.5, -h / 5.0]), 1_900.0
        )
    )(heights)

    def policy(state, params, theta):
        del params
        up = 0.3 + 0.6 * jax.nn.sigmoid(theta[0] + theta[1] * state.velocity[2])
        return jnp.stack([-0.05 * state.velocity[0], -0.05 * state.velocity[1], up])

    return vehicle, params, starts, policy


CASES = {
    "rigid_body": rigid_body_case,
    "planar": planar_case,
    "vertical": vertical_case,
    "point_mass": point_mass_case,
}


def make_functions(vehicle, params, config, policy):
    """Return a scalar of the final states and summaries of a batch, computed with
    reduce_rollout_batch and with jax.vmap of reduce_rollout, and the initial summary."""

    def controller(state, params_, memory):
        theta, count = memory
        return policy(state, params_, theta), (theta, count + 1.0)

    def accumulate(summary, step, state, action, active):
        height = vehicle.height(state, params)
        weight = active.astype(height.dtype)
        return {
            "height_sum": summary["height_sum"] + weight * height * (step + 1),
            "lowest": jnp.minimum(summary["lowest"], height),
            "effort": summary["effort"] + weight * jnp.sum(action**2),
        }

    def start_summary(state):
        return {
            "height_sum": jnp.zeros(()),
            "lowest": vehicle.height(state, params),
            "effort": jnp.zeros(()),
        }

    def scalar(final, summaries):
        leaves = jax.tree_util.tree_leaves(final.vehicle)
        total = sum(jnp.sum(jnp.sin(leaf)) for leaf in leaves)
        total = total + jnp.sum(final.touchdown_time)
        return total + sum(jnp.sum(value) for value in summaries.values()) * 1e-3

    def run_batch(theta, starts):
        summaries = jax.vmap(start_summary)(starts)
        carry = (theta, jnp.zeros(()))
        return reduce_rollout_batch(
            vehicle, config, controller, starts, params, carry, accumulate, summaries
        )

    def run_vmap(theta, starts):
        def one(start):
            carry = (theta, jnp.zeros(()))
            return reduce_rollout(
                vehicle, config, controller, start, params, carry, accumulate, start_summary(start)
            )

        return jax.vmap(one)(starts)

    return run_batch, run_vmap, scalar


def jit_components(function):
    """Jit ``function`` as the trainer's update on a CPU: traced inside
    ``components.materializing`` and compiled with the component options."""
    jitted = jax.jit(function, compiler_options=simulate.component_compiler_options())

    def run(*args):
        with components.materializing():
            return jitted(*args)

    return run


def assert_trees_close(got, expected, rtol, atol):
    for a, b in zip(
        jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected), strict=True
    ):
        assert jnp.shape(a) == jnp.shape(b)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize(
    ("name", "remat", "segment", "truncation"),
    [
        # The remat modes and truncation act on the scan, not on a vehicle, so the 6-DOF
        # booster (slowest to compile) runs one case.
        ("rigid_body", "none", None, None),
        ("planar", "step", None, None),
        ("planar", "nested", 7, 9),
        ("vertical", "nested", None, 6),
        ("vertical", "none", None, 9),
        ("point_mass", "none", None, None),
    ],
)
def test_batch_matches_vmap(x64, monkeypatch, name, remat, segment, truncation):
    calls = []
    component_start = simulate._component_start

    def counted(*args):
        calls.append(1)
        return component_start(*args)

    monkeypatch.setattr(simulate, "_component_start", counted)
    vehicle, params, starts, policy = CASES[name]()
    config = dataclasses.replace(
        RK4_CONFIG, remat=remat, remat_segment=segment, truncation=truncation
    )
    if name == "point_mass":
        config = dataclasses.replace(config, control_dt=0.2)
    run_batch, run_vmap, scalar = make_functions(vehicle, params, config, policy)
    theta = jnp.array(THETA)

    got = jit_components(run_batch)(theta, starts)
    # The point mass has no component layout, so it runs through jax.vmap.
    assert bool(calls) == vehicle.component_tuples
    expected = jax.jit(run_vmap)(theta, starts)
    touched = np.asarray(expected[0].touched_down)
    assert touched.any()
    assert not touched.all()
    np.testing.assert_array_equal(got[0].touched_down, touched)
    assert_trees_close(got, expected, rtol=1e-9, atol=1e-9)

    def objective(run):
        return jax.grad(lambda t, s: scalar(*run(t, s)), argnums=(0, 1))

    got_grad = jit_components(objective(run_batch))(theta, starts)
    expected_grad = jax.jit(objective(run_vmap))(theta, starts)
    assert float(jnp.max(jnp.abs(got_grad[0]))) > 1e-6
    assert_trees_close(got_grad, expected_grad, rtol=1e-8, atol=1e-10)


def test_batch_gradient_finite_differences(x64):
    vehicle, params, starts, policy = rigid_body_case()
    run_batch, _, scalar = make_functions(vehicle, params, RK4_CONFIG, policy)
    loss = jit_components(lambda t: scalar(*run_batch(t, starts)))
    theta = jnp.array(THETA)
    gradient = jit_components(jax.grad(lambda t: scalar(*run_batch(t, starts))))(theta)
    # Steps where truncation and rounding errors are both below the tolerance. The second
    # parameter multiplies a vertical speed of up to 10 m/s, so it takes a smaller step.
    for index, step in enumerate((1e-5, 1e-6, 1e-5)):
        central = (
            float(loss(theta.at[index].add(step))) - float(loss(theta.at[index].add(-step)))
        ) / (2.0 * step)
        assert abs(central) > 1e-4, index
        assert float(gradient[index]) == pytest.approx(central, rel=1e-5), index


def batch_arguments(name):
    vehicle, params, starts, policy = CASES[name]()

    def controller(state, params_, memory):
        return policy(state, params_, jnp.zeros(3)), memory

    def accumulate(summary, step, state, action, active):
        return summary + jnp.sum(action)

    return vehicle, RK4_CONFIG, controller, starts, params, (), accumulate


def test_batch_needs_a_batch_axis():
    vehicle, config, policy, starts, params, carry, accumulate = batch_arguments("vertical")
    one = jax.tree_util.tree_map(lambda x: x[0], starts)
    with pytest.raises(ValueError, match="batch axis first"):
        reduce_rollout_batch(vehicle, config, policy, one, params, carry, accumulate, jnp.zeros(1))


@pytest.mark.parametrize("name", ["vertical", "point_mass"])
@pytest.mark.parametrize(
    ("summaries", "found"),
    [(jnp.zeros(()), "scalar leaves"), (jnp.zeros(COUNT + 1), f"first axis {COUNT + 1}")],
)
def test_batch_rejects_mismatched_summaries(name, summaries, found):
    vehicle, config, policy, starts, params, carry, accumulate = batch_arguments(name)
    with pytest.raises(
        ValueError, match=f"summaries has {found}, but initial_states contains {COUNT} landers"
    ):
        reduce_rollout_batch(vehicle, config, policy, starts, params, carry, accumulate, summaries)


def test_component_layout_only_inside_materializing(monkeypatch):
    def fail_on_component_layout(*args):
        raise AssertionError("component layout used")

    monkeypatch.setattr(simulate, "_component_start", fail_on_component_layout)
    arguments = batch_arguments("vertical")
    summaries = jnp.zeros(COUNT)
    # Without the barriers XLA's fusion repeats work, so plain jax.jit gets jax.vmap.
    final, _ = jax.jit(lambda: reduce_rollout_batch(*arguments, summaries))()
    assert final.vehicle.altitude.shape == (COUNT,)
    with components.materializing(), pytest.raises(AssertionError, match="component layout"):
        reduce_rollout_batch(*arguments, summaries)
