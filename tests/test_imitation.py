"""Behaviour cloning of a teacher controller and the trainer's initial parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffland.controllers import MLPPolicy, NeuroPID, VerticalPID
from diffland.dynamics import SimConfig, VerticalLander, falcon9_like, make_vertical_state
from diffland.training import (
    ImitationConfig,
    LandingTask,
    TrainConfig,
    Trainer,
    batch_rollout,
    fit_to_teacher,
    init_controller,
    join_pairs,
    student_pairs,
    teacher_pairs,
)

VEHICLE = VerticalLander()


def start_states(count=8, seed=0):
    rng = np.random.default_rng(seed)
    return make_vertical_state(
        rng.uniform(1500.0, 3000.0, count),
        -rng.uniform(200.0, 300.0, count),
        25_600.0 + rng.uniform(4000.0, 9000.0, count),
        dtype=jnp.float32,
    )


def landing_task():
    return LandingTask(VEHICLE, falcon9_like(), SimConfig(control_dt=0.1, horizon=40))


def example(states):
    return jax.tree_util.tree_map(lambda x: x[0], states)


def test_teacher_pairs_follow_active_steps():
    """Two low, fast starts touch down part-way (they need more than the full-throttle
    deceleration of about 20 m/s^2), so the active mask and the order are exercised."""
    task = landing_task()
    states = make_vertical_state(
        [30.0, 2000.0, 60.0], [-40.0, -250.0, -55.0], [32_000.0] * 3, dtype=jnp.float32
    )
    teacher = VerticalPID(VEHICLE, 0.1)
    variables = init_controller(task, teacher, jax.random.PRNGKey(0), example(states))
    trajectory = batch_rollout(task, teacher, variables, states)
    active = np.asarray(trajectory.active)

    pair_states, actions = teacher_pairs(task, teacher, variables, states)

    counts = active.sum(axis=1)
    assert counts[1] == 40
    assert 0 < counts[0] < 40
    assert 0 < counts[2] < 40
    assert actions.shape == (counts.sum(), 1)
    expected = np.concatenate(
        [np.asarray(trajectory.states.altitude[i, : counts[i]]) for i in range(3)]
    )
    np.testing.assert_allclose(np.asarray(pair_states.altitude), expected, rtol=1e-6)
    expected_actions = np.concatenate(
        [np.asarray(trajectory.actions[i, : counts[i]]) for i in range(3)]
    )
    # The pairs come from a jitted rollout, the reference from an eager one.
    np.testing.assert_allclose(np.asarray(actions), expected_actions, rtol=1e-6)


def test_cloning_matches_representable_teacher():
    """A teacher that the student can represent exactly must be matched closely."""
    task = landing_task()
    states = start_states(32)
    teacher = MLPPolicy(VEHICLE, hidden=(16,))
    variables = init_controller(task, teacher, jax.random.PRNGKey(7), example(states))
    pairs = teacher_pairs(task, teacher, variables, states)
    student = MLPPolicy(VEHICLE, hidden=(16,))
    result = fit_to_teacher(
        task, student, pairs, ImitationConfig(steps=1500, batch_size=256, learning_rate=1e-2)
    )
    assert result.pairs == pairs[1].shape[0]
    assert result.final_error < 0.02 * result.initial_error
    assert result.final_error < 1e-3


def test_cloning_rejects_mismatched_pairs():
    task = landing_task()
    states = start_states()
    with pytest.raises(ValueError, match="8 entries but there are 5 actions"):
        fit_to_teacher(task, MLPPolicy(VEHICLE), (states, jnp.zeros((5, 1))))
    with pytest.raises(ValueError, match="NaN or infinity"):
        fit_to_teacher(task, MLPPolicy(VEHICLE), (states, jnp.full((8, 1), jnp.nan)))
    with pytest.raises(ValueError, match=r"expected \(8, 1\)"):
        fit_to_teacher(task, MLPPolicy(VEHICLE), (states, jnp.zeros((8, 2))))


def test_cloning_memory_student_needs_carries():
    task = landing_task()
    states = start_states()
    teacher = VerticalPID(VEHICLE, 0.1)
    variables = init_controller(task, teacher, jax.random.PRNGKey(0), example(states))
    pairs = teacher_pairs(task, teacher, variables, states)
    with pytest.raises(ValueError, match="needs its carry at every pair"):
        fit_to_teacher(task, VerticalPID(VEHICLE, 0.1), pairs)
    with pytest.raises(ValueError, match="pass both student and student_variables"):
        teacher_pairs(task, teacher, variables, states, student=NeuroPID(VEHICLE, 0.1))


def test_recorded_carries_reproduce_teacher():
    """A NeuroPID with a zero correction acts exactly as its PID. Fed the carries recorded
    along the PID's own rollouts, it must reproduce every action, which fails if a carry
    is paired with the wrong step."""
    task = landing_task()
    states = start_states(16)
    teacher = VerticalPID(VEHICLE, 0.1)
    teacher_variables = init_controller(task, teacher, jax.random.PRNGKey(0), example(states))
    student = NeuroPID(VEHICLE, 0.1)
    student_variables = init_controller(task, student, jax.random.PRNGKey(1), example(states))
    pair_states, actions, carries = teacher_pairs(
        task, teacher, teacher_variables, states, student, student_variables
    )
    assert carries.integral.shape == actions.shape[:1]
    predicted = jax.vmap(lambda s, c: student.apply(student_variables, s, task.params, c)[0])(
        pair_states, carries
    )
    np.testing.assert_allclose(np.asarray(predicted), np.asarray(actions), atol=1e-6)
    # Without the recorded carries (a fresh integral and no previous error at every
    # step) the actions differ, so the check above depends on them.
    fresh = jax.vmap(
        lambda s: student.apply(student_variables, s, task.params, student.initial_carry())[0]
    )(pair_states)
    assert np.max(np.abs(np.asarray(fresh) - np.asarray(actions))) > 1e-3


def test_student_pairs_label_the_students_own_states():
    """A NeuroPID with a zero correction flies as its PID, so its pairs must hold the
    PID's own active states, the MLP teacher's action at each, and carries with which
    the student reproduces its own actions."""
    task = landing_task()
    states = start_states(8)
    pid = VerticalPID(VEHICLE, 0.1)
    pid_variables = init_controller(task, pid, jax.random.PRNGKey(0), example(states))
    student = NeuroPID(VEHICLE, 0.1)
    student_variables = init_controller(task, student, jax.random.PRNGKey(1), example(states))
    teacher = MLPPolicy(VEHICLE, hidden=(8,))
    teacher_variables = init_controller(task, teacher, jax.random.PRNGKey(2), example(states))

    pair_states, actions, carries = student_pairs(
        task, student, student_variables, states, teacher, teacher_variables
    )

    own_states, own_actions = teacher_pairs(task, pid, pid_variables, states)
    np.testing.assert_allclose(np.asarray(pair_states.altitude), np.asarray(own_states.altitude))
    labels = jax.vmap(lambda s: teacher.apply(teacher_variables, s, task.params, ())[0])(
        pair_states
    )
    np.testing.assert_allclose(np.asarray(actions), np.asarray(labels), rtol=1e-6)
    assert np.max(np.abs(np.asarray(actions) - np.asarray(own_actions))) > 1e-3
    replayed = jax.vmap(lambda s, c: student.apply(student_variables, s, task.params, c)[0])(
        pair_states, carries
    )
    np.testing.assert_allclose(np.asarray(replayed), np.asarray(own_actions), atol=1e-6)

    joined = join_pairs((pair_states, actions, carries), (pair_states, actions, carries))
    assert joined[1].shape == (2 * actions.shape[0], 1)
    with pytest.raises(ValueError, match="differ in length"):
        join_pairs((pair_states, actions, carries), (pair_states, actions))
    with pytest.raises(ValueError, match="memoryless teacher"):
        student_pairs(task, student, student_variables, states, pid, pid_variables)


def test_cloning_fits_correction_with_pid_fixed():
    """The teacher is a NeuroPID with the same gains and a random correction, which the
    student can represent exactly with its PID fixed."""
    task = landing_task()
    states = start_states(32)
    teacher = NeuroPID(VEHICLE, 0.1, hidden=(16,))
    variables = init_controller(task, teacher, jax.random.PRNGKey(3), example(states))
    output = variables["params"]["correction"]["Dense_1"]  # the zero-initialised layer
    output["kernel"] = 0.3 * jax.random.normal(jax.random.PRNGKey(4), output["kernel"].shape)
    student = NeuroPID(VEHICLE, 0.1, hidden=(16,))
    start = init_controller(task, student, jax.random.PRNGKey(5), example(states))
    pairs = teacher_pairs(task, teacher, variables, states, student, start)

    config = ImitationConfig(steps=1500, batch_size=256, learning_rate=1e-2, fixed=("pid",))
    result = fit_to_teacher(task, student, pairs, config, initial_params=start["params"])

    assert result.final_error < 0.02 * result.initial_error
    assert result.final_error < 1e-3
    for got, want in zip(
        jax.tree_util.tree_leaves(result.params["pid"]),
        jax.tree_util.tree_leaves(start["params"]["pid"]),
        strict=True,
    ):
        np.testing.assert_array_equal(got, want)


def test_cloning_rejects_unknown_fixed_name():
    task = landing_task()
    states = start_states()
    teacher = MLPPolicy(VEHICLE, hidden=(4,))
    variables = init_controller(task, teacher, jax.random.PRNGKey(0), example(states))
    pairs = teacher_pairs(task, teacher, variables, states)
    with pytest.raises(ValueError, match=r"fixed names \['pid'\]"):
        fit_to_teacher(
            task, MLPPolicy(VEHICLE, hidden=(4,)), pairs, ImitationConfig(fixed=("pid",))
        )
    with pytest.raises(ValueError, match="ImitationConfig.fixed"):
        ImitationConfig(fixed="pid")
    assert ImitationConfig(fixed=["pid"]).fixed == ("pid",)  # as read back from JSON


@pytest.mark.parametrize(
    "field, value", [("steps", 0), ("batch_size", 1.5), ("learning_rate", -1.0)]
)
def test_imitation_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=f"ImitationConfig.{field}"):
        ImitationConfig(**{field: value})


def test_trainer_starts_from_initial_params():
    task = landing_task()
    states = start_states()
    controller = MLPPolicy(VEHICLE, hidden=(8,))
    initial = init_controller(task, controller, jax.random.PRNGKey(42), example(states))["params"]
    trainer = Trainer(
        task, controller, TrainConfig(steps=1, batch_size=4), states, initial_params=initial
    )
    state = trainer.init()
    for got, want in zip(
        jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(initial), strict=True
    ):
        np.testing.assert_array_equal(got, want)
    # The default seed gives different parameters, so the initial ones were really used.
    fresh = Trainer(task, controller, TrainConfig(steps=1, batch_size=4), states).init()
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(
            jax.tree_util.tree_leaves(fresh.params), jax.tree_util.tree_leaves(initial), strict=True
        )
    )


def test_trainer_rejects_params_of_another_controller():
    task = landing_task()
    states = start_states()
    other = init_controller(
        task, MLPPolicy(VEHICLE, hidden=(4,)), jax.random.PRNGKey(0), example(states)
    )["params"]
    trainer = Trainer(
        task,
        MLPPolicy(VEHICLE, hidden=(8,)),
        TrainConfig(steps=1, batch_size=4),
        states,
        initial_params=other,
    )
    with pytest.raises(ValueError, match="initial_params differ in structure"):
        trainer.init()
