"""Orbax checkpoints that are written atomically and checked when they are read back.

Orbax writes each step into a temporary folder and renames it when complete, so a crash
during a save leaves the previous checkpoints intact. When the newest checkpoint cannot be
restored (truncated or corrupted files), a warning names it and the next older one is used.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

logger = logging.getLogger(__name__)


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
        logger.debug("saved checkpoint %s", self.directory / str(step))

    def steps(self) -> list[int]:
        """Return the saved steps, oldest first."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def restore_latest(self, target: Any) -> tuple[int, Any] | None:
        """Restore the newest readable checkpoint shaped like ``target``.

        Returns ``(step, tree)``, or None when there is no readable checkpoint. Each
        unreadable checkpoint is reported with a warning that names its folder.
        """
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        for step in reversed(self.steps()):
            try:
                tree = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
            except Exception as error:  # noqa: BLE001 - orbax and tensorstore raise many types
                logger.warning(
                    "checkpoint %s is unreadable and was skipped (%s: %s); trying an older one",
                    self.directory / str(step),
                    type(error).__name__,
                    error,
                )
                continue
            return step, tree
        return None

    def close(self) -> None:
        self._manager.close()
