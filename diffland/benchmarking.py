"""Timing, compiler figures and hardware description for benchmarks.

Every timed call here ends with ``block_until_ready``, so a time covers the computation,
not only its dispatch, and compilation is done (and timed) apart from the timed calls.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

logger = logging.getLogger(__name__)

MIN_REPEATS = 5
"""Fewest timed calls whose median is reported."""

LIBRARIES = ("jax", "jaxlib", "flax", "optax", "brax", "gymnax", "numpy")
"""Packages whose versions a benchmark records."""

FP32_LANES = {"avx512f": 16, "avx2": 8, "avx": 8, "sse2": 4}
"""float32 values in one vector register for each instruction-set flag of /proc/cpuinfo,
widest first."""


def compile_timed(function: Callable, *args: Any) -> tuple[Any, float]:
    """Compile ``jax.jit(function)`` for ``args`` ahead of time; return it and the seconds."""
    start = time.perf_counter()
    compiled = jax.jit(function).lower(*args).compile()
    return compiled, time.perf_counter() - start


def time_call(
    function: Callable,
    *args: Any,
    repeats: int = MIN_REPEATS,
    warmup: int = 1,
    block: Callable[[Any], Any] = jax.block_until_ready,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Call ``function(*args)`` ``warmup`` times untimed, then ``repeats`` times timed.

    Each call's result passes through ``block`` (``jax.block_until_ready``) before the
    clock stops. Returns the median, the minimum and every timed duration, in seconds.
    Raises ``ValueError`` for fewer than :data:`MIN_REPEATS` repeats.
    """
    if repeats < MIN_REPEATS:
        raise ValueError(f"repeats = {repeats} is too few: a median needs at least {MIN_REPEATS}.")
    for _ in range(warmup):
        block(function(*args))
    durations = []
    for _ in range(repeats):
        start = clock()
        block(function(*args))
        durations.append(clock() - start)
    return {
        "median_seconds": statistics.median(durations),
        "min_seconds": min(durations),
        "seconds": durations,
    }


def memory_figures(compiled: Any) -> dict[str, int | None]:
    """Return the sizes from XLA's ``memory_analysis()`` of a compiled function, bytes.

    ``temp_size_in_bytes`` is the scratch memory of the computation. For a gradient it
    includes the intermediates of the forward pass kept for the backward pass. The
    argument and output sizes are those of the inputs and results. Every value is None
    where the backend reports no analysis.
    """
    try:
        analysis = compiled.memory_analysis()
    except (NotImplementedError, RuntimeError):
        analysis = None
    names = (
        "temp_size_in_bytes",
        "argument_size_in_bytes",
        "output_size_in_bytes",
        "alias_size_in_bytes",
        "generated_code_size_in_bytes",
    )
    return {name: getattr(analysis, name, None) if analysis else None for name in names}


def compiled_cost(compiled: Any) -> dict[str, float | None]:
    """Return ``flops`` and ``bytes_accessed`` from XLA's ``cost_analysis()``, each None
    when XLA gives no analysis.

    XLA counts a loop body once, whatever its trip count, so compile the step alone to
    count one step. ``bytes_accessed`` adds up the operand and result bytes of every
    instruction of the optimised program (each fusion once), so it measures the traffic
    between fused loops, not what the cache hierarchy serves.
    """
    try:
        analysis = compiled.cost_analysis()
    except (NotImplementedError, RuntimeError):
        return {"flops": None, "bytes_accessed": None}
    if isinstance(analysis, Sequence) and not isinstance(analysis, Mapping):
        # Older JAX versions return one dictionary per computation.
        analysis = analysis[0] if analysis else None
    if analysis is None:
        return {"flops": None, "bytes_accessed": None}
    # XLA leaves a key out of a computation without arithmetic (a constant action).
    return {
        "flops": float(analysis.get("flops", 0.0)),
        "bytes_accessed": float(analysis.get("bytes accessed", 0.0)),
    }


def compiled_flops(compiled: Any) -> float | None:
    """Return the floating-point operations XLA's ``cost_analysis()`` counts, or None
    (see :func:`compiled_cost`)."""
    return compiled_cost(compiled)["flops"]


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """Read the CPU model, logical CPU count, clock and instruction-set flags from the text
    of ``/proc/cpuinfo`` (Linux on x86)."""
    processors = len(re.findall(r"^processor\s*:", text, flags=re.MULTILINE))
    model = re.search(r"^model name\s*:\s*(.+)$", text, flags=re.MULTILINE)
    megahertz = re.search(r"^cpu MHz\s*:\s*([0-9.]+)", text, flags=re.MULTILINE)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, flags=re.MULTILINE)
    model_name = model.group(1).strip() if model else None
    nominal = re.search(r"@\s*([0-9.]+)\s*GHz", model_name or "")
    return {
        "model_name": model_name,
        "logical_cpus": processors,
        "model_name_ghz": float(nominal.group(1)) if nominal else None,
        "cpu_mhz": float(megahertz.group(1)) if megahertz else None,
        "flags": sorted(flags.group(1).split()) if flags else [],
    }


