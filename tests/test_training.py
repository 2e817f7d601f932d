"""Trainer: exact resume from checkpoints, damaged checkpoints, skipped non-finite updates,
one compilation per run, and the metrics it reports."""

import json
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from diffland.controllers import CascadedPID, MLPPolicy, VerticalPID
from diffland.dynamics import (
    RigidBody,
    SimConfig,
    VerticalLander,
    components,
    falcon9_like,
    falcon9_like_rigid_body,
    make_rigid_body_state,
    make_vertical_state,
    rotation,
)
from diffland.dynamics.aero import steady_wind
from diffland.dynamics.simulate import component_compiler_options
from diffland.training import (
    CheckpointStore,
    JsonlWriter,
    LandingTask,
    MetricsHistory,
    TrainConfig,
    Trainer,
    lower_training_function,
    make_optimizer,
    training_compiler_options,
)
from diffland.training import trainer as trainer_module

VEHICLE = VerticalLander()
CONTROL_DT = 0.1
TOTAL_STEPS = 4
INTERRUPTED_AT = 2


class Interrupted(Exception):
    """Raised by a callback to stop training as a crash would."""


def start_pool(count=16, seed=0):
    """Return ``count`` landing-burn start states of the Falcon-9-like stage."""
    rng = np.random.default_rng(seed)
    return make_vertical_state(
        rng.uniform(1500.0, 3000.0, count),
        -rng.uniform(200.0, 300.0, count),
        25_600.0 + rng.uniform(4000.0, 9000.0, count),
        dtype=jnp.float32,
    )


def landing_task():
    sim = SimConfig(control_dt=CONTROL_DT, substeps=1, horizon=60)
    return LandingTask(VEHICLE, falcon9_like(), sim)


