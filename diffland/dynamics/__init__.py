"""Vehicles, integrators, touchdown handling and rollouts."""

from diffland.dynamics import aero, components, landing_gear, rotation
from diffland.dynamics.base import STANDARD_GRAVITY, TouchdownMeasures, Vehicle, safe_norm
from diffland.dynamics.integrators import RK4, Integrator, SemiImplicitEuler
from diffland.dynamics.planar import (
    PlanarBooster,
    PlanarParams,
    PlanarState,
    make_planar_params,
    make_planar_state,
)
from diffland.dynamics.point_mass import (
    PointMassLander,
    PointMassParams,
    PointMassState,
    make_point_mass_params,
    make_point_mass_state,
)
from diffland.dynamics.presets import (
    apollo_lm_like,
    falcon9_like,
    falcon9_like_planar,
    falcon9_like_rigid_body,
    gfold_mars_lander,
    gfold_start_state,
)
from diffland.dynamics.rigid_body import (
    RigidBody,
    RigidBodyParams,
    RigidBodyState,
    make_rigid_body_params,
    make_rigid_body_state,
)
from diffland.dynamics.simulate import (
    SimConfig,
    SimState,
    Trajectory,
    control_step,
    final_state,
    final_state_batch,
    initial_sim_state,
    open_loop_policy,
    physics_step,
    rollout,
)
from diffland.dynamics.vertical import (
    VerticalLander,
    VerticalParams,
    VerticalState,
    make_vertical_params,
    make_vertical_state,
)

__all__ = [
    "RK4",
    "STANDARD_GRAVITY",
    "Integrator",
    "PlanarBooster",
    "PlanarParams",
    "PlanarState",
    "PointMassLander",
    "PointMassParams",
    "PointMassState",
    "RigidBody",
    "RigidBodyParams",
    "RigidBodyState",
    "SemiImplicitEuler",
    "SimConfig",
    "SimState",
    "TouchdownMeasures",
    "Trajectory",
    "Vehicle",
    "VerticalLander",
    "VerticalParams",
    "VerticalState",
    "aero",
    "components",
    "apollo_lm_like",
    "control_step",
    "falcon9_like",
    "falcon9_like_planar",
    "falcon9_like_rigid_body",
    "gfold_mars_lander",
    "gfold_start_state",
    "initial_sim_state",
    "landing_gear",
    "make_planar_params",
    "make_planar_state",
    "make_point_mass_params",
    "make_point_mass_state",
    "make_rigid_body_params",
    "make_rigid_body_state",
    "make_vertical_params",
    "make_vertical_state",
    "open_loop_policy",
    "physics_step",
    "final_state",
    "final_state_batch",
    "rollout",
    "rotation",
    "safe_norm",
]
