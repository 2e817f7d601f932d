"""Numeric precision: the pinned matmul precision of the dynamics, a bf16 controller network
with float32 master parameters, and the rejection of half-precision dynamics states."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from diffland.controllers import NeuroPID
from diffland.dynamics import (
    RK4,
    RigidBody,
    SimConfig,
    VerticalLander,
    falcon9_like,
    falcon9_like_rigid_body,
    initial_sim_state,
    make_rigid_body_state,
    make_vertical_state,
    physics_step,
)
from diffland.training import LandingTask, TrainConfig, Trainer, batch_rollout, init_controller
from diffland.training.trainer import make_optimizer

VERTICAL = VerticalLander()


def dot_precisions(caller_precision):
    """Return a regex match of the precision attribute of every dot product in the lowered
    text of one 6-DOF physics step, traced under the caller's ``caller_precision``."""
    vehicle = RigidBody(drag=True)
    params = falcon9_like_rigid_body(drag=True)
    state = make_rigid_body_state(
        (10.0, -5.0, 1000.0),
        (1.0, 0.5, -100.0),
        30_000.0,
        quaternion=(0.999, 0.02, -0.03, 0.0),
        dtype=jnp.float32,
    )
    action = jnp.array([0.7, 0.01, -0.02], jnp.float32)[: vehicle.action_size]
    sim = initial_sim_state(state)

    def step(sim, action):
        return physics_step(vehicle, RK4(), sim, action, params, 0.05)

    with jax.default_matmul_precision(caller_precision):
        text = jax.jit(step).lower(sim, action).as_text()
    lines = [line for line in text.splitlines() if "dot_general" in line]
    return [re.search(r"precision = \[([^\]]*)\]", line) for line in lines]


@pytest.mark.parametrize("caller_precision", ["bfloat16", "tensorfloat32", "highest"])
def test_dynamics_dots_use_highest_precision(caller_precision):
    # The 6-DOF step is written elementwise on components and traces no dot product
    # today, so this checks any dot product that a change brings in.
    precisions = dot_precisions(caller_precision)
    for match in precisions:
        assert match is not None
        assert match.group(1).count("HIGHEST") == 2


def test_network_keeps_caller_precision():
    # The controller network is traced outside the dynamics' setting.
    controller = NeuroPID(VERTICAL, 0.1, hidden=(4,))
    state = make_vertical_state(1000.0, -100.0, 30_000.0, dtype=jnp.float32)
    params = falcon9_like()
    variables = controller.init(jax.random.PRNGKey(0), state, params, controller.initial_carry())
    with jax.default_matmul_precision("bfloat16"):
        text = (
            jax.jit(lambda v: controller.apply(v, state, params, controller.initial_carry()))
            .lower(variables)
            .as_text()
        )
    lines = [line for line in text.splitlines() if "dot_general" in line]
    assert len(lines) > 0
    for line in lines:
        assert "HIGHEST" not in line


def test_adam_step_moves_float32_master_param():
    """One Adam step of size 1e-4 on a parameter of 1.0 with gradient 1 moves it, which a
    bf16 parameter could not: the bf16 spacing at 1.0 is 2**-7."""
    assert jnp.asarray(1.0, jnp.bfloat16) - jnp.asarray(1e-4, jnp.bfloat16) == 1.0

    controller = NeuroPID(VERTICAL, 0.1, hidden=(8,), dtype=jnp.bfloat16)
    task = LandingTask(VERTICAL, falcon9_like(), SimConfig(horizon=5))
    example = make_vertical_state(1000.0, -100.0, 30_000.0, dtype=jnp.float32)
    params = init_controller(task, controller, jax.random.PRNGKey(0), example)["params"]
    for leaf in jax.tree_util.tree_leaves(params):
        assert leaf.dtype == jnp.float32

    params["correction"]["Dense_0"]["bias"] = params["correction"]["Dense_0"]["bias"].at[0].set(1.0)
    grads = jax.tree_util.tree_map(jnp.zeros_like, params)
    grads["correction"]["Dense_0"]["bias"] = grads["correction"]["Dense_0"]["bias"].at[0].set(1.0)
    optimizer = make_optimizer(TrainConfig(learning_rate=1e-4, warmup_steps=0, steps=10))
    opt_state = optimizer.init(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    updated = optax.apply_updates(params, updates)

    moved = float(updated["correction"]["Dense_0"]["bias"][0])
    assert moved != 1.0
    assert moved == pytest.approx(1.0 - 1e-4, rel=1e-6)
    for leaf in jax.tree_util.tree_leaves(opt_state):
        assert bool(jnp.all(jnp.isfinite(leaf)))
    for leaf in jax.tree_util.tree_leaves(updated):
        assert leaf.dtype == jnp.float32


def test_bf16_network_gives_float32_actions_and_state():
    controller = NeuroPID(VERTICAL, 0.1, hidden=(8,), dtype=jnp.bfloat16)
    task = LandingTask(VERTICAL, falcon9_like(), SimConfig(control_dt=0.1, horizon=5))
    starts = make_vertical_state(
        jnp.array([1000.0, 1200.0]), jnp.array([-100.0, -90.0]), jnp.array([3e4, 3e4])
    )
    example = jax.tree_util.tree_map(lambda x: x[0], starts)
    variables = init_controller(task, controller, jax.random.PRNGKey(0), example)
    jaxpr = str(jax.make_jaxpr(lambda v: batch_rollout(task, controller, v, starts))(variables))
    trajectory = batch_rollout(task, controller, variables, starts)

    assert "bf16" in jaxpr
    assert trajectory.actions.dtype == jnp.float32
    for leaf in jax.tree_util.tree_leaves(trajectory.states):
        assert leaf.dtype == jnp.float32


def test_bf16_trainer_keeps_state_finite():
    controller = NeuroPID(VERTICAL, 0.1, hidden=(8,), dtype=jnp.bfloat16)
    task = LandingTask(VERTICAL, falcon9_like(), SimConfig(control_dt=0.1, horizon=30))
    rng = np.random.default_rng(0)
    starts = make_vertical_state(
        rng.uniform(300.0, 400.0, 4), -rng.uniform(40.0, 60.0, 4), np.full(4, 3e4)
    )
    trainer = Trainer(task, controller, TrainConfig(steps=2, batch_size=4, checks=False), starts)
    state = trainer.init()
    state, metrics = trainer.step(state)

    assert np.isfinite(float(metrics["train/grad_norm"]))
    assert float(metrics["train/grad_norm"]) > 0.0
    for leaf in jax.tree_util.tree_leaves((state.params, state.opt_state)):
        assert bool(jnp.all(jnp.isfinite(leaf)))
    for leaf in jax.tree_util.tree_leaves(state.params):
        assert leaf.dtype == jnp.float32


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_task_rejects_half_precision_state(dtype):
    task = LandingTask(VERTICAL, falcon9_like())
    starts = make_vertical_state(jnp.array([1000.0]), jnp.array([-100.0]), jnp.array([3e4]))
    starts = jax.tree_util.tree_map(lambda x: x.astype(dtype), starts)
    with pytest.raises(ValueError, match="float32"):
        task.validate(starts)
