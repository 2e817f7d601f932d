"""Faults during training: damaged checkpoints and non-finite updates."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_training import NaNGradientPolicy, landing_task, start_pool, train_config

from diffland.training import CheckpointStore, Trainer


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