def cpu_peak_flops(
    info: Mapping[str, Any], cores: int | None = None, fma_units: int = 2
) -> dict[str, Any]:
    """Estimate the float32 peak of a CPU from :func:`parse_cpuinfo` output.

    Peak = cores x clock x float32 lanes x 2 (a fused multiply-add counts as two
    operations) x FMA units per core. ``cores`` defaults to the logical CPU count. The
    clock is the nominal one of the model name where it has one, else ``cpu MHz``. Every
    assumption is returned in ``assumptions``, because /proc/cpuinfo does not show
    turbo or AVX-512 down-clocking, the FMA unit count, or whether logical CPUs are
    hyper-threads of one core.
    """
    flags = set(info.get("flags", ()))
    lanes, vector = 1, "scalar"
    for flag, width in FP32_LANES.items():
        if flag in flags:
            lanes, vector = width, flag
            break
    has_fma = "fma" in flags or vector == "avx512f"
    cores = cores if cores is not None else int(info.get("logical_cpus") or 0)
    if info.get("model_name_ghz"):
        ghz, clock_source = float(info["model_name_ghz"]), "model name"
    elif info.get("cpu_mhz"):
        ghz, clock_source = float(info["cpu_mhz"]) / 1000.0, "cpu MHz"
    else:
        ghz, clock_source = math.nan, "unknown"
    per_cycle = lanes * (2 if has_fma else 1) * fma_units
    peak = cores * ghz * 1e9 * per_cycle
    assumptions = [
        f"{cores} cores, each a full core (a logical CPU that is a hyper-thread shares "
        "its core's vector units, so the peak would be lower)",
        f"clock {ghz:.3g} GHz from the {clock_source}, without turbo or AVX down-clocking",
        f"{lanes} float32 lanes per vector ({vector})",
        f"{fma_units} {'FMA' if has_fma else 'vector arithmetic'} unit(s) per core, each "
        f"{'a fused multiply-add (2 operations)' if has_fma else 'one operation'} per "
        "lane per cycle",
    ]
    return {
        "cores": cores,
        "ghz": ghz,
        "clock_source": clock_source,
        "vector_extension": vector,
        "fp32_lanes": lanes,
        "fma": has_fma,
        "fma_units_per_core": fma_units,
        "flops_per_cycle_per_core": per_cycle,
        "peak_flops": peak,
        "assumptions": assumptions,
    }


def read_cpuinfo(path: str = "/proc/cpuinfo") -> str:
    """Return the text of ``path``, or an empty string where it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read()
    except OSError as error:
        logger.warning("cannot read %s (%s); the CPU description stays empty", path, error)
        return ""


def library_versions(names: Sequence[str] = LIBRARIES) -> dict[str, str | None]:
    """Return the installed version of each package, None for one that is missing."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def describe_hardware(cpuinfo: str | None = None) -> dict[str, Any]:
    """Return the CPU model, CPU counts and the JAX devices of this process."""
    info = parse_cpuinfo(read_cpuinfo() if cpuinfo is None else cpuinfo)
    devices = jax.devices()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": info["model_name"] or platform.processor() or None,
        "logical_cpus": info["logical_cpus"] or os.cpu_count(),
        "usable_cpus": usable,
        "cpu_mhz": info["cpu_mhz"],
        "machine": platform.machine(),
        "python": platform.python_version(),
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(device) for device in devices],
        "jax_device_kinds": sorted({device.device_kind for device in devices}),
        "device_count": len(devices),
    }


def time_to_threshold_record(
    seconds: float,
    env_steps: int,
    success_rate: float | None,
    threshold: float,
    cap_seconds: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Return one method's entry of ``time_to_threshold`` in a results file.

    ``seconds`` and ``env_steps`` are the wall time and environment steps spent up to
    the threshold, or up to the stop when it was not reached. ``success_rate`` is the
    held-out success at that point (the best one seen, when not reached).
    """
    reached = success_rate is not None and success_rate >= threshold
    record = {
        "seconds": float(seconds),
        "env_steps": int(env_steps),
        "success_rate": None if success_rate is None else float(success_rate),
        "reached": bool(reached),
        "threshold": float(threshold),
    }
    if cap_seconds is not None:
        record["cap_seconds"] = float(cap_seconds)
    record.update(extra)
    return record


def compare_time_to_threshold(apg: Mapping[str, Any], ppo: Mapping[str, Any]) -> dict[str, Any]:
    """Return PPO's wall time over APG's, as a number or a lower bound.

    Where PPO did not reach the threshold its time is at least the time it ran, so the
    ratio is a lower bound (``"more than"``). Where APG did not reach it either, there
    is no ratio.
    """
    if not apg["reached"] or apg["seconds"] <= 0:
        return {"ratio": None, "bound": None, "text": "APG did not reach the threshold"}
    ratio = ppo["seconds"] / apg["seconds"]
    if ppo["reached"]:
        return {"ratio": ratio, "bound": "equal", "text": f"{ratio:.3g}x"}
    return {"ratio": ratio, "bound": "more than", "text": f"more than {ratio:.3g}x"}
