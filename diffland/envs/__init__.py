"""Brax environments for diffland's vehicles, registered with brax under the names in
:data:`ENVIRONMENTS` when :mod:`diffland` is imported.

Importing this package also makes brax's own trainers (PPO, APG) work with the
installed JAX; see :mod:`diffland.envs.compat`.

Registration stores only the classes, so it is cheap and can run any number of times.
The pool of start states is drawn when an environment is built, for example by
``brax.envs.get_environment("diffland_planar", pool_size=256)``.
"""

import contextlib
import io

# brax.envs imports mujoco, whose optional GPU backend prints "Failed to import warp" to
# stdout when the warp package is missing. That backend is not used here, so the line is
# dropped.
with contextlib.redirect_stdout(io.StringIO()):
    from brax import envs as brax_envs

from diffland.envs import compat
from diffland.envs.landing import METRIC_NAMES, LandingEnv, ShapingScales, touchdown_cost
from diffland.envs.vehicles import (
    PlanarLandingEnv,
    PointMassLandingEnv,
    RigidBodyLandingEnv,
    VerticalLandingEnv,
)

ENVIRONMENTS = {
    "diffland_vertical": VerticalLandingEnv,
    "diffland_planar": PlanarLandingEnv,
    "diffland_rigid_body": RigidBodyLandingEnv,
    "diffland_point_mass": PointMassLandingEnv,
}
"""Brax environment names and their classes."""


def register_environments() -> None:
    """Register every class of :data:`ENVIRONMENTS` with ``brax.envs``; idempotent."""
    for name, environment in ENVIRONMENTS.items():
        brax_envs.register_environment(name, environment)


register_environments()
compat.install()

__all__ = [
    "ENVIRONMENTS",
    "METRIC_NAMES",
    "LandingEnv",
    "PlanarLandingEnv",
    "PointMassLandingEnv",
    "RigidBodyLandingEnv",
    "ShapingScales",
    "VerticalLandingEnv",
    "register_environments",
    "touchdown_cost",
]
