"""Settings and fixtures shared by the diffland tests.

Runtime checks (checkify) are switched on for every trainer the tests build whose
``TrainConfig.checks`` is left unset, unless the caller already set DIFFLAND_CHECKS.
Physics and gradient tests run in float64 through the ``x64`` fixture, which enables x64
only for the duration of one test, so the process-wide default dtype stays float32.
"""

import os

os.environ.setdefault("DIFFLAND_CHECKS", "1")

import chex  # noqa: E402
import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def x64():
    """Enable 64-bit floats in JAX for one test."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(autouse=True)
def fresh_trace_counter():
    """Reset the counters of ``chex.assert_max_traces`` so each test counts its own traces."""
    chex.clear_trace_counter()
    yield
