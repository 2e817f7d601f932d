"""Vehicles, integrators, touchdown handling and rollouts."""

from diffland.dynamics.base import STANDARD_GRAVITY, Vehicle
from diffland.dynamics.integrators import RK4, Integrator, SemiImplicitEuler
from diffland.dynamics.presets import apollo_lm_like, falcon9_like
from diffland.dynamics.simulate import (
    SimConfig,
    SimState,
    Trajectory,
    control_step,
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
    "SemiImplicitEuler",
    "SimConfig",
    "SimState",
    "Trajectory",
    "Vehicle",
    "VerticalLander",
    "VerticalParams",
    "VerticalState",
    "apollo_lm_like",
    "control_step",
    "falcon9_like",
    "initial_sim_state",
    "make_vertical_params",
    "make_vertical_state",
    "open_loop_policy",
    "physics_step",
    "rollout",
]