def train_config(**overrides):
    settings = dict(
        steps=TOTAL_STEPS,
        batch_size=4,
        learning_rate=0.05,
        warmup_steps=1,
        seed=3,
        checkpoint_every=1,
        eval_every=100,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def make_trainer(checkpoint_dir=None, callbacks=(), config=None, eval_states=None):
    """Return a PID trainer on the shared task, start pool and (default) config."""
    return Trainer(
        landing_task(),
        VerticalPID(VEHICLE, CONTROL_DT),
        config if config is not None else train_config(),
        start_pool(),
        eval_states,
        checkpoint_dir=checkpoint_dir,
        callbacks=callbacks,
    )


def assert_trees_close(actual, expected, atol):
    expected_leaves = jax.tree_util.tree_leaves_with_path(expected)
    actual_leaves = jax.tree_util.tree_leaves(actual)
    assert len(actual_leaves) == len(expected_leaves)
    for (path, want), got in zip(expected_leaves, actual_leaves, strict=True):
        np.testing.assert_allclose(
            np.asarray(got), np.asarray(want), rtol=0, atol=atol, err_msg=jax.tree_util.keystr(path)
        )


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """Train TOTAL_STEPS steps without interruption and return the trainer, the result
    and the metrics file."""
    folder = tmp_path_factory.mktemp("straight")
    metrics_path = folder / "metrics.jsonl"
    trainer = make_trainer(folder / "checkpoints", [JsonlWriter(metrics_path, {"run": "a"})])
    result = trainer.train()
    return trainer, result, metrics_path


@pytest.mark.slow
def test_resume_matches_straight_run(straight_run, tmp_path):
    _, straight, _ = straight_run
    checkpoints = tmp_path / "checkpoints"

    def crash_after_checkpoint(step, metrics):
        if step == INTERRUPTED_AT + 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        make_trainer(checkpoints, [crash_after_checkpoint]).train()
    assert CheckpointStore(checkpoints).steps()[-1] == INTERRUPTED_AT

    resumed_trainer = make_trainer(checkpoints)
    resumed = resumed_trainer.train(resume=True)

    assert resumed.resumed_from == INTERRUPTED_AT
    assert int(resumed.state.step) == TOTAL_STEPS
    assert resumed_trainer.trace_count == 1
    assert_trees_close(resumed.state.params, straight.state.params, atol=1e-6)
    assert_trees_close(resumed.state.opt_state, straight.state.opt_state, atol=1e-6)
    np.testing.assert_array_equal(resumed.state.key, straight.state.key)


@pytest.mark.slow
def test_training_changes_params(straight_run):
    trainer, result, _ = straight_run

    initial = trainer.init().params
    changes = [abs(float(result.state.params[name]) - float(initial[name])) for name in initial]

    assert max(changes) > 1e-3
    assert result.resumed_from is None
    assert result.compile_seconds > 0.0


@pytest.mark.slow
def test_update_traced_once(straight_run):
    trainer, result, _ = straight_run

    assert trainer.trace_count == 1
    state = result.state
    for _ in range(3):
        state, _ = trainer.step(state)

    assert trainer.trace_count == 1
    assert int(state.step) == TOTAL_STEPS + 3


@pytest.mark.slow
def test_metrics_written_per_step(straight_run):
    _, _, metrics_path = straight_run

    records = [json.loads(line) for line in metrics_path.read_text().splitlines()]

    steps = [record["step"] for record in records if "train/loss" in record]
    assert steps == list(range(1, TOTAL_STEPS + 1))
    last = records[-1]
    assert last["run"] == "a"
    for name in ("train/loss", "train/grad_norm", "train/learning_rate", "train/success_rate"):
        assert np.isfinite(last[name]), name
    assert last["train/nonfinite_skipped"] == 0.0
    assert "train/compile_seconds" in records[0]


@pytest.mark.slow
def test_checkpoints_saved_each_step(straight_run):
    trainer, _, _ = straight_run

    steps = trainer.store.steps()

    # The store keeps the three newest checkpoints.
    assert steps == [TOTAL_STEPS - 2, TOTAL_STEPS - 1, TOTAL_STEPS]


def test_loss_jits_with_checks_on():
    task = landing_task()
    config = train_config(checks=True)
    trainer = Trainer(task, VerticalPID(VEHICLE, CONTROL_DT), config, start_pool())
    params = trainer.init().params

    loss, metrics = jax.jit(trainer.loss)(params, start_pool(count=4))

    assert np.isfinite(float(loss))
    assert "train/success_rate" in metrics


# -- compiler options of the update ----------------------------------------------------

BOOSTER = RigidBody(drag=True)
"""The 6-DOF booster, whose derivative marks values with ``components.shared``."""


def booster_pool(dtype):
    """Return four tilted, spinning 6-DOF booster start states in a steady wind.

    The lowest touches down in the first control step, and the highest stays in the air."""
    params = falcon9_like_rigid_body(drag=True, dtype=dtype)
    tilt = rotation.from_axis_angle(jnp.array([0.3, 1.0, 0.0]), jnp.array(0.05))
    states = []
    for index, height in enumerate((0.3, 4.0, 30.0, 80.0)):
        state = make_rigid_body_state(
            position=(float(index), -2.0, 0.0),
            velocity=(0.5, -0.3, -5.0 - 4.0 * index),
            mass=30_000.0,
            quaternion=tilt,
            angular_velocity=(0.01, -0.02, 0.005),
            wind=steady_wind(jnp.array([3.0, -1.0])),
            dtype=dtype,
        )
        lift = height - BOOSTER.height(state, params)
        states.append(state.replace(position=state.position.at[2].add(lift)))
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *states)


def booster_trainer(dtype, batch_size, checks=False):
    """Return a cascaded-PID trainer of the 6-DOF booster over 6 control steps."""
    sim = SimConfig(control_dt=0.1, substeps=2, horizon=6)
    task = LandingTask(BOOSTER, falcon9_like_rigid_body(drag=True, dtype=dtype), sim)
    config = train_config(batch_size=batch_size, warmup_steps=0, checks=checks)
    return Trainer(task, CascadedPID(BOOSTER, sim.control_dt), config, booster_pool(dtype))


