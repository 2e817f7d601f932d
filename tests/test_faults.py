"""Faults during training: stop signals, a killed process, damaged checkpoints, NaN updates.

One run of the ``train`` scenario of ``training_scenarios.py`` is stopped three times in
subprocesses that wait inside a chosen step, so each fault lands at a known point. It
receives SIGTERM at step 3, SIGINT at step 5 after resuming, and SIGKILL at step 7 after
resuming again. A last resume trains to the end, and its state is compared with an
uninterrupted run of the same task.
"""

import asyncio
import gc
import logging
import os
import pathlib
import signal
import subprocess
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_training import NaNGradientPolicy, landing_task, start_pool, train_config
from training_scenarios import CHECKPOINT_EVERY, STEPS, subprocess_environment

from diffland.training import CheckpointStore, Trainer, TrainingInterrupted, checkpoint
from diffland.training.checkpoint import CheckpointUnreadable
from diffland.training.interrupts import StopSignals

SCRIPT = pathlib.Path(__file__).with_name("training_scenarios.py")
WAIT_LIMIT_S = 600.0
"""Maximum wait for a subprocess to reach its paused step or to exit before the test fails."""
STOPS = {
    "sigterm": (3, signal.SIGTERM),
    "sigint": (5, signal.SIGINT),
    "sigkill": (7, signal.SIGKILL),
}
"""Step at which each stage of the chain pauses, and the signal it then receives."""


def assert_trees_close(actual, expected, atol):
    expected_leaves = jax.tree_util.tree_leaves_with_path(expected)
    actual_leaves = jax.tree_util.tree_leaves(actual)
    assert len(actual_leaves) == len(expected_leaves)
    for (path, want), got in zip(expected_leaves, actual_leaves, strict=True):
        np.testing.assert_allclose(
            np.asarray(got), np.asarray(want), rtol=0, atol=atol, err_msg=jax.tree_util.keystr(path)
        )


def assert_all_finite(tree):
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        value = np.asarray(leaf)
        if np.issubdtype(value.dtype, np.inexact):
            assert np.all(np.isfinite(value)), jax.tree_util.keystr(path)


def stop_paused_run(folder, env, resume, pause_step, signal_number):
    """Run the scenario until it waits inside ``pause_step``, send the signal, let it go on.

    Returns the exit status, stderr and the checkpoint steps left afterwards.
    """
    for marker in ("paused", "release"):
        (folder / marker).unlink(missing_ok=True)
    command = [sys.executable, str(SCRIPT), "train", str(folder), "--pause-at", str(pause_step)]
    if resume:
        command.append("--resume")
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not (folder / "paused").exists():
        if process.poll() is not None:
            _, stderr = process.communicate()
            pytest.fail(f"the training subprocess exited before step {pause_step}:\n{stderr}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the training subprocess did not reach step {pause_step}")
        time.sleep(0.05)
    process.send_signal(signal_number)
    (folder / "release").touch()
    _, stderr = process.communicate(timeout=WAIT_LIMIT_S)
    steps = CheckpointStore(folder / "checkpoints").steps()
    return process.returncode, stderr, steps


@pytest.fixture(scope="module")
def fault_chain(tmp_path_factory):
    """Run the three stopped stages and the final resume; return what each one left."""
    base = tmp_path_factory.mktemp("faults")
    folder = base / "run"
    folder.mkdir()
    env = subprocess_environment(tmp_path_factory.getbasetemp() / "jax-compilation-cache")
    stages = {}
    for index, (name, (pause_step, number)) in enumerate(STOPS.items()):
        stages[name] = stop_paused_run(folder, env, index > 0, pause_step, number)
    final = subprocess.run(
        [sys.executable, str(SCRIPT), "train", str(folder), "--resume"]
        + ["--reference", str(base / "reference")],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT_LIMIT_S,
        check=False,
    )
    assert final.returncode == 0, final.stderr
    with np.load(folder / "final.npz") as resumed, np.load(base / "reference/final.npz") as ref:
        stages["resumed"] = {name: resumed[name] for name in resumed.files}
        stages["reference"] = {name: ref[name] for name in ref.files}
    return stages


