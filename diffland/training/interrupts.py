"""SIGINT and SIGTERM handling that lets the trainer stop between updates and save.

Inside the training loop the first signal only records a stop request, so that the
update in flight finishes and its state can be saved whole. A second signal before the
loop reaches a stop point raises at once. While the final checkpoint is written, further
signals are logged and ignored. Outside the loop (compiling, scoring the starting
parameters) a signal raises at once, as Python's own Ctrl-C does.

NOTE: each process of a multi-process run handles only the signals it receives. One that
stops alone leaves the others waiting in the next update's collectives, so send the signal
to every process (Slurm does at its time limit). This path has not been run.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT or SIGTERM.

    A subclass of ``KeyboardInterrupt``, so code that already handles Ctrl-C handles a
    SIGTERM from a job scheduler the same way.
    """

    def __init__(self, signal_number: int):
        self.signal_number = signal_number
        super().__init__(signal.Signals(signal_number).name)

    @property
    def exit_status(self) -> int:
        """The shell's status for a process ended by this signal: 128 plus its number."""
        return 128 + self.signal_number


class StopSignals:
    """Context manager that installs the handlers and restores the previous ones on exit.

    ``mode`` sets what a signal does: ``"raise"`` raises :class:`TrainingInterrupted`,
    ``"defer"`` stores the first signal in ``pending`` for the loop to act on, and
    ``"ignore"`` only logs it. A signal whose handler is ``SIG_IGN`` (for example SIGINT
    in a background job of a non-interactive shell) stays ignored. Outside the main
    thread Python cannot install handlers, so the default behaviour stays.

    Python drops an exception raised where it ignores errors (a ``__del__`` method,
    jaxlib's garbage-collection callback), and a signal handler can run there. So a
    signal that raises also sets ``pending`` (when it is unset), which the training loop
    checks between updates. Once a signal has raised, leaving the block without an
    exception raises :class:`TrainingInterrupted` again, so code that catches it inside
    the block must re-raise it.
    """

    def __init__(self) -> None:
        self.mode = "raise"
        self.pending: int | None = None
        self._raised: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            logger.debug("not in the main thread; SIGINT and SIGTERM keep their handlers")
            return self
        for number in STOP_SIGNALS:
            current = signal.getsignal(number)
            # None: a handler installed outside Python, which could not be put back.
            if current is None or current == signal.SIG_IGN:
                continue
            self._previous[number] = current
            signal.signal(number, self._handle)
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()
        if exc_type is None and self._raised is not None:
            # The handler's exception was raised inside code that ignores exceptions (a
            # garbage-collection callback of jaxlib, a __del__ method), so the block
            # ended normally although the signal asked it to stop.
            raise TrainingInterrupted(self._raised)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        name = signal.Signals(number).name
        if self.mode == "ignore":
            logger.warning("received %s while saving the final checkpoint; ignoring it", name)
            return
        if self.mode == "defer" and self.pending is None:
            self.pending = number
            logger.warning(
                "received %s; stopping after the current update (send it again to stop at once)",
                name,
            )
            return
        self._raised = number
        # Also left for the training loop, in case the exception below is dropped.
        if self.pending is None:
            self.pending = number
        raise TrainingInterrupted(number)
