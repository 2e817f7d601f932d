"""Vehicle presets built from public figures. Each docstring gives the source and caveats."""

from __future__ import annotations

from diffland.dynamics.vertical import VerticalParams, make_vertical_params

EARTH_GRAVITY = 9.81
"""Earth surface gravity, m/s^2."""
MOON_GRAVITY = 1.62
"""Moon surface gravity, m/s^2."""


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
