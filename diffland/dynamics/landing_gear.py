"""Landing-leg geometry: which point touches the ground first, and whether the vehicle tips.

The legs are modelled as a circular footprint of radius ``r`` (the leg span over two) in
a plane at distance ``L`` below the centre of mass along the body axis. For a vehicle
tilted by ``theta`` from the vertical, the lowest point of that circle is at::

    h_feet = z - L * cos(theta) - r * sin(theta)

which is the height whose zero crossing is the touchdown. In code ``sin(theta)`` comes
from the horizontal part of the body axis through a norm. Its gradient at an exactly
upright attitude is taken as zero (a subgradient), so the footprint height has a kink
there, like ``|theta|``.

Tip-over. After touchdown the vehicle pivots about its downhill foot. It falls over when
its kinetic energy exceeds the work needed to lift the centre of mass over that foot::

    barrier = m g (sqrt(r^2 + L^2) - L cos(theta) - r sin(theta))
    energy  = m v_lat^2 / 2 + I omega^2 / 2

with ``I`` the transverse moment of inertia about the centre of mass. Taking all of the
lateral kinetic energy as available to the tip is conservative (a plastic foot impact
loses part of it), and so is assuming that the lateral motion is towards the side the
vehicle leans to. The tip-over measure is ``energy / barrier``; at 1 or more the vehicle
falls over. Past the static tip angle ``atan(r / L)`` the barrier vanishes and the measure
is capped at ``TIP_OVER_CAP``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

TIP_OVER_CAP = 1.0e3
"""Value of the tip-over measure when no energy barrier is left."""


def footprint_height(height, cos_tilt, sin_tilt, com_height, leg_radius) -> jax.Array:
    """Return the height of the lowest point of the leg footprint, m."""
    return height - com_height * cos_tilt - leg_radius * sin_tilt


def tip_over_measure(
    lateral_speed, angular_rate, cos_tilt, sin_tilt, mass, inertia, gravity, com_height, leg_radius
) -> jax.Array:
    """Return kinetic energy over the tip-over barrier (see the module docstring)."""
    pivot_distance = jnp.sqrt(com_height**2 + leg_radius**2)
    barrier = gravity * (pivot_distance - com_height * cos_tilt - leg_radius * sin_tilt)
    energy_per_mass = 0.5 * lateral_speed**2 + 0.5 * inertia * angular_rate**2 / mass
    floor = energy_per_mass / TIP_OVER_CAP
    # Past the static tip angle (L sin > r cos) the centre of mass is already beyond the
    # foot, so no barrier is left, although the expression above grows again there.
    has_barrier = (barrier > floor) & (com_height * sin_tilt < leg_radius * cos_tilt)
    ratio = energy_per_mass / jnp.where(has_barrier, barrier, 1.0)
    return jnp.where(has_barrier, ratio, TIP_OVER_CAP)
