"""Exit handling shared by the ``diffland`` command and the experiments' entry points.

This module imports only the standard library, so an experiment runs where the
command's own dependencies (tyro) are not installed.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

INTERRUPTED_STATUSES = frozenset(128 + number for number in (signal.SIGINT, signal.SIGTERM))
"""Exit statuses of a run stopped by SIGINT (130) or SIGTERM (143), as a shell reports them."""


def run_quiet_on_closed_pipe(function: Callable[[], int]) -> int:
    """Call ``function`` and return its exit status, or 1 without a traceback when the
    reader of stdout has closed the pipe, as ``head`` does after its lines.

    The ``diffland`` command and the experiments' entry points run through this. A
    ``SystemExit`` (``--help``, a parser error) passes through unless flushing its
    output finds the pipe closed.
    """
    try:
        try:
            status = function()
        except SystemExit:
            sys.stdout.flush()
            raise
        # Flush here, so that a closed pipe raises inside this try and not at exit.
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # Python flushes stdout once more at exit, so it now writes to the null device.
        null_device = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null_device, sys.stdout.fileno())
        return 1


def exit_process(status: int) -> NoReturn:
    """Exit with ``status``, skipping interpreter finalization after an interruption.

    A signal can stop the main thread while XLA still compiles on its own threads. With
    jaxlib 0.10.2, Python's finalization then destroys the JAX client under that compile,
    and the process ends with a segmentation fault instead of ``status``. So for the
    statuses in :data:`INTERRUPTED_STATUSES` this flushes the logging handlers, stdout
    and stderr, shuts down ``jax.distributed`` as JAX's own exit handler would, and
    calls :func:`os._exit`. Other ``atexit`` handlers and object finalizers do not run,
    so the caller must have saved its checkpoints and closed its metric writers. Any
    other status exits through :func:`sys.exit`.
    """
    if status not in INTERRUPTED_STATUSES:
        sys.exit(status)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            # The pipe or the stream is closed, so nothing is left to flush.
            pass
    jax = sys.modules.get("jax")
    if jax is not None:
        # NOTE: no test runs this with several processes. With one, it does nothing.
        jax.distributed.shutdown()
    os._exit(status)
