"""Fuel-optimal powered-descent guidance by lossless convexification (optional extra).

Needs the ``guidance`` extra, which installs cvxpy and the Clarabel conic solver::

    pip install "diffland[guidance]"

See :mod:`diffland.guidance.powered_descent` for the problem and the time-of-flight search.
"""

try:
    import clarabel  # noqa: F401
    import cvxpy  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"diffland.guidance needs cvxpy and clarabel, which are not installed ({error}). "
        "Install the optional extra with: pip install 'diffland[guidance]'"
    ) from error

from diffland.guidance.powered_descent import (
    GuidanceConstraints,
    GuidanceSolution,
    InfeasibleGuidanceError,
    PoweredDescentGuidance,
    dense_states,
    open_loop_actions,
)

__all__ = [
    "GuidanceConstraints",
    "GuidanceSolution",
    "InfeasibleGuidanceError",
    "PoweredDescentGuidance",
    "dense_states",
    "open_loop_actions",
]
