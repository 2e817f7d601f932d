"""Exit handling shared by the ``diffland`` command and the experiments' entry points.

This module imports only the standard library, so an experiment runs where the
command's own dependencies (tyro) are not installed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


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