def barrier_count(compiled):
    """Return the number of optimization barriers left in a compiled program's HLO."""
    return compiled.as_text().count("opt-barrier")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dtype", "batch_size", "rtol"),
    [(jnp.float64, 4, 1e-9), (jnp.float32, 4, 1e-4)],
)
def test_update_with_options_matches_plain_jit(request, dtype, batch_size, rtol):
    if dtype == jnp.float64:
        request.getfixturevalue("x64")
    trainer = booster_trainer(dtype, batch_size)
    reference = booster_trainer(dtype, batch_size)
    state = trainer.init()
    trainer.compile(state)
    # The reference update is a plain jax.jit, traced outside components.materializing
    # and compiled with XLA's default options.
    plain = jax.jit(reference._update_fn).lower(state, reference.train_states).compile()

    assert barrier_count(trainer._update) > 0
    assert barrier_count(plain) == 0
    expected = state
    for _ in range(3):
        state, metrics = trainer.step(state)
        expected, expected_metrics = plain(expected, reference.train_states)
        for name in ("train/loss", "train/grad_norm"):
            np.testing.assert_allclose(
                float(metrics[name]), float(expected_metrics[name]), rtol=rtol, err_msg=name
            )
    for (path, want), got in zip(
        jax.tree_util.tree_leaves_with_path(expected.params),
        jax.tree_util.tree_leaves(state.params),
        strict=True,
    ):
        assert got.dtype == dtype
        np.testing.assert_allclose(
            np.asarray(got), np.asarray(want), rtol=rtol, err_msg=jax.tree_util.keystr(path)
        )


@pytest.mark.slow
def test_update_with_options_traced_once():
    # One lander on one device, with runtime checks. final_state_batch compiles such
    # shards without the options, because XLA aborted on them for the 1-D lander.
    trainer = booster_trainer(jnp.float32, 1, checks=True)
    state = trainer.init()

    for _ in range(3):
        state, metrics = trainer.step(state)

    assert trainer.trace_count == 1
    assert barrier_count(trainer._update) > 0
    assert int(state.step) == 3
    assert np.isfinite(float(metrics["train/loss"]))
    assert np.isfinite(float(metrics["train/grad_norm"]))


@pytest.mark.parametrize(("backend", "barriers"), [("cpu", 1), ("gpu", 0)])
def test_training_function_barriers_only_on_cpu(monkeypatch, backend, barriers):
    monkeypatch.setattr(jax, "default_backend", lambda: backend)

    def function(x):
        return 2.0 * components.shared(jnp.sin(x)) + 1.0

    compiled = lower_training_function(function, jnp.ones(8)).compile()

    assert barrier_count(compiled) == barriers


def test_plain_jit_reuses_no_training_trace(monkeypatch):
    # JAX caches one trace per function object, whatever the materializing flag was.
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")

    def function(x):
        return 2.0 * components.shared(jnp.sin(x)) + 1.0

    trained = lower_training_function(function, jnp.ones(8)).compile()
    plain = jax.jit(function).lower(jnp.ones(8)).compile()

    assert barrier_count(trained) == 1
    assert barrier_count(plain) == 0
    assert "optimization_barrier" not in str(jax.make_jaxpr(function)(jnp.ones(8)))


def library_fusions(compiled):
    """Return the number of XLA CPU library (YNNPACK) fusions in a compiled program."""
    return compiled.as_text().count('"kind":"__ynn_fusion"')


@pytest.mark.skipif(
    not trainer_module._library_fusion_option_accepted(),
    reason="this XLA has no library fusion option",
)
def test_training_options_drop_library_reductions():
    # A dot product of the vectors of a batch, as in the transpose of a vmapped
    # broadcast: a sum over 3 components. The XLA of jaxlib 0.10.2 gave such a
    # reduction of 2,048 vectors to the library by default, but not one of 512.
    def function(a, b):
        return jnp.sum(a * b, axis=1)

    a = jnp.linspace(0.0, 1.0, 3 * 2048, dtype=jnp.float32).reshape(2048, 3)
    b = jnp.cos(a)
    plain = jax.jit(function).lower(a, b).compile()
    options = training_compiler_options()
    trained = jax.jit(function, compiler_options=options).lower(a, b).compile()

    assert options["xla_cpu_experimental_ynn_fusion_type"] == "LIBRARY_FUSION_TYPE_DOT"
    assert library_fusions(plain) > 0
    assert library_fusions(trained) == 0
    np.testing.assert_allclose(trained(a, b), plain(a, b), rtol=1e-6)


