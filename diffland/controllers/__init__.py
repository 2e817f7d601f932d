"""Flax controllers: ``controller.apply(variables, state, params, carry) -> (action, carry)``.

Every controller also has ``initial_carry(dtype)``, the memory it starts a rollout with.
"""

from diffland.controllers.bounds import bounded_action
from diffland.controllers.cascaded import (
    CASCADED_GAINS,
    CascadedGains,
    CascadedPID,
    NeuroCascadedPID,
)
from diffland.controllers.mlp import MLP, MLPPolicy
from diffland.controllers.neuro_pid import NeuroPID
from diffland.controllers.pid import HAND_TUNED_GAINS, PIDCarry, PIDGains, VerticalPID
from diffland.controllers.point_mass_pid import (
    POINT_MASS_GAINS,
    NeuroPointMassPID,
    PointMassGains,
    PointMassPID,
)

__all__ = [
    "CASCADED_GAINS",
    "HAND_TUNED_GAINS",
    "CascadedGains",
    "CascadedPID",
    "NeuroCascadedPID",
    "MLP",
    "MLPPolicy",
    "NeuroPID",
    "NeuroPointMassPID",
    "POINT_MASS_GAINS",
    "PIDCarry",
    "PIDGains",
    "PointMassGains",
    "PointMassPID",
    "VerticalPID",
    "bounded_action",
]
