"""Truncated backpropagation through time: the forward rollout is unchanged, the gradient
through the carried state is cut every ``truncation`` steps, and long rollouts keep a
finite gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from diffland.controllers import VerticalPID
from diffland.dynamics import (
    SimConfig,
    VerticalLander,
    falcon9_like,
    make_vertical_state,
    open_loop_policy,
    rollout,
)
from diffland.training import LandingTask, TrainConfig, Trainer

VEHICLE = VerticalLander()


def open_loop_final_altitude(altitude, truncation, horizon=20):
    """Final altitude after ``horizon`` steps at 60 % throttle, from 2 km at 100 m/s down."""
    params = falcon9_like(dtype=jnp.float64)
    config = SimConfig(control_dt=0.1, substeps=1, horizon=horizon, truncation=truncation)
    state = make_vertical_state(altitude, -100.0, 32_000.0, dtype=jnp.float64)
    policy = open_loop_policy(jnp.full((horizon, 1), 0.6, jnp.float64))
    trajectory = rollout(VEHICLE, config, policy, state, params, jnp.array(0))
    return trajectory.final.vehicle.altitude


def test_truncation_keeps_forward_rollout(x64):
    full = open_loop_final_altitude(2000.0, None)
    cut = open_loop_final_altitude(2000.0, 3)
    assert float(cut) == float(full)


def test_full_horizon_gradient_is_one(x64):
    # In flight the final altitude moves one-for-one with the initial altitude.
    gradient = jax.grad(open_loop_final_altitude)(2000.0, None)
    assert float(gradient) == pytest.approx(1.0, abs=1e-9)


def test_truncation_of_whole_horizon_changes_nothing(x64):
    # With truncation equal to the horizon no cut falls inside the rollout.
    full = jax.grad(open_loop_final_altitude)(2000.0, None)
    same = jax.grad(open_loop_final_altitude)(2000.0, 20)
    assert float(same) == float(full)


@pytest.mark.parametrize("truncation", [1, 5, 19])
def test_truncation_cuts_gradient_to_start(x64, truncation):
    gradient = jax.grad(open_loop_final_altitude)(2000.0, truncation)
    assert float(gradient) == 0.0


@pytest.mark.parametrize("truncation", [0, -2, 2.5, True])
def test_sim_config_rejects_bad_truncation(truncation):
    with pytest.raises(ValueError, match="truncation"):
        SimConfig(truncation=truncation)


def test_long_rollout_gradient_is_finite():
    """A 1,000-step PID rollout (100 s at 0.1 s) has a finite, nonzero gradient with and
    without truncation, and the two differ. The trainer reports the norm every update."""
    rng = np.random.default_rng(0)
    starts = make_vertical_state(
        rng.uniform(1500.0, 3000.0, 4),
        -rng.uniform(200.0, 300.0, 4),
        25_600.0 + rng.uniform(4000.0, 9000.0, 4),
        dtype=jnp.float32,
    )
    norms = {}
    for truncation in (None, 50):
        sim = SimConfig(control_dt=0.1, substeps=1, horizon=1000, truncation=truncation)
        task = LandingTask(VEHICLE, falcon9_like(), sim)
        controller = VerticalPID(VEHICLE, 0.1)
        trainer = Trainer(task, controller, TrainConfig(steps=1, batch_size=4), starts)
        state = trainer.init()

        _, metrics = trainer.step(state)
        grads = jax.grad(lambda p, t=trainer: t.loss(p, starts)[0])(state.params)

        assert np.isfinite(float(metrics["train/grad_norm"]))
        norms[truncation] = float(optax.tree.norm(grads))
        assert np.isfinite(norms[truncation])
        assert norms[truncation] > 0.0
    assert norms[50] != pytest.approx(norms[None], rel=1e-3)
