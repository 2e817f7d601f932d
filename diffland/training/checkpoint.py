"""Orbax checkpoints that are written atomically, with a fallback when one cannot be read.

Orbax writes each step into a temporary folder and renames it when complete, so a crash
during a save leaves the previous checkpoints intact. When the newest checkpoint cannot be
restored (truncated or corrupted files), a warning names it and the next older one is used.

With orbax-checkpoint 0.12.8, a flipped bit in the data file of an array larger than
about 1 KiB (the OCDBT inline limit) restored a wrong value without an error, while damage
to smaller, inlined values raised one. Each save therefore also writes the SHA-256 of
every saved leaf to ``<step>/checksums.json``, and a restored leaf whose digest differs,
or that has no recorded digest, marks the checkpoint as damaged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import sys
import traceback
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

logger = logging.getLogger(__name__)

CHECKSUM_FILE = "checksums.json"
"""File in each step folder with the SHA-256, dtype and shape of every saved leaf."""


class ChecksumMismatch(ValueError):
    """A restored checkpoint differs from the values that were saved."""


class CheckpointUnreadable(ValueError):
    """A checkpoint is missing, cannot be read, or fails its checksums."""


DESCRIBED_LENGTH = 300
"""Maximum number of characters of an error message quoted in a warning or error. Orbax's messages
can embed a whole TensorStore spec of several kilobytes."""


def _describe(error: Exception) -> str:
    """Return the error's type and the first line of its message, shortened to
    :data:`DESCRIBED_LENGTH` characters."""
    text = str(error)
    if not text:
        return type(error).__name__
    line = text.splitlines()[0]
    if len(line) > DESCRIBED_LENGTH:
        line = line[:DESCRIBED_LENGTH] + " ..."
    return f"{type(error).__name__}: {line}"


def leaf_checksums(tree: Any) -> dict[str, dict[str, Any]]:
    """Return the dtype, shape and SHA-256 of each leaf's bytes, keyed by its tree path.

    Leaves that this process cannot read whole (split over other processes' devices) are
    left out, so they are not verified.
    """
    checksums = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if isinstance(leaf, jax.Array) and not (
            leaf.is_fully_addressable or leaf.is_fully_replicated
        ):
            continue
        value = np.ascontiguousarray(np.asarray(leaf))
        checksums[jax.tree_util.keystr(path)] = {
            "dtype": value.dtype.str,
            "shape": list(value.shape),
            "sha256": hashlib.sha256(value.tobytes()).hexdigest(),
        }
    return checksums


def _is_late_read_callback(unraisable: Any) -> bool:
    """Return whether ``unraisable`` (the argument of :func:`sys.unraisablehook`) is the
    error of a TensorStore read that completed after its restore failed.

    Orbax (0.12.8) runs a restore in a new asyncio event loop and closes the loop when
    the first read raises. TensorStore (0.1.86) still completes the other reads on its
    own threads, and each completion calls ``call_soon_threadsafe`` on the closed loop,
    which raises ``RuntimeError: Event loop is closed`` with no object to report it on.

    NOTE: a read that fails in such a restore can also leave its own error on an
    abandoned orbax coroutine, reported as "Exception ignored in: <coroutine ...>" when
    the coroutine is collected. That one is not matched, because it is a read failure.
    """
    if unraisable.exc_type is not RuntimeError or unraisable.object is not None:
        return False
    if str(unraisable.exc_value) != "Event loop is closed":
        return False
    frames = traceback.extract_tb(unraisable.exc_traceback)
    return any(frame.name == "call_soon_threadsafe" for frame in frames)


class _LateReadFilter:
    """An unraisable-exception hook that drops the errors of reads that completed after
    their restore failed (see :func:`_is_late_read_callback`) and passes every other
    one to the hook it replaced."""

    def __init__(self, previous: Any):
        self.previous = previous
        self.dropped = 0

    def __call__(self, unraisable: Any) -> None:
        if not _is_late_read_callback(unraisable):
            self.previous(unraisable)
            return
        if self.dropped == 0:
            logger.debug(
                "dropped 'Event loop is closed' from a read that completed after its "
                "checkpoint restore failed; later ones are dropped without a message"
            )
        self.dropped += 1


def _drop_late_read_errors() -> None:
    """Install :class:`_LateReadFilter` as :func:`sys.unraisablehook`, unless it is
    already the hook. Called after a failed restore, so that the reads it left running
    print no traceback when they complete, up to interpreter exit."""
    if not isinstance(sys.unraisablehook, _LateReadFilter):
        sys.unraisablehook = _LateReadFilter(sys.unraisablehook)


class CheckpointStore:
    """Save and restore training-state pytrees in ``directory/<step>``."""

    def __init__(self, directory: str | pathlib.Path, max_to_keep: int = 3):
        self.directory = pathlib.Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, tree: Any) -> None:
        """Write ``tree`` as the checkpoint of ``step`` and wait until it is on disk."""
        self._manager.save(step, args=ocp.args.StandardSave(tree), force=True)
        self._manager.wait_until_finished()
        if jax.process_index() == 0:
            self._write_checksums(step, tree)
        logger.debug("saved checkpoint %s", self.directory / str(step))

    def _write_checksums(self, step: int, tree: Any) -> None:
        # Written after orbax has renamed the step folder into place, so a crash in
        # between leaves a checkpoint without checksums, which restores with a warning.
        path = self.directory / str(step) / CHECKSUM_FILE
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(leaf_checksums(tree), indent=1) + "\n")
        os.replace(temporary, path)

    def _verify(self, step: int, tree: Any, required: bool = False) -> None:
        """Raise :class:`ChecksumMismatch` when a restored leaf differs from the saved one
        or has no recorded checksum.

        Without a checksum file it raises when ``required`` is set and otherwise only
        logs a warning, because a crash right after orbax's write leaves a checkpoint
        without one.
        """
        path = self.directory / str(step) / CHECKSUM_FILE
        if not path.exists():
            if required:
                raise ChecksumMismatch(f"{path} is missing, so the values cannot be verified")
            logger.warning(
                "checkpoint %s has no %s, so its restored values are not verified",
                path.parent,
                CHECKSUM_FILE,
            )
            return
        try:
            saved = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ChecksumMismatch(f"{path} is unreadable ({error})") from error
        restored = leaf_checksums(tree)
        unrecorded = sorted(set(restored) - set(saved))
        if unrecorded:
            raise ChecksumMismatch(
                f"{path} records no checksum for {len(unrecorded)} of {len(restored)} leaves "
                f"(first: {unrecorded[0]})"
            )
        for name, record in saved.items():
            current = restored.get(name)
            if current is None:
                continue  # not readable whole in this process
            if (current["dtype"], current["shape"]) != (record["dtype"], record["shape"]):
                continue  # restored into another dtype or shape, so the bytes differ anyway
            if current["sha256"] != record["sha256"]:
                raise ChecksumMismatch(
                    f"leaf {name} differs from the saved value (SHA-256 {current['sha256'][:12]}"
                    f" restored, {record['sha256'][:12]} saved)"
                )

    def steps(self) -> list[int]:
        """Return the saved steps, oldest first."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def restore_latest(self, target: Any) -> tuple[int, Any] | None:
        """Restore the newest readable checkpoint shaped like ``target``.

        Returns ``(step, tree)``, or None when the folder has no checkpoint. A checkpoint
        that orbax cannot read, or whose restored values fail their checksums, is
        reported with a warning that names its folder. Newer unreadable ones are then
        renamed to ``<step>.unreadable``, which keeps their files for inspection and lets
        training save that step again.

        Raises ``ValueError`` when checkpoints exist but none can be restored, because
        they were written for another controller or configuration, or are all damaged.
        """
        steps = self.steps()
        skipped: list[int] = []
        for step in reversed(steps):
            try:
                tree = self._restore_verified(step, target)
            except Exception as error:  # noqa: BLE001 - orbax and tensorstore raise many types
                _drop_late_read_errors()
                logger.warning(
                    "checkpoint %s is unreadable and was skipped (%s)",
                    self.directory / str(step),
                    _describe(error),
                )
                skipped.append(step)
                continue
            self._set_aside(skipped)
            return step, tree
        if steps:
            raise ValueError(
                f"none of the checkpoints {steps} in {self.directory} can be restored into "
                "this training state: they were written for another controller or "
                "configuration, or they are damaged (see the warnings above). Start a new run "
                "folder, or resume with the settings the run was started with."
            )
        return None

    def restore_step(self, step: int, target: Any) -> Any:
        """Restore the checkpoint of ``step`` shaped like ``target``, with no fallback.

        Unlike :meth:`restore_latest` this changes nothing in the folder, so it suits
        reading a finished run. Raises :class:`CheckpointUnreadable` when the step was
        not saved, when orbax cannot read it, or when its values fail their checksums or
        have none.
        """
        folder = self.directory / str(step)
        if step not in self.steps():
            raise CheckpointUnreadable(f"checkpoint {folder} does not exist")
        try:
            return self._restore_verified(step, target, require_checksums=True)
        except Exception as error:  # noqa: BLE001 - orbax and tensorstore raise many types
            _drop_late_read_errors()
            raise CheckpointUnreadable(
                f"checkpoint {folder} is unreadable ({_describe(error)})"
            ) from error

    def _restore_verified(self, step: int, target: Any, require_checksums: bool = False) -> Any:
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        tree = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        self._verify(step, tree, required=require_checksums)
        return tree

    def _set_aside(self, steps: list[int]) -> None:
        for step in steps:
            folder = self.directory / str(step)
            target = self.directory / f"{step}.unreadable"
            if folder.exists() and not target.exists():
                folder.rename(target)
                logger.warning("moved unreadable checkpoint %s to %s", folder, target)
        if steps:
            self._manager.reload()

    def close(self) -> None:
        self._manager.close()
