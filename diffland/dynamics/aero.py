"""Atmosphere, wind and aerodynamic forces shared by the planar and 6-DOF vehicles.

Atmosphere. Exponential density ``rho(z) = rho0 * exp(-z / H)`` with the height ``z`` of
the centre of mass above the ground.

Wind. Horizontal only, a steady part plus a gust field frozen in space (Taylor's
hypothesis: the vehicle descends through the gusts faster than they change)::

    w(z) = w_steady + sum_k a_k * sin(kappa_k * z + phi_k)

The amplitudes, wavenumbers and phases are drawn at random per lander by
:func:`sample_wind`, so the gusts are a randomisable process. A given draw is a smooth,
deterministic function of height, so rollouts stay differentiable and an independent ODE
solver can reproduce them. The wind travels with the vehicle state (its time
derivative is zero), so every lander of a batch meets its own wind.

Drag. The air-relative velocity ``u = v - w`` splits into the component along the body
axis ``u_a = (u . b) b`` and the normal part ``u_n = u - u_a``. Each gets a quadratic
drag law with its own coefficient over the same reference area::

    F = -0.5 * rho * A * |u| * (C_A * u_a + C_N * u_n)

At zero relative speed the force and its derivative are zero (no NaN).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

from diffland.dynamics import components


@struct.dataclass
class Wind:
    """Wind met by one lander; ``n`` is the number of horizontal axes (1 planar, 2 in 3-D)."""

    steady: jax.Array
    """Steady horizontal wind velocity, m/s, shape ``(n,)``."""
    gust_amplitude: jax.Array
    """Amplitude of each gust mode along each axis, m/s, shape ``(modes, n)``."""
    gust_wavenumber: jax.Array
    """Spatial frequency of each mode along the height, rad/m, shape ``(modes,)``."""
    gust_phase: jax.Array
    """Phase of each mode along each axis, rad, shape ``(modes, n)``."""


def calm(axes: int, modes: int = 1, dtype=None) -> Wind:
    """Return a wind with no steady part and zero-amplitude gusts."""
    return Wind(
        steady=jnp.zeros((axes,), dtype),
        gust_amplitude=jnp.zeros((modes, axes), dtype),
        gust_wavenumber=jnp.ones((modes,), dtype),
        gust_phase=jnp.zeros((modes, axes), dtype),
    )


def steady_wind(velocity, modes: int = 1, dtype=None) -> Wind:
    """Return a steady wind of horizontal velocity ``velocity`` (m/s, shape ``(n,)``)."""
    velocity = jnp.asarray(velocity, dtype)
    wind = calm(velocity.shape[0], modes, velocity.dtype)
    return wind.replace(steady=velocity)


def sample_wind(
    key: jax.Array,
    axes: int,
    steady_speed: float,
    gust_rms: float,
    modes: int = 4,
    wavelength_range: tuple[float, float] = (50.0, 500.0),
    dtype=None,
) -> Wind:
    """Draw one wind: a steady part of speed up to ``steady_speed`` in a random direction,
    plus gusts of root-mean-square ``gust_rms`` per axis.

    Each of the ``modes`` gust modes has amplitude ``gust_rms * sqrt(2 / modes)``, a
    wavelength drawn log-uniformly from ``wavelength_range`` (m) and a uniform random
    phase, so the mean square over height is ``gust_rms^2`` on each axis. Use
    ``jax.vmap`` over keys for a batch.
    """
    if steady_speed < 0 or gust_rms < 0:
        raise ValueError(
            f"steady_speed = {steady_speed} and gust_rms = {gust_rms} must be zero or positive."
        )
    low, high = wavelength_range
    if not 0 < low <= high:
        raise ValueError(f"wavelength_range = {wavelength_range} must satisfy 0 < low <= high.")
    dtype = dtype or jnp.zeros(()).dtype
    k_speed, k_dir, k_wave, k_phase = jax.random.split(key, 4)
    speed = steady_speed * jax.random.uniform(k_speed, (), dtype)
    if axes == 1:
        direction = jnp.where(jax.random.bernoulli(k_dir), 1.0, -1.0).astype(dtype)[None]
    else:
        angle = jax.random.uniform(k_dir, (), dtype, 0.0, 2.0 * math.pi)
        direction = jnp.stack([jnp.cos(angle), jnp.sin(angle)])
    log_wavelength = jax.random.uniform(k_wave, (modes,), dtype, math.log(low), math.log(high))
    return Wind(
        steady=speed * direction,
        gust_amplitude=jnp.full((modes, axes), gust_rms * math.sqrt(2.0 / modes), dtype),
        gust_wavenumber=2.0 * math.pi * jnp.exp(-log_wavelength),
        gust_phase=jax.random.uniform(k_phase, (modes, axes), dtype, 0.0, 2.0 * math.pi),
    )


def wind_velocity(wind: Wind, height: jax.Array) -> jax.Array:
    """Return the horizontal wind velocity at ``height`` (m), m/s, shape ``(n,)``."""
    if jnp.ndim(height) == 0:
        angles = wind.gust_wavenumber[:, None] * height + wind.gust_phase
        gusts = wind.gust_amplitude * components.sin(angles)
        return wind.steady + jnp.sum(gusts, axis=0)
    return jnp.stack(wind_components(wind, height))


def wind_components(wind: Wind, height: jax.Array) -> components.Vector:
    """Return :func:`wind_velocity` as a tuple with one array per horizontal axis.

    For a batch with the batch last (the layout of
    :func:`~diffland.dynamics.simulate.final_state_batch`) every term is written out per
    axis and mode, elementwise on the batch shape, so XLA compiles it into flat loops
    without a concatenation of the axes.
    """
    if jnp.ndim(height) == 0:
        return tuple(wind_velocity(wind, height))
    axes = []
    for axis in range(wind.steady.shape[0]):
        total = wind.steady[axis]
        for mode in range(wind.gust_wavenumber.shape[0]):
            angle = wind.gust_wavenumber[mode] * height + wind.gust_phase[mode, axis]
            total = total + wind.gust_amplitude[mode, axis] * components.sin(angle)
        axes.append(total)
    return tuple(axes)


def air_density(height, sea_level_density, scale_height):
    """Return the exponential-atmosphere density at ``height`` (m), kg/m^3."""
    return sea_level_density * jnp.exp(-height / scale_height)


def drag_force(
    relative_velocity: jax.Array,
    axis: jax.Array,
    density: jax.Array,
    axial_coefficient: jax.Array,
    normal_coefficient: jax.Array,
    reference_area: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Return the axial and normal drag forces, N, in the frame of the inputs.

    ``relative_velocity`` is the air-relative velocity of the centre of mass and ``axis``
    the unit body axis, both in the same frame with the components on the first axis. The
    normal force acts at the centre of pressure, so a vehicle adds its torque.
    """
    size = jnp.shape(relative_velocity)[0]
    axial, normal = drag_force_components(
        components.split(relative_velocity, size),
        components.split(axis, size),
        density,
        axial_coefficient,
        normal_coefficient,
        reference_area,
    )
    return jnp.stack(axial), jnp.stack(normal)


def drag_force_components(
    relative_velocity: components.Vector,
    axis: components.Vector,
    density: jax.Array,
    axial_coefficient: jax.Array,
    normal_coefficient: jax.Array,
    reference_area: jax.Array,
) -> tuple[components.Vector, components.Vector]:
    """Return :func:`drag_force` for vectors given as tuples of components."""
    along = components.dot(relative_velocity, axis)
    axial_velocity = components.scale(along, axis)
    normal_velocity = tuple(u - a for u, a in zip(relative_velocity, axial_velocity, strict=True))
    pressure = 0.5 * density * reference_area * components.safe_norm(relative_velocity)
    return (
        components.scale(-pressure * axial_coefficient, axial_velocity),
        components.scale(-pressure * normal_coefficient, normal_velocity),
    )
