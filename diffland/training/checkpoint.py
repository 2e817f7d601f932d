"""Orbax checkpoints that are written atomically, with a fallback when one cannot be read.

Orbax writes each step into a temporary folder and renames it when complete, so a crash
during a save leaves the previous checkpoints intact. When the newest checkpoint cannot be
restored (truncated or corrupted files), a warning names it and the next older one is used.

NOTE: there is no checksum, so damage that leaves the files readable (a flipped byte in
the array data) restores wrong values without an error.
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

        Returns ``(step, tree)``, or None when the folder has no checkpoint. Each
        unreadable checkpoint is reported with a warning that names its folder. Newer
        unreadable ones are then renamed to ``<step>.unreadable``, which keeps their files
        for inspection and lets training save that step again.

        Raises ``ValueError`` when checkpoints exist but none can be restored, because
        they were written for another controller or configuration, or are all damaged.
        """
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        steps = self.steps()
        skipped: list[int] = []
        for step in reversed(steps):
            try:
                tree = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
            except Exception as error:  # noqa: BLE001 - orbax and tensorstore raise many types
                logger.warning(
                    "checkpoint %s is unreadable and was skipped (%s: %s)",
                    self.directory / str(step),
                    type(error).__name__,
                    str(error).splitlines()[0] if str(error) else "",
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
