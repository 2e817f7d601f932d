"""Landing environments with the default vehicles and scenarios of the experiments.

Each class builds a :class:`~diffland.envs.landing.LandingEnv` from keyword arguments
only, so ``brax.envs.get_environment(name, **kwargs)`` can override any setting. These
are the pool (``pool_size``, ``seed``, or ``start_states`` to skip the draw), the
simulation (``control_dt``, ``substeps``, ``episode_length``, ``integrator``), the
vehicle (``params``, ``drag``, ``scenario``) and the other options of ``LandingEnv``
(``cost``, ``shaping``, ``success_bonus``, ``crash_penalty``, ``max_tilt_deg``,
``ceiling_factor``, ``dtype``).

Defaults: a control step of 0.1 s with 2 RK4 sub-steps and 300 control steps (30 s) per
episode, and a pool of 4096 start states drawn with seed 0.
"""

from __future__ import annotations

import functools
from typing import Any

import jax.numpy as jnp

from diffland.dynamics.integrators import Integrator
from diffland.dynamics.planar import PlanarBooster
from diffland.dynamics.point_mass import PointMassLander
from diffland.dynamics.presets import (
    falcon9_like,
    falcon9_like_planar,
    falcon9_like_rigid_body,
    gfold_mars_lander,
)
from diffland.dynamics.rigid_body import RigidBody
from diffland.dynamics.simulate import SimConfig
from diffland.dynamics.vertical import VerticalLander
from diffland.envs.landing import LandingEnv
from diffland.scenarios import (
    PLANAR_SCENARIO,
    RIGID_BODY_SCENARIO,
    BoosterLandingScenario,
    LandingBurnScenario,
    PointMassScenario,
    sample_booster_states,
    sample_landing_burn_states,
    sample_point_mass_states,
)

MAX_CHUNK = 8192
"""Largest number of candidate start states drawn and filtered at once."""


def candidate_chunk(pool_size: int) -> int:
    """Return the number of candidates per draw for a pool of ``pool_size`` states.

    In draws of 256 to 8192 candidates (seed 0, ``falcon9_like`` in float32) 41-43 % of
    the default landing-burn candidates passed the feasibility filter, so four
    candidates per kept state usually need one draw. The count is a power of two from
    256 to :data:`MAX_CHUNK`, because every distinct count compiles the filter again.
    """
    chunk = 256
    while chunk < 4 * pool_size and chunk < MAX_CHUNK:
        chunk *= 2
    return chunk


def _sim_config(control_dt, substeps, episode_length, integrator) -> SimConfig:
    settings: dict[str, Any] = dict(
        control_dt=control_dt, substeps=substeps, horizon=episode_length
    )
    if integrator is not None:
        settings["integrator"] = integrator
    return SimConfig(**settings)


def _sample_vertical(key, count, *, vehicle, params, scenario):
    states, _ = sample_landing_burn_states(
        key, count, vehicle, params, scenario, chunk=candidate_chunk(count)
    )
    return states


def _sample_booster(key, count, *, vehicle, params, scenario):
    return sample_booster_states(
        key, count, vehicle, params, scenario, chunk=candidate_chunk(count)
    )


class VerticalLandingEnv(LandingEnv):
    """The Falcon-9-like stage of :func:`~diffland.dynamics.presets.falcon9_like` in
    vertical flight, from the start states of :class:`LandingBurnScenario`.

    Observation: the 6 features of :meth:`VerticalLander.observation`. Action: the
    throttle, -1 for minimum and +1 for full throttle.
    """

    def __init__(
        self,
        *,
        params=None,
        drag: bool = False,
        scenario: LandingBurnScenario | None = None,
        start_states=None,
        control_dt: float = 0.1,
        substeps: int = 2,
        episode_length: int = 300,
        integrator: Integrator | None = None,
        dtype=jnp.float32,
        **options,
    ):
        vehicle = VerticalLander(drag=drag)
        params = falcon9_like(drag=drag, dtype=dtype) if params is None else params
        if start_states is None:
            start_states = functools.partial(
                _sample_vertical,
                vehicle=vehicle,
                params=params,
                scenario=scenario if scenario is not None else LandingBurnScenario(),
            )
        super().__init__(
            vehicle,
            params,
            start_states,
            config=_sim_config(control_dt, substeps, episode_length, integrator),
            dtype=dtype,
            **options,
        )


