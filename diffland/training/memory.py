"""Checks that a computation fits in the memory of its devices before it runs.

A rollout that records every step, or a gradient through a long horizon without remat,
can ask for more memory than the machine has. XLA then fails with an out-of-memory
error, or the operating system ends the process, after the program has compiled. These
checks compare an estimate with the free memory first and raise an error that names
the settings to lower.
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Sequence
from typing import Any

import jax

logger = logging.getLogger(__name__)

MEMINFO = pathlib.Path("/proc/meminfo")
"""Linux's memory report; its ``MemAvailable`` line is the host memory a CPU device can use."""


class InsufficientMemoryError(MemoryError):
    """A computation needs more memory than its devices have free."""


def host_available_bytes(meminfo: pathlib.Path = MEMINFO) -> int | None:
    """Return the host memory available to new allocations, bytes, or None where the
    system does not report it (``MemAvailable`` is Linux only)."""
    try:
        lines = meminfo.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, value = line.partition(":")
        if name == "MemAvailable":
            # The kernel writes the value in KiB, as "MemAvailable:  123456 kB".
            return int(value.split()[0]) * 1024
    return None


def available_bytes(devices: Sequence[Any]) -> int | None:
    """Return the free memory of ``devices`` per device, bytes, or None when unknown.

    A GPU or TPU reports its own limit and use through ``memory_stats()``, and the
    smallest free amount among ``devices`` is returned. CPU devices share the host's
    memory, so each gets the host's available memory divided by their count.
    """
    cpu = [device for device in devices if device.platform == "cpu"]
    if cpu:
        host = host_available_bytes()
        return None if host is None else host // len(cpu)
    # NOTE: this branch has not run on a GPU or TPU yet.
    free = []
    for device in devices:
        stats = device.memory_stats()
        if not stats or "bytes_limit" not in stats:
            return None
        free.append(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return min(free) if free else None


def tree_bytes(tree: Any) -> int:
    """Return the bytes of every array in ``tree``, which may hold ``jax.ShapeDtypeStruct``."""
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(tree))


def compiled_bytes(compiled: Any) -> int | None:
    """Return the memory per device that running ``compiled`` adds to its inputs, bytes:
    XLA's scratch plus the outputs that do not reuse an input's buffer. None where the
    backend gives no memory analysis."""
    try:
        analysis = compiled.memory_analysis()
    except (NotImplementedError, RuntimeError):
        return None
    if analysis is None:
        return None
    return (
        analysis.temp_size_in_bytes + analysis.output_size_in_bytes - analysis.alias_size_in_bytes
    )


def check_fits(
    needed_per_device: int | None, devices: Sequence[Any], what: str, advice: str
) -> None:
    """Raise :class:`InsufficientMemoryError` when ``needed_per_device`` bytes exceed the
    free memory of a device in ``devices``.

    ``what`` names the computation and ``advice`` names the settings to lower. Where the
    need (None) or the free memory is unknown, the check logs that it was skipped and
    returns.
    """
    free = available_bytes(devices)
    if needed_per_device is None or free is None:
        logger.debug("free memory of %s is unknown, so %s is not checked", devices, what)
        return
    if needed_per_device > free:
        raise InsufficientMemoryError(
            f"{what} needs about {_gib(needed_per_device)} per device, but only "
            f"{_gib(free)} is free on each of {len(devices)} {devices[0].platform} "
            f"device(s). {advice}"
        )


def _gib(count: int) -> str:
    return f"{count / 2**30:,.1f} GiB"
