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

try:
    import resource
except ImportError:  # the module exists on Unix only
    resource = None

logger = logging.getLogger(__name__)

MEMINFO = pathlib.Path("/proc/meminfo")
"""Linux's memory report. Its ``MemAvailable`` line is the kernel's estimate of the memory
that new allocations can take without swapping."""

PROCESS_STATUS = pathlib.Path("/proc/self/status")
"""Linux's report on this process. Its ``VmSize`` line is the address space in use."""

CGROUP_ROOT = pathlib.Path("/sys/fs/cgroup")
"""Mount point of the control groups, which containers and batch schedulers use to
limit a job's memory."""

CGROUP_MEMBERSHIP = pathlib.Path("/proc/self/cgroup")
"""Linux's list of the control groups this process belongs to, one line per hierarchy."""

UNLIMITED = 2**60
"""Control-group limits at or above this many bytes mean no limit (cgroup v1 writes
9223372036854771712 for none)."""


class InsufficientMemoryError(MemoryError):
    """A computation needs more memory than its devices have free."""


def host_available_bytes() -> int | None:
    """Return the host memory this process can still allocate, bytes, or None where the
    system reports none of the limits below.

    That is the smallest of the host's available memory, the room left under the
    process's address-space limit (``ulimit -v``) and the room left under its control
    group's memory limit (cgroup v2 or v1, as a container or a batch scheduler sets).
    """
    known = [
        value
        for value in (
            meminfo_available_bytes(),
            address_space_left_bytes(),
            cgroup_available_bytes(),
        )
        if value is not None
    ]
    return min(known) if known else None


def meminfo_available_bytes(meminfo: pathlib.Path = MEMINFO) -> int | None:
    """Return ``MemAvailable`` of ``meminfo``, bytes, or None where it is missing (the
    file exists on Linux only)."""
    return _kib_field(meminfo, "MemAvailable")


def address_space_left_bytes(status: pathlib.Path = PROCESS_STATUS) -> int | None:
    """Return the address space left under ``RLIMIT_AS`` (``ulimit -v``), bytes, or None
    without such a limit or where the process's size is not reported."""
    if resource is None:
        return None
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    if limit == resource.RLIM_INFINITY:
        return None
    used = _kib_field(status, "VmSize")
    return None if used is None else max(limit - used, 0)


def cgroup_available_bytes(
    root: pathlib.Path = CGROUP_ROOT, membership: pathlib.Path = CGROUP_MEMBERSHIP
) -> int | None:
    """Return the memory left under the tightest control-group limit of this process,
    bytes, or None without a limit.

    The groups checked are the process's own, as ``membership`` (``/proc/self/cgroup``)
    names it, and every group above it up to ``root``, for cgroup v2 and for the v1
    memory controller. A group's usage counts the page cache, which the kernel frees
    under pressure, so its inactive file pages are subtracted from it.
    """
    rooms = []
    for folder, names in _cgroup_folders(root, membership):
        room = _cgroup_room(folder, *names)
        if room is not None:
            rooms.append(room)
    return min(rooms) if rooms else None


_CGROUP_V2_FILES = ("memory.max", "memory.current", "inactive_file")
_CGROUP_V1_FILES = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")


def _cgroup_folders(root: pathlib.Path, membership: pathlib.Path):
    """Yield each group folder to check, with the file names of its cgroup version."""
    paths = {"v2": "/", "v1": "/"}
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        # Lines read "hierarchy-id:controllers:path". The cgroup v2 line has id 0 and no
        # controllers.
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and not controllers:
            paths["v2"] = path
        elif "memory" in controllers.split(","):
            paths["v1"] = path
    for version, base, names in (
        ("v2", root, _CGROUP_V2_FILES),
        ("v1", root / "memory", _CGROUP_V1_FILES),
    ):
        folder = base / paths[version].strip("/")
        while True:
            yield folder, names
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent


def _cgroup_room(
    folder: pathlib.Path, limit_name: str, usage_name: str, inactive_name: str
) -> int | None:
    """Return the memory left under the limit of the group in ``folder``, or None when
    it has no limit or its files are missing."""
    limit = _read_integer(folder / limit_name)
    usage = _read_integer(folder / usage_name)
    if limit is None or usage is None or limit >= UNLIMITED:
        return None
    inactive = _stat_field(folder / "memory.stat", inactive_name) or 0
    return max(limit - max(usage - inactive, 0), 0)


def _read_integer(path: pathlib.Path) -> int | None:
    """Return the integer in ``path``, or None when it is missing or not an integer
    (cgroup v2 writes ``max`` for no limit)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _kib_field(path: pathlib.Path, name: str) -> int | None:
    """Return field ``name`` of a /proc file written as ``Name:  123456 kB``, in bytes."""
    value = _field(path, name, ":")
    return None if value is None else int(value.split()[0]) * 1024


def _stat_field(path: pathlib.Path, name: str) -> int | None:
    """Return field ``name`` of a cgroup ``memory.stat`` file, written as ``name 123``."""
    value = _field(path, name, " ")
    return None if value is None else int(value)


def _field(path: pathlib.Path, name: str, separator: str) -> str | None:
    """Return the text after ``separator`` on the first line of ``path`` that starts with
    ``name`` and ``separator``, or None when the file or the line is missing."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition(separator)
        if key == name:
            return value
    return None


def available_bytes(devices: Sequence[Any]) -> int | None:
    """Return the free memory of ``devices`` per device, bytes, or None when unknown.

    A GPU or TPU reports its own limit and use through ``memory_stats()``, and the
    smallest free amount among ``devices`` is returned. CPU devices share the host's
    memory, so each gets :func:`host_available_bytes` divided by their count.
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