def test_training_options_without_unknown_flag(monkeypatch, caplog):
    # An XLA that lacks the experimental flag gets the component options alone.
    monkeypatch.setattr(
        trainer_module, "_LIBRARY_FUSION_OPTION", {"xla_cpu_no_such_flag_for_testing": True}
    )
    trainer_module._library_fusion_option_accepted.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=trainer_module.__name__):
            options = training_compiler_options()
    finally:
        trainer_module._library_fusion_option_accepted.cache_clear()

    assert options == component_compiler_options()
    assert "xla_cpu_no_such_flag_for_testing" in caplog.text


def test_update_one_vertical_lander_per_device():
    trainer = make_trainer(config=train_config(batch_size=1))

    state, metrics = trainer.step(trainer.init())

    assert trainer.parallel.device_count == 1
    assert int(state.step) == 1
    assert np.isfinite(float(metrics["train/loss"]))
    assert np.isfinite(float(metrics["train/grad_norm"]))


# -- checkpoint store --------------------------------------------------------------------


def example_tree(scale):
    return {
        "weights": scale * jnp.arange(6.0).reshape(2, 3),
        "nested": {"bias": scale * jnp.ones(3)},
        "step": jnp.array(int(scale), jnp.int32),
    }


def damage_step(folder, mode):
    files = [path for path in folder.rglob("*") if path.is_file()]
    assert files, f"no files to damage in {folder}"
    for path in files:
        if mode == "empty":
            path.write_bytes(b"")
        elif mode == "garbage":
            path.write_bytes(b"\x00not a checkpoint\xff" * 4)
        elif mode == "half-data" and "/d/" in path.as_posix():
            content = path.read_bytes()
            path.write_bytes(content[: len(content) // 2])


# A failed orbax read of truncated data leaves an "Event loop is closed" error in a
# background task (orbax-checkpoint 0.12.8), which pytest reports as unraisable.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("mode", ["empty", "garbage", "half-data"])
def test_corrupt_newest_checkpoint_falls_back(tmp_path, caplog, mode):
    store = CheckpointStore(tmp_path / "checkpoints")
    store.save(1, example_tree(1.0))
    store.save(2, example_tree(2.0))
    newest = store.directory / "2"
    damage_step(newest, mode)

    with caplog.at_level(logging.WARNING, logger="diffland.training.checkpoint"):
        restored = CheckpointStore(tmp_path / "checkpoints").restore_latest(example_tree(0.0))

    assert restored is not None
    step, tree = restored
    assert step == 1
    assert_trees_close(tree, example_tree(1.0), atol=0.0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert str(newest) in warnings[0]
    assert "moved unreadable checkpoint" in warnings[1]
    assert (store.directory / "2.unreadable").is_dir()

    reopened = CheckpointStore(tmp_path / "checkpoints")
    reopened.save(2, example_tree(3.0))  # the damaged step can be written again
    assert reopened.steps() == [1, 2]


def test_all_checkpoints_corrupt_raises(tmp_path, caplog):
    store = CheckpointStore(tmp_path / "checkpoints")
    store.save(1, example_tree(1.0))
    store.save(2, example_tree(2.0))
    damage_step(store.directory / "1", "empty")
    damage_step(store.directory / "2", "empty")

    with caplog.at_level(logging.WARNING, logger="diffland.training.checkpoint"):
        with pytest.raises(ValueError, match=r"none of the checkpoints \[1, 2\]"):
            CheckpointStore(tmp_path / "checkpoints").restore_latest(example_tree(0.0))

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert (store.directory / "1").is_dir()  # nothing is moved when no checkpoint restores


def test_empty_store_restores_none(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints")

    assert store.steps() == []
    assert store.restore_latest(example_tree(0.0)) is None


# -- optimizer ---------------------------------------------------------------------------


def test_nonfinite_update_skipped_and_counted():
    optimizer = make_optimizer(TrainConfig(steps=10, warmup_steps=0, learning_rate=0.1))
    params = {"kp": jnp.float32(0.5), "layer": jnp.ones(3)}
    state = optimizer.init(params)
    poisoned = {"kp": jnp.float32(jnp.nan), "layer": jnp.ones(3)}

    updates, state = optimizer.update(poisoned, state, params)
    skipped = optax.apply_updates(params, updates)

    assert_trees_close(skipped, params, atol=0.0)
    assert int(state.total_notfinite) == 1
    assert int(state.notfinite_count) == 1

    updates, state = optimizer.update({"kp": jnp.float32(jnp.inf), "layer": jnp.ones(3)}, state)
    skipped = optax.apply_updates(skipped, updates)
    assert_trees_close(skipped, params, atol=0.0)
    assert int(state.total_notfinite) == 2

    finite = {"kp": jnp.float32(1.0), "layer": jnp.ones(3)}
    updates, state = optimizer.update(finite, state, skipped)
    applied = optax.apply_updates(skipped, updates)
    assert float(applied["kp"]) < 0.5
    assert int(state.total_notfinite) == 2
    assert int(state.notfinite_count) == 0


def test_optimizer_clips_gradient_norm():
    # Adam's first update is about -learning_rate * sign(g) whatever the gradient scale, so
    # the clipping shows only in Adam's first moment, (1 - b1) times the clipped gradient.
    config = TrainConfig(steps=10, warmup_steps=0, learning_rate=0.1, clip_norm=1.0)
    optimizer = make_optimizer(config)
    params = {"a": jnp.zeros(2)}
    state = optimizer.init(params)

    updates, state = optimizer.update({"a": jnp.array([300.0, -400.0])}, state, params)

    clipped_mean = state.inner_state[1].mu["a"]
    assert float(jnp.linalg.norm(clipped_mean)) == pytest.approx(0.1, rel=1e-5)
    assert np.all(np.isfinite(np.asarray(updates["a"])))


class NaNGradientPolicy(nn.Module):
    """Hold mid-range throttle through ``0 * sqrt(p)`` with ``p = 0``, whose gradient is NaN."""

    @nn.compact
    def __call__(self, state, params, carry):
        p = self.param("p", nn.initializers.zeros, ())
        low, high = VEHICLE.action_bounds(params)
        return 0.5 * (low + high) + 0.0 * jnp.sqrt(p), carry

    def initial_carry(self, dtype=jnp.float32):
        return ()


def test_trainer_stops_after_nonfinite_updates():
    limit = 3
    config = train_config(steps=10, checks=False, max_consecutive_nonfinite=limit)
    trainer = Trainer(landing_task(), NaNGradientPolicy(), config, start_pool())
    seen = []
    trainer.callbacks.append(lambda step, metrics: seen.append(metrics))

    with pytest.raises(FloatingPointError, match=f"last {limit} updates up to step {limit}"):
        trainer.train()

    assert len(seen) == limit + 1  # the compile-time record, then one per update
    assert seen[-1]["train/nonfinite_skipped"] == limit
    assert seen[-1]["train/nonfinite_consecutive"] == limit


def test_interrupt_saves_checkpoint(tmp_path):
    config = train_config(steps=10, checkpoint_every=100)
    folder = tmp_path / "checkpoints"
    trainer = make_trainer(folder, config=config)

    def press_ctrl_c(step, metrics):
        if step == 3:
            raise KeyboardInterrupt

    trainer.callbacks.append(press_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()

    # The interrupt arrived while step 3 was being logged, so step 2 is the newest state
    # that was fully processed.
    assert CheckpointStore(folder).steps() == [2]
    resumed = make_trainer(folder, config=config)
    earlier = float(resumed.restore().train_seconds)
    result = resumed.train(resume=True)
    assert result.resumed_from == 2
    assert int(result.state.step) == 10
    assert earlier > 0.0
    assert result.train_seconds > earlier


def test_best_validation_params_kept():
    trainer = make_trainer()
    state = trainer.init()
    shifted = jax.tree_util.tree_map(lambda x: x + 1.0, state.params)

    def scored(step, params, success, propellant):
        current = state.replace(step=jnp.asarray(step, jnp.int32), params=params)
        metrics = {"eval/success_rate": success, "eval/propellant_mean": propellant}
        return trainer._keep_if_best(current, metrics)

    first = scored(1, state.params, 0.5, 5000.0)
    assert int(first.best_step) == 1

    worse = trainer._keep_if_best(
        first.replace(step=jnp.asarray(2, jnp.int32), params=shifted),
        {"eval/success_rate": 0.25, "eval/propellant_mean": 4000.0},
    )
    assert int(worse.best_step) == 1

    cheaper = trainer._keep_if_best(
        first.replace(step=jnp.asarray(3, jnp.int32), params=shifted),
        {"eval/success_rate": 0.5, "eval/propellant_mean": 4500.0},
    )
    assert int(cheaper.best_step) == 3
    assert jax.tree_util.tree_all(
        jax.tree_util.tree_map(lambda a, b: bool(jnp.all(a == b)), cheaper.best_params, shifted)
    )


def test_train_result_selects_best_params(tmp_path):
    config = train_config(steps=4, eval_every=2)
    history = MetricsHistory()
    result = make_trainer(
        config=config, eval_states=start_pool(8, seed=1), callbacks=[history]
    ).train()

    assert result.select_best
    steps, success = history.series("eval/success_rate")
    _, propellant = history.series("eval/propellant_mean")
    # The starting parameters are scored at step 0, before the first update.
    assert steps == [0, 2, 4]
    # With no successful landing the mean propellant is NaN, which ranks lowest.
    scores = [
        (rate, -fuel if np.isfinite(fuel) else -np.inf)
        for rate, fuel in zip(success, propellant, strict=True)
    ]
    assert result.selected_step == steps[scores.index(max(scores))]
    assert result.selected_params is result.state.best_params
    unselected = make_trainer(
        config=train_config(steps=4, eval_every=2, select_best=False),
        eval_states=start_pool(8, seed=1),
    ).train()
    assert unselected.selected_params is unselected.state.params
    assert unselected.selected_step == 4


def test_history_from_jsonl_keeps_last_record(tmp_path):
    path = tmp_path / "metrics.jsonl"
    first = JsonlWriter(path, {"controller": "pid", "seed": 0})
    other = JsonlWriter(path, {"controller": "mlp", "seed": 0})
    first(1, {"train/loss": 3.0})
    first(2, {"train/loss": 2.0})
    other(1, {"train/loss": 9.0})
    first(2, {"train/loss": 1.5})  # logged again after a resume
    first(3, {"train/loss": 1.0})

    history = MetricsHistory.from_jsonl(path, controller="pid", seed=0)

    assert history.series("train/loss") == ([1, 2, 3], [3.0, 1.5, 1.0])


def test_fresh_run_rejects_used_checkpoint_folder(tmp_path):
    folder = tmp_path / "checkpoints"
    config = train_config(steps=2)
    make_trainer(folder, config=config).train()
    again = make_trainer(folder, config=config)

    with pytest.raises(ValueError, match=r"already contains checkpoints \[1, 2\]"):
        again.train()


def test_resume_of_finished_run_skips_compile(straight_run):
    trainer, straight, _ = straight_run
    resumed_trainer = make_trainer(trainer.store.directory)

    resumed = resumed_trainer.train(resume=True)

    assert resumed.resumed_from == TOTAL_STEPS
    assert resumed.compile_seconds == 0.0
    assert resumed_trainer.trace_count == 0
    assert resumed.selected_step == straight.selected_step
    assert_trees_close(resumed.selected_params, straight.selected_params, atol=0.0)


def test_resume_with_other_controller_raises(tmp_path):
    folder = tmp_path / "checkpoints"
    config = train_config(steps=2)
    make_trainer(folder, config=config).train()
    other = Trainer(
        landing_task(), MLPPolicy(VEHICLE, hidden=(4,)), config, start_pool(), checkpoint_dir=folder
    )

    with pytest.raises(ValueError, match="written for another controller or configuration"):
        other.train(resume=True)
    assert CheckpointStore(folder).steps() == [1, 2]


def test_jsonl_writes_nan_as_null(tmp_path):
    path = tmp_path / "metrics.jsonl"
    JsonlWriter(path, {"controller": "pid"})(1, {"train/propellant_mean": float("nan")})

    record = json.loads(path.read_text())

    assert record["train/propellant_mean"] is None
    assert MetricsHistory.from_jsonl(path, controller="pid").series("train/propellant_mean") == (
        [],
        [],
    )
