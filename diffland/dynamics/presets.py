"""Vehicle presets built from public figures. Each docstring gives the source and caveats."""

from __future__ import annotations

import math

from diffland.dynamics.base import STANDARD_GRAVITY
from diffland.dynamics.planar import PlanarParams, make_planar_params
from diffland.dynamics.point_mass import (
    PointMassParams,
    PointMassState,
    make_point_mass_params,
    make_point_mass_state,
)
from diffland.dynamics.rigid_body import RigidBodyParams, make_rigid_body_params
from diffland.dynamics.vertical import VerticalParams, make_vertical_params

EARTH_GRAVITY = 9.81
"""Earth surface gravity, m/s^2."""
MOON_GRAVITY = 1.62
"""Moon surface gravity, m/s^2."""
GFOLD_MARS_GRAVITY = 3.71
"""Mars surface gravity as used by Acikmese, Carson and Blackmore (2013), m/s^2 (other
sources give 3.7114)."""


def falcon9_like(*, drag: bool = False, dtype=None) -> VerticalParams:
    """Return a Falcon-9-like first stage during its single-engine landing burn on Earth.

    This is not Falcon 9: SpaceX publishes few figures, so the values are public estimates.

    - Thrust: one Merlin 1D at sea level, about 845 kN (nine give about 7.6 MN), from
      Falcon 9 Block 5 encyclopedia entries.
    - Throttle: 40 % to 100 %. Reported minimum throttle ranges from 40 % to 57-70 %;
      40 % (338 kN) is used here.
    - Isp: 282 s at sea level (vacuum about 311 s), from engine encyclopedia entries.
    - Dry mass with legs: 25.6 t, an often quoted estimate within a 22-26 t range.
    - Drag (only with ``drag=True``): area 10.5 m^2 (3.66 m diameter) and Cd 0.8 base-first,
      an estimate.

    At 40 % throttle the stage could hover only above about 34.5 t. With a few tonnes of
    propellant on a 25.6 t dry stage, minimum thrust outweighs the vehicle, so it cannot
    hover. It must time its burn to reach zero speed at the ground (a "hoverslam").
    """
    return make_vertical_params(
        gravity=EARTH_GRAVITY,
        max_thrust=845.0e3,
        throttle_min=0.40,
        throttle_max=1.0,
        isp=282.0,
        dry_mass=25_600.0,
        drag_coefficient=0.8 if drag else 0.0,
        reference_area=10.5 if drag else 0.0,
        dtype=dtype,
    )


def apollo_lm_like(*, dtype=None) -> VerticalParams:
    """Return an Apollo-Lunar-Module-like lander in its final approach on the Moon.

    - Descent engine: 43,900 N maximum (range of sources 43,900-46,700 N), from the
      US Space & Rocket Center placard and encyclopedia entries.
    - Throttle: a continuous 10 %-60 % band. The flight engine also had a full-thrust
      setting. The band from 60 % to 100 % was avoided in flight because of nozzle
      erosion, so this preset leaves out everything above 60 %.
    - Isp: 311 s, an approximate encyclopedia figure.
    - Dry mass: 7,500 kg, an estimate. A mass of 15.0-16.4 t at the start of powered descent
      less 8.2-8.8 t of usable propellant gives 6.2-8.2 t.

    Unlike the booster, it can hover: 10 t on the Moon needs about 37 % throttle.
    """
    return make_vertical_params(
        gravity=MOON_GRAVITY,
        max_thrust=43_900.0,
        throttle_min=0.10,
        throttle_max=0.60,
        isp=311.0,
        dry_mass=7_500.0,
        dtype=dtype,
    )


FALCON9_LIKE_GEOMETRY = dict(
    gimbal_limit=math.radians(5.0),
    engine_offset=13.0,
    radius_of_gyration=11.0,
    com_height=15.0,
    leg_radius=9.0,
)
"""Geometry of the Falcon-9-like booster, all estimates from public figures.

- Gimbal limit: 5 degrees either way, an estimate.
- Stage height 41.2 m and diameter 3.66-3.7 m (Falcon 9 Block 5 encyclopedia entries).
  With the engines at the bottom the empty stage's centre of mass sits low: 15 m above
  the feet is assumed, and the gimbal point 13 m below the centre of mass.
- Radius of gyration about a transverse axis: 11 m, a little below the 11.9 m of a
  uniform 41.2 m rod, because the engine mass is concentrated at one end.
- Landing legs: a span of about 18 m, so a footprint radius of 9 m.
"""

FALCON9_LIKE_AERO = dict(
    axial_drag_coefficient=0.8,
    normal_drag_coefficient=3.0,
    reference_area=10.5,
    pressure_center_offset=0.0,
)
"""Drag of the Falcon-9-like booster flying base first, estimates.

Axial coefficient 0.8 over the 10.5 m^2 base. The normal coefficient 3.0 is the slope of
the normal force with the angle of attack at small angles for a slender cylinder of 11:1
fineness (slender-body lift plus cross-flow drag of the side area), an estimate. The
centre of pressure is taken at the centre of mass, so drag makes no torque.
"""


def falcon9_like_planar(*, drag: bool = False, dtype=None, **overrides: float) -> PlanarParams:
    """Return the Falcon-9-like booster of :func:`falcon9_like` as a planar vehicle.

    Engine, Isp and dry mass are those of :func:`falcon9_like`; the geometry is
    :data:`FALCON9_LIKE_GEOMETRY` and, with ``drag=True``, the drag is
    :data:`FALCON9_LIKE_AERO`. Keyword overrides replace single fields (SI units).
    """
    values = dict(
        gravity=EARTH_GRAVITY,
        max_thrust=845.0e3,
        throttle_min=0.40,
        throttle_max=1.0,
        isp=282.0,
        dry_mass=25_600.0,
        **FALCON9_LIKE_GEOMETRY,
    )
    if drag:
        values.update(FALCON9_LIKE_AERO)
    values.update(overrides)
    return make_planar_params(dtype=dtype, **values)