# -- signals and kill --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sigterm", "sigint"])
def test_stop_signal_saves_update_in_flight(fault_chain, stage):
    status, stderr, steps = fault_chain[stage]
    pause_step, number = STOPS[stage]
    name = signal.Signals(number).name

    assert status == 128 + number, stderr
    assert f"received {name}; stopping after the current update" in stderr
    assert f"stopped by {name} after step {pause_step}" in stderr
    assert "resume=True" in stderr
    assert "--resume" in stderr
    assert steps[-1] == pause_step


@pytest.mark.slow
def test_kill_9_keeps_last_checkpoint(fault_chain):
    status, _, steps = fault_chain["sigkill"]
    pause_step, _ = STOPS["sigkill"]

    assert status == -signal.SIGKILL
    assert steps[-1] == pause_step - pause_step % CHECKPOINT_EVERY


@pytest.mark.slow
def test_resumed_run_matches_uninterrupted(fault_chain):
    resumed = fault_chain["resumed"]
    reference = fault_chain["reference"]
    pause_step, _ = STOPS["sigkill"]

    assert int(resumed["resumed_from"]) == pause_step - pause_step % CHECKPOINT_EVERY
    assert int(resumed["step"]) == STEPS
    np.testing.assert_array_equal(resumed["key"], reference["key"])
    names = [name for name in reference if name.startswith(("params", "opt_state"))]
    assert any(name.startswith("params") for name in names)
    for name in names:
        np.testing.assert_allclose(resumed[name], reference[name], rtol=0, atol=1e-6, err_msg=name)


def test_second_signal_raises_at_once():
    with pytest.raises(TrainingInterrupted, match="SIGTERM"):
        with StopSignals() as stop:
            stop.mode = "defer"
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.pending == signal.SIGTERM
            os.kill(os.getpid(), signal.SIGTERM)
            raise AssertionError("the second signal did not raise")


