"""SIGINT and SIGTERM handling while ``python -m experiments.NAME`` imports its modules.

Importing JAX and the rest of an experiment takes a second or more, before any run
folder exists. With Python's default handlers, a SIGINT there raised
``KeyboardInterrupt`` wherever the interpreter was, and when that was JAX's garbage
collection callback, Python only printed "Exception ignored" and the run went on.
A SIGTERM ended the process without a message. The handlers here only record the first
signal, and :func:`experiments.common.run_entry_point` acts on it once the imports are
done. This module imports only the standard library, so that the package can install
the handlers before anything heavy is imported.
"""

from __future__ import annotations

import atexit
import os
import signal
from types import FrameType

_received: list[int] = []
_previous: dict[int, object] = {}


def record_stop_signals() -> None:
    """Install handlers that record SIGINT and SIGTERM instead of acting on them.

    A signal whose handler is ``SIG_IGN`` (SIGINT in a background job of a
    non-interactive shell) or was installed outside Python stays as it is.
    """
    for number in (signal.SIGINT, signal.SIGTERM):
        current = signal.getsignal(number)
        if current is None or current == signal.SIG_IGN:
            continue
        _previous[number] = current
        signal.signal(number, _record)
    # A module run with -m that never calls restore_stop_signals (one without an entry
    # point) would otherwise exit as if no signal had come.
    atexit.register(_deliver_pending)


def _deliver_pending() -> None:
    """At exit, end the process by a recorded signal that nothing has acted on."""
    if not _previous:
        return
    received = restore_stop_signals()
    if received is not None:
        signal.signal(received, signal.SIG_DFL)
        os.kill(os.getpid(), received)


def _record(number: int, frame: FrameType | None) -> None:
    if not _received:
        _received.append(number)


def restore_stop_signals() -> int | None:
    """Put back the handlers that :func:`record_stop_signals` replaced and return the
    number of the first signal recorded in between, or None."""
    for number, handler in _previous.items():
        signal.signal(number, handler)
    _previous.clear()
    return _received.pop() if _received else None
