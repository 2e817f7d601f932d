"""diffland: differentiable rocket landing physics in JAX.

Subpackages: :mod:`diffland.dynamics` (vehicles, integrators, touchdown, rollouts),
:mod:`diffland.controllers` (flax PID, NeuroPID and MLP), :mod:`diffland.training`
(landing cost, APG trainer, checkpoints, metrics), :mod:`diffland.optimal` (the 1-D
fuel-optimal burn), :mod:`diffland.scenarios` (feasible start states) and
:mod:`diffland.viz` (plots). Importing diffland registers the brax environments of
:mod:`diffland.envs` (``diffland_vertical``, ``diffland_planar``, ``diffland_rigid_body``,
``diffland_point_mass``). :mod:`diffland.guidance` (convex powered-descent guidance) needs
the optional ``guidance`` extra and is not imported here.
"""

from diffland import envs  # noqa: F401  (registers the brax environments)

__version__ = "0.1.0"