class _SignalsWhenCollected:
    """An object whose ``__del__`` receives SIGTERM. Python ignores exceptions raised
    there, as it does in jaxlib's garbage-collection callback."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)


def test_signal_swallowed_by_del_still_stops(monkeypatch):
    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", dropped.append)

    with pytest.raises(TrainingInterrupted, match="SIGTERM"):
        with StopSignals() as stop:
            _SignalsWhenCollected()
            # The training loop checks this between updates.
            pending = stop.pending

    assert pending == signal.SIGTERM
    assert [type(unraisable.exc_value) for unraisable in dropped] == [TrainingInterrupted]


def test_signals_ignored_while_saving(caplog):
    # A shell that starts a background job sets SIGINT to SIG_IGN, and StopSignals
    # leaves an ignored signal alone, so give SIGINT its usual handler for this test.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        stop = ignore_sigint_while_saving(caplog)
    finally:
        signal.signal(signal.SIGINT, previous)

    assert stop.pending is None
    assert "received SIGINT while saving the final checkpoint" in caplog.text


def ignore_sigint_while_saving(caplog):
    with StopSignals() as stop:
        stop.mode = "ignore"
        with caplog.at_level(logging.WARNING, logger="diffland.training.interrupts"):
            os.kill(os.getpid(), signal.SIGINT)
    return stop


def test_stop_signals_restore_handlers():
    def custom(number, frame):
        raise AssertionError("the previous handler ran inside StopSignals")

    previous = signal.signal(signal.SIGTERM, custom)
    try:
        with StopSignals():
            assert signal.getsignal(signal.SIGTERM) is not custom
        assert signal.getsignal(signal.SIGTERM) is custom
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_ignored_signal_stays_ignored():
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with StopSignals():
            assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- damaged checkpoints -----------------------------------------------------------------

LARGE = np.random.default_rng(0).normal(size=(4000,)).astype(np.float32)


def large_tree(scale):
    """A tree whose 16 kB leaf orbax writes to a data file of its own, not inline."""
    return {"large": jnp.asarray(scale * LARGE), "small": jnp.full(3, scale)}


def largest_file(folder, pattern):
    files = [path for path in folder.glob(pattern) if path.is_file()]
    assert files, f"no file matches {pattern} in {folder}"
    return max(files, key=lambda path: path.stat().st_size)


def truncate(path):
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


def flip_bit(path):
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01
    path.write_bytes(bytes(content))


DAMAGE_CASES = {
    "truncated-array-data": ("default/ocdbt.process_0/d/*", truncate),
    "flipped-bit-array-data": ("default/ocdbt.process_0/d/*", flip_bit),
    "truncated-index": ("default/manifest.ocdbt", truncate),
    "flipped-bit-index": ("default/d/*", flip_bit),
    "truncated-tree-metadata": ("default/_METADATA", truncate),
    "flipped-bit-checksums": ("checksums.json", flip_bit),
}


# A failed orbax read of truncated data leaves an "Event loop is closed" error in a
# background task (orbax-checkpoint 0.12.8), which pytest reports as unraisable.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("case", list(DAMAGE_CASES))
def test_damaged_file_falls_back(tmp_path, caplog, case):
    pattern, damage = DAMAGE_CASES[case]
    store = CheckpointStore(tmp_path / "checkpoints")
    store.save(1, large_tree(1.0))
    store.save(2, large_tree(2.0))
    newest = store.directory / "2"
    damage(largest_file(newest, pattern))

    with caplog.at_level(logging.WARNING, logger="diffland.training.checkpoint"):
        step, tree = CheckpointStore(tmp_path / "checkpoints").restore_latest(large_tree(0.0))

    assert step == 1
    assert_trees_close(tree, large_tree(1.0), atol=0.0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(newest) in warnings[0]
    assert "unreadable and was skipped" in warnings[0]
    assert (store.directory / "2.unreadable").is_dir()


def test_flipped_bit_names_leaf(tmp_path, caplog):
    store = CheckpointStore(tmp_path / "checkpoints")
    store.save(1, large_tree(1.0))
    store.save(2, large_tree(2.0))
    flip_bit(largest_file(store.directory / "2", "default/ocdbt.process_0/d/*"))

    with caplog.at_level(logging.WARNING, logger="diffland.training.checkpoint"):
        step, _ = CheckpointStore(tmp_path / "checkpoints").restore_latest(large_tree(0.0))

    assert step == 1
    assert "ChecksumMismatch: leaf ['large'] differs from the saved value" in caplog.text


def test_missing_checksums_restore_with_warning(tmp_path, caplog):
    store = CheckpointStore(tmp_path / "checkpoints")
    store.save(1, large_tree(1.0))
    (store.directory / "1" / "checksums.json").unlink()

    with caplog.at_level(logging.WARNING, logger="diffland.training.checkpoint"):
        step, tree = CheckpointStore(tmp_path / "checkpoints").restore_latest(large_tree(0.0))

    assert step == 1
    assert_trees_close(tree, large_tree(1.0), atol=0.0)
    assert "has no checksums.json" in caplog.text


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_restore_step_rejects_damage(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints")
    store.save(1, large_tree(1.0))
    store.save(2, large_tree(2.0))
    flip_bit(largest_file(store.directory / "2", "default/ocdbt.process_0/d/*"))
    reader = CheckpointStore(tmp_path / "checkpoints")

    with pytest.raises(CheckpointUnreadable, match=r"checkpoints/2 is unreadable \(Checksum"):
        reader.restore_step(2, large_tree(0.0))
    with pytest.raises(CheckpointUnreadable, match=r"checkpoints/3 does not exist"):
        reader.restore_step(3, large_tree(0.0))

    assert reader.steps() == [1, 2]
    assert not (store.directory / "2.unreadable").exists()
    assert_trees_close(reader.restore_step(1, large_tree(0.0)), large_tree(1.0), atol=0.0)


def closed_loop_error():
    """Return the RuntimeError that ``call_soon_threadsafe`` raises on a closed loop."""
    loop = asyncio.new_event_loop()
    loop.close()
    try:
        loop.call_soon_threadsafe(print)
    except RuntimeError as error:
        return error
    raise AssertionError("call_soon_threadsafe accepted a closed event loop")


def unraisable(error, hook_object=None):
    """Return the argument that sys.unraisablehook receives for ``error``."""
    return types.SimpleNamespace(
        exc_type=type(error),
        exc_value=error,
        exc_traceback=error.__traceback__,
        err_msg=None,
        object=hook_object,
    )


def test_late_read_filter_drops_only_closed_loop():
    passed = []
    hook = checkpoint._LateReadFilter(passed.append)
    late_read = unraisable(closed_loop_error())
    elsewhere = unraisable(RuntimeError("Event loop is closed"))
    other = unraisable(RuntimeError("disk failed"))
    with_object = unraisable(closed_loop_error(), hook_object=object())

    for case in (late_read, elsewhere, other, with_object):
        hook(case)

    assert passed == [elsewhere, other, with_object]
    assert hook.dropped == 1


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_failed_restore_installs_late_read_filter(tmp_path, monkeypatch):
    previous = []
    monkeypatch.setattr(sys, "unraisablehook", previous.append)
    store = CheckpointStore(tmp_path / "checkpoints")
    store.save(1, large_tree(1.0))
    truncate(largest_file(store.directory / "1", "default/ocdbt.process_0/d/*"))

    with pytest.raises(CheckpointUnreadable):
        CheckpointStore(tmp_path / "checkpoints").restore_step(1, large_tree(0.0))
    with pytest.raises(CheckpointUnreadable):
        CheckpointStore(tmp_path / "checkpoints").restore_step(1, large_tree(0.0))
    # Collects the abandoned read coroutines now, so that their read errors reach the
    # replaced hook (``previous``) and not the hook of a later test.
    gc.collect()

    assert isinstance(sys.unraisablehook, checkpoint._LateReadFilter)
    # A second failure keeps the one filter instead of wrapping it again.
    assert sys.unraisablehook.previous == previous.append


def test_restore_step_needs_checksums(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints")
    store.save(1, large_tree(1.0))
    (store.directory / "1" / "checksums.json").unlink()

    with pytest.raises(CheckpointUnreadable, match=r"checksums.json is missing, so the values"):
        CheckpointStore(tmp_path / "checkpoints").restore_step(1, large_tree(0.0))


def test_empty_checksums_fall_back(tmp_path, caplog):
    store = CheckpointStore(tmp_path / "checkpoints")
    store.save(1, large_tree(1.0))
    store.save(2, large_tree(2.0))
    (store.directory / "2" / "checksums.json").write_text("{}")

    with caplog.at_level(logging.WARNING, logger="diffland.training.checkpoint"):
        step, _ = CheckpointStore(tmp_path / "checkpoints").restore_latest(large_tree(0.0))

    assert step == 1
    assert "records no checksum for 2 of 2 leaves (first: ['large'])" in caplog.text


def test_long_error_message_is_shortened():
    described = checkpoint._describe(RuntimeError("x" * 5000 + "\nsecond line"))

    assert described == "RuntimeError: " + "x" * checkpoint.DESCRIBED_LENGTH + " ..."
    assert checkpoint._describe(ValueError()) == "ValueError"


# -- non-finite updates ------------------------------------------------------------------


def test_nonfinite_updates_leave_state_finite():
    config = train_config(steps=10, checks=False, max_consecutive_nonfinite=100)
    trainer = Trainer(landing_task(), NaNGradientPolicy(), config, start_pool())
    initial = trainer.init()

    state = initial
    for expected_skips in (1, 2, 3):
        state, metrics = trainer.step(state)
        assert int(metrics["train/nonfinite_skipped"]) == expected_skips
        assert not np.isfinite(float(metrics["train/grad_norm"]))

    assert int(state.step) == 3
    assert_all_finite(state.params)
    assert_all_finite(state.opt_state)
    assert_trees_close(state.params, initial.params, atol=0.0)
    assert_trees_close(state.opt_state.inner_state, initial.opt_state.inner_state, atol=0.0)