class _BoosterLandingEnv(LandingEnv):
    """A booster from its preset with drag, from the start states of a default scenario.

    Subclasses set the vehicle class, the preset and the default scenario.
    """

    vehicle_class: type
    preset: Any
    default_scenario: BoosterLandingScenario

    def __init__(
        self,
        *,
        params=None,
        drag: bool = True,
        scenario: BoosterLandingScenario | None = None,
        start_states=None,
        control_dt: float = 0.1,
        substeps: int = 2,
        episode_length: int = 300,
        integrator: Integrator | None = None,
        dtype=jnp.float32,
        **options,
    ):
        vehicle = self.vehicle_class(drag=drag)
        if params is None:
            params = self.preset(drag=drag, dtype=dtype)
        if start_states is None:
            start_states = functools.partial(
                _sample_booster,
                vehicle=vehicle,
                params=params,
                scenario=scenario if scenario is not None else self.default_scenario,
            )
        super().__init__(
            vehicle,
            params,
            start_states,
            config=_sim_config(control_dt, substeps, episode_length, integrator),
            dtype=dtype,
            **options,
        )


class PlanarLandingEnv(_BoosterLandingEnv):
    """The Falcon-9-like booster of :func:`~diffland.dynamics.presets.falcon9_like_planar`
    with drag, in the x-z plane, from the start states of ``PLANAR_SCENARIO`` (offset,
    sideways speed, tilt and wind).

    Observation: the 12 features of :meth:`PlanarBooster.observation`. Action:
    ``(throttle, gimbal)``, each from -1 (minimum throttle, full negative gimbal) to +1.
    """

    vehicle_class = PlanarBooster
    preset = staticmethod(falcon9_like_planar)
    default_scenario = PLANAR_SCENARIO


class RigidBodyLandingEnv(_BoosterLandingEnv):
    """The Falcon-9-like booster of
    :func:`~diffland.dynamics.presets.falcon9_like_rigid_body` with drag, in six degrees
    of freedom, from the start states of ``RIGID_BODY_SCENARIO``.

    Observation: the 18 features of :meth:`RigidBody.observation`. Action:
    ``(throttle, gimbal x, gimbal y)``, each from -1 to +1 (no reaction control).
    """

    vehicle_class = RigidBody
    preset = staticmethod(falcon9_like_rigid_body)
    default_scenario = RIGID_BODY_SCENARIO


def _sample_point_mass(key, count, *, scenario, dtype):
    return sample_point_mass_states(key, count, scenario, dtype)


class PointMassLandingEnv(LandingEnv):
    """The Mars lander of :func:`~diffland.dynamics.presets.gfold_mars_lander` as a point
    mass with planet rotation, from the start states of :class:`PointMassScenario`.

    Observation: the 15 features of :meth:`PointMassLander.observation`. Action: the
    thrust vector as a fraction of ``max_thrust`` along x, y and z, each in [-1, 1]; the
    vehicle scales its magnitude into the throttle bounds. The defaults differ from the
    boosters': a control step of 0.5 s and 240 steps (120 s). The fuel-optimal descents of
    the 200 held-out starts checked took 42-49 s, the hand-tuned ``PointMassPID`` about
    65 s.
    """

    def __init__(
        self,
        *,
        params=None,
        planet_rotation: bool = True,
        scenario: PointMassScenario | None = None,
        start_states=None,
        control_dt: float = 0.5,
        substeps: int = 2,
        episode_length: int = 240,
        integrator: Integrator | None = None,
        dtype=jnp.float32,
        **options,
    ):
        vehicle = PointMassLander(planet_rotation=planet_rotation)
        if params is None:
            params = gfold_mars_lander(planet_rotation=planet_rotation, dtype=dtype)
        if start_states is None:
            start_states = functools.partial(
                _sample_point_mass,
                scenario=scenario if scenario is not None else PointMassScenario(),
                dtype=dtype,
            )
        super().__init__(
            vehicle,
            params,
            start_states,
            config=_sim_config(control_dt, substeps, episode_length, integrator),
            dtype=dtype,
            **options,
        )
