"""diffland: differentiable rocket landing physics in JAX.

Subpackages: :mod:`diffland.dynamics` (vehicles, integrators, touchdown, rollouts),
:mod:`diffland.controllers` (flax PID, NeuroPID and MLP), :mod:`diffland.training`
(landing cost, APG trainer, checkpoints, metrics), :mod:`diffland.optimal` (the 1-D
fuel-optimal burn), :mod:`diffland.scenarios` (feasible start states) and
:mod:`diffland.viz` (plots). Importing diffland registers the brax environments of
:mod:`diffland.envs` (``diffland_vertical``, ``diffland_planar``, ``diffland_rigid_body``,
``diffland_point_mass``) when brax is installed. Without brax (a machine with only JAX and
flax, for example) the rest of the package still imports, and importing
:mod:`diffland.envs` raises ``ModuleNotFoundError``. :mod:`diffland.guidance` (convex
powered-descent guidance) needs the optional ``guidance`` extra and is not imported here.
"""

import logging

try:
    from diffland import envs  # noqa: F401  (registers the brax environments)
except ModuleNotFoundError as error:
    if (error.name or "").split(".")[0] not in ("brax", "mujoco"):
        raise
    logging.getLogger(__name__).info(
        "brax environments not registered: %s. Install brax to use diffland.envs.", error
    )

__version__ = "0.1.0"