FALCON9_LIKE_RADII_OF_GYRATION = (11.0, 11.0, 1.5)
"""Radii of gyration ``(k_x, k_y, k_z)`` of the Falcon-9-like booster, m, estimates.

The transverse radii are the 11 m of :data:`FALCON9_LIKE_GEOMETRY`. The axial radius
1.5 m lies between a thin shell of 3.66 m diameter (k = 1.83 m) and a solid cylinder of
that diameter (k = 1.29 m): the tank walls sit at the skin, but the nine engines and the
remaining propellant fill the cross-section.
"""

FALCON9_LIKE_RCS_TORQUE = 50.0e3
"""Reaction-control torque about each body axis, N m, an order-of-magnitude estimate.

No public figure is known to this project: 50 kN m corresponds to about 2 kN of
cold-gas thrust at 25 m from the centre of mass. The roll lever arm is only the stage
radius, so the real roll authority is likely far lower.
"""


def falcon9_like_rigid_body(*, drag: bool = False, dtype=None, **overrides) -> RigidBodyParams:
    """Return the Falcon-9-like booster of :func:`falcon9_like` as a 6-DOF rigid body.

    Engine, Isp, dry mass and geometry are those of :func:`falcon9_like_planar`, with the
    radii of gyration :data:`FALCON9_LIKE_RADII_OF_GYRATION` and the reaction-control
    torque limit :data:`FALCON9_LIKE_RCS_TORQUE` (used only by a ``RigidBody(rcs=True)``).
    With ``drag=True`` the drag is :data:`FALCON9_LIKE_AERO`. Keyword overrides replace
    single fields (SI units; three numbers for a vector field).
    """
    values = dict(
        gravity=EARTH_GRAVITY,
        max_thrust=845.0e3,
        throttle_min=0.40,
        throttle_max=1.0,
        isp=282.0,
        dry_mass=25_600.0,
        **FALCON9_LIKE_GEOMETRY,
    )
    values["radius_of_gyration"] = FALCON9_LIKE_RADII_OF_GYRATION
    values["rcs_torque_limit"] = FALCON9_LIKE_RCS_TORQUE
    if drag:
        values.update(FALCON9_LIKE_AERO)
    values.update(overrides)
    return make_rigid_body_params(dtype=dtype, **values)


def _paper_to_world(vector: tuple[float, float, float]) -> tuple[float, float, float]:
    """Convert a vector of the 2013 paper's frame (axis 1 up, axes 2 and 3 horizontal) to
    diffland's z-up world frame: world (x, y, z) = paper (x2, x3, x1).

    This cyclic permutation is a proper rotation (determinant +1), so it also converts
    axial vectors such as the planet's angular velocity without a change of sign.
    """
    up, second, third = vector
    return (second, third, up)


GFOLD_START_POSITION = _paper_to_world((2400.0, 450.0, -330.0))
"""Start position of the Mars reference scenario in the world frame, m."""
GFOLD_START_VELOCITY = _paper_to_world((-10.0, -40.0, 10.0))
"""Start velocity of the Mars reference scenario in the world frame, m/s."""
GFOLD_WET_MASS = 2000.0
"""Mass at the start of the Mars reference scenario, kg (300 kg of it propellant)."""


def gfold_mars_lander(*, planet_rotation: bool = True, dtype=None) -> PointMassParams:
    """Return the Mars lander of the convex-guidance reference problem as a point mass.

    Figures of Acikmese, Carson and Blackmore, "Lossless Convexification of Nonconvex
    Control Bound and Pointing Constraints of the Soft Landing Optimal Control Problem",
    IEEE Transactions on Control Systems Technology, 2013, as quoted by public
    reproductions (the paper itself was not read for this preset):

    - Gravity 3.71 m/s^2; planet rotation (2.53e-5, 0, 6.62e-5) rad/s in the paper's
      frame, converted with :func:`_paper_to_world`. ``planet_rotation=False`` sets it
      to zero.
    - Wet mass 2,000 kg with 300 kg of propellant, so a dry mass of 1,700 kg.
    - Maximum thrust 24,000 N with throttle bounds 20 %-80 % (4,800-19,200 N).
    - Fuel-flow constant alpha = 5e-4 s/m, stored as the effective specific impulse
      1 / (alpha g0) = 203.94 s. It probably already includes the cant of the thrusters,
      so no cant is modelled on top of it.
    """
    rotation = _paper_to_world((2.53e-5, 0.0, 6.62e-5)) if planet_rotation else (0.0, 0.0, 0.0)
    return make_point_mass_params(
        gravity=GFOLD_MARS_GRAVITY,
        max_thrust=24_000.0,
        throttle_min=0.2,
        throttle_max=0.8,
        isp=1.0 / (5.0e-4 * STANDARD_GRAVITY),
        dry_mass=1700.0,
        planet_rotation=rotation,
        dtype=dtype,
    )


def gfold_start_state(*, dtype=None) -> PointMassState:
    """Return the start state of the Mars reference scenario (see :func:`gfold_mars_lander`)."""
    return make_point_mass_state(
        GFOLD_START_POSITION, GFOLD_START_VELOCITY, GFOLD_WET_MASS, dtype=dtype
    )
