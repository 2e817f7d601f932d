"""Metric sinks for the trainer: JSON lines, TensorBoard, Weights & Biases and a tqdm bar.

A callback is any callable ``callback(step, metrics)`` where ``metrics`` maps namespaced
names (``train/loss``, ``train/grad_norm``, ``eval/success_rate``, ...) to floats, so
other loggers can be plugged in without touching the trainer.
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Mapping
from typing import Protocol


def _finite_or_none(value: float) -> float | None:
    """Return ``value`` as a float, or None (JSON null) when it is NaN or infinite."""
    value = float(value)
    return value if math.isfinite(value) else None


class MetricsCallback(Protocol):
    def __call__(self, step: int, metrics: Mapping[str, float]) -> None: ...


class JsonlWriter:
    """Append one JSON object per call, ``{"step": ..., name: value, ...}``, to a file.

    ``tags`` (for example the controller name and the seed) are added to every record.
    """

    def __init__(self, path: str | pathlib.Path, tags: Mapping[str, object] | None = None):
        self.path = pathlib.Path(path)
        self.tags = dict(tags or {})

    def __call__(self, step: int, metrics: Mapping[str, float]) -> None:
        values = {k: _finite_or_none(v) for k, v in metrics.items()}
        record = {**self.tags, "step": step, **values}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


class TensorBoardWriter:
    """Write scalars to TensorBoard event files with tensorboardX."""

    def __init__(self, logdir: str | pathlib.Path, prefix: str = ""):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(logdir))
        self.prefix = prefix

    def __call__(self, step: int, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            # A mean over an empty set (no successful landing yet) is NaN; leave a gap.
            if math.isfinite(float(value)):
                self.writer.add_scalar(self.prefix + name, float(value), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbWriter:
    """Log metrics to a Weights & Biases run, under the same names as TensorBoard.

    Needs the ``wandb`` extra (``pip install diffland[wandb]``). With the environment
    variable ``WANDB_MODE=offline`` (or ``mode="offline"``) the run is only written under
    ``directory`` and nothing is sent over the network; ``wandb sync`` uploads it later.
    Non-finite values are left out, as in :class:`TensorBoardWriter`.
    """

    def __init__(
        self,
        project: str = "diffland",
        directory: str | pathlib.Path | None = None,
        name: str | None = None,
        config: Mapping[str, object] | None = None,
        mode: str | None = None,
        prefix: str = "",
    ):
        try:
            import wandb
        except ImportError as error:
            raise ImportError(
                "WandbWriter needs the wandb package, which is not installed. Install it with "
                "pip install 'diffland[wandb]'."
            ) from error
        settings = {"project": project, "name": name, "config": dict(config or {})}
        if directory is not None:
            pathlib.Path(directory).mkdir(parents=True, exist_ok=True)
            settings["dir"] = str(directory)
        if mode is not None:
            settings["mode"] = mode
        self.run = wandb.init(**settings)
        self.prefix = prefix

    def __call__(self, step: int, metrics: Mapping[str, float]) -> None:
        values = {
            self.prefix + name: float(value)
            for name, value in metrics.items()
            if math.isfinite(float(value))
        }
        if values:
            self.run.log(values, step=step)

    def close(self) -> None:
        """Finish the run.

        NOTE: in offline mode (wandb 0.31) the run file can still be incomplete when this
        returns; ``wandb.teardown()`` waits for the wandb service to write it.
        """
        self.run.finish()


class ProgressBar:
    """A tqdm bar over training steps showing the loss and the latest success rate."""

    def __init__(self, total: int, description: str = "train", disable: bool | None = None):
        # Imported here so that diffland.training imports where tqdm is not installed.
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=description, unit="step", disable=disable)
        self.last_step = 0
        self.shown: dict[str, str] = {}

    def __call__(self, step: int, metrics: Mapping[str, float]) -> None:
        for name, label in (
            ("train/loss", "loss"),
            ("train/success_rate", "success"),
            ("eval/success_rate", "eval_success"),
        ):
            if name in metrics:
                self.shown[label] = f"{float(metrics[name]):.3g}"
        self.bar.set_postfix(self.shown, refresh=False)
        self.bar.update(max(step - self.last_step, 0))
        self.last_step = step

    def start_at(self, step: int) -> None:
        """Move the bar to ``step`` when a run resumes."""
        self.bar.update(max(step - self.last_step, 0))
        self.last_step = step

    def close(self) -> None:
        self.bar.close()


class MetricsHistory:
    """Keep every reported metric in memory, for plots of the training curves."""

    def __init__(self):
        self.steps: dict[str, list[int]] = {}
        self.values: dict[str, list[float]] = {}

    def __call__(self, step: int, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            self.steps.setdefault(name, []).append(step)
            self.values.setdefault(name, []).append(float(value))

    @classmethod
    def from_jsonl(cls, path: str | pathlib.Path, **tags: object) -> MetricsHistory:
        """Read the records of ``path`` whose tags equal ``tags``, one value per step.

        A resumed run logs again the steps between its last checkpoint and the crash, so
        for a repeated step the later record wins.
        """
        latest: dict[int, dict[str, float]] = {}
        with pathlib.Path(path).open() as handle:
            for line in handle:
                record = json.loads(line)
                if all(record.get(key) == value for key, value in tags.items()):
                    latest.setdefault(record["step"], {}).update(
                        {
                            k: v
                            for k, v in record.items()
                            if k not in tags and k != "step" and v is not None
                        }
                    )
        history = cls()
        for step in sorted(latest):
            history(step, latest[step])
        return history

    def series(self, name: str) -> tuple[list[int], list[float]]:
        """Return the steps and values recorded for ``name`` (empty lists if none)."""
        return self.steps.get(name, []), self.values.get(name, [])
