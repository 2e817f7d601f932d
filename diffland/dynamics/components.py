"""Vector maths on tuples of components, for physics written once for any batch layout.

A vector here is a tuple of arrays, one per component (``(x, y, z)``, or ``(w, x, y, z)``
for a quaternion with the conventions of :mod:`diffland.dynamics.rotation`). All
components share one shape: ``()`` for one lander, or a batch shape. Every operation is
elementwise on that shape, so XLA can compile a batch into flat vectorised loops over
contiguous arrays, without the short minor axis of a ``(batch, 3)`` array.

A state field holds either an array whose first axis indexes the components (``(3,)``
for one lander, as the public API uses) or such a tuple (the layout of
:func:`~diffland.dynamics.simulate.final_state_batch`). :func:`split` reads both and
:func:`pack` writes a result back in the layout of a given field.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp

Vector = tuple[jax.Array, ...]

_barriers = threading.local()


@contextlib.contextmanager
def materializing() -> Iterator[None]:
    """Make :func:`shared` insert ``lax.optimization_barrier`` while tracing in this
    block (on this thread)."""
    previous = getattr(_barriers, "active", False)
    _barriers.active = True
    try:
        yield
    finally:
        _barriers.active = previous


def is_materializing() -> bool:
    """Return whether this thread is inside a :func:`materializing` block."""
    return getattr(_barriers, "active", False)


def shared(tree: Any) -> Any:
    """Mark values that several later expressions use, so XLA computes them once.

    Inside :func:`materializing` the values pass through ``lax.optimization_barrier``,
    else they are returned as they are. Neither changes a value or a derivative. The
    barrier stops XLA's loop fusion from copying the whole expression of the values
    into each of their users, which in a batched physics step multiplied the work
    several times over. It has that effect only in programs compiled with the
    optimization-barrier expansion pass disabled
    (:func:`~diffland.dynamics.simulate.component_compiler_options`), as
    :func:`~diffland.dynamics.simulate.final_state_batch` and the trainer's update compile
    them; XLA otherwise removes barriers before fusion.
    """
    if is_materializing():
        return jax.lax.optimization_barrier(tree)
    return tree


def split(value: Any, size: int) -> Vector:
    """Return the ``size`` components of an array (components on its first axis) or tuple."""
    if isinstance(value, tuple):
        return value
    return tuple(value[i] for i in range(size))


def pack(like: Any, values: Vector) -> Any:
    """Return ``values`` in the layout of ``like``: a tuple, or an array with the
    components stacked on the first axis."""
    if isinstance(like, tuple):
        return tuple(values)
    return jnp.stack(values)


def dot(a: Vector, b: Vector) -> jax.Array:
    """Return the dot product of two vectors of equal length."""
    total = a[0] * b[0]
    for left, right in zip(a[1:], b[1:], strict=True):
        total = total + left * right
    return total


def cross(a: Vector, b: Vector) -> Vector:
    """Return the cross product of two 3-vectors."""
    return (
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    )


def scale(factor: jax.Array, vector: Vector) -> Vector:
    """Return ``factor * vector``."""
    return tuple(factor * component for component in vector)


def add(a: Vector, b: Vector) -> Vector:
    """Return ``a + b``."""
    return tuple(left + right for left, right in zip(a, b, strict=True))


def rotate(q: Vector, vector: Vector) -> Vector:
    """Rotate a body-frame vector into the world frame by the unit quaternion ``q``.

    The same expanded form as :func:`diffland.dynamics.rotation.rotate`:
    ``v + 2 w (u × v) + 2 u × (u × v)`` with ``u = (x, y, z)``.
    """
    w, u = q[0], q[1:]
    twice_cross = scale(2.0, cross(u, vector))
    return add(add(vector, scale(w, twice_cross)), cross(u, twice_cross))


def inverse_rotate(q: Vector, vector: Vector) -> Vector:
    """Rotate a world-frame vector into the body frame of the unit quaternion ``q``."""
    return rotate((q[0], -q[1], -q[2], -q[3]), vector)


def quaternion_rate(q: Vector, omega_body: Vector) -> Vector:
    """Return ``dq/dt = 0.5 q ⊗ (0, omega_body)`` for the body-frame angular velocity in
    rad/s."""
    w, x, y, z = q
    p, r, s = omega_body
    return (
        0.5 * -(x * p + y * r + z * s),
        0.5 * (w * p + (y * s - z * r)),
        0.5 * (w * r + (z * p - x * s)),
        0.5 * (w * s + (x * r - y * p)),
    )


def normalize_quaternion(q: Vector) -> Vector:
    """Scale ``q`` to unit norm; the zero quaternion maps to the identity with a zero
    gradient, as :func:`diffland.dynamics.rotation.normalize` does."""
    squared = dot(q, q)
    is_zero = squared == 0.0
    norm = jnp.sqrt(jnp.where(is_zero, 1.0, squared))
    is_zero, norm = shared((is_zero, norm))
    identity = (1.0, 0.0, 0.0, 0.0)
    return tuple(
        jnp.where(is_zero, unit, component / norm)
        for unit, component in zip(identity, q, strict=True)
    )


def body_z_axis(q: Vector) -> Vector:
    """Return the body z axis in the world frame: the third column of the rotation
    matrix of the unit quaternion ``q``."""
    w, x, y, z = q
    return (2.0 * (x * z + w * y), 2.0 * (y * z - w * x), 1.0 - 2.0 * (x * x + y * y))


def safe_norm(vector: Vector) -> jax.Array:
    """Return the Euclidean norm with gradient zero (not NaN) at zero, as
    :func:`diffland.dynamics.base.safe_norm` does."""
    squared = dot(vector, vector)
    positive = squared > 0.0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


# Range reduction and minimax polynomials of the single-precision sine and cosine of the
# Cephes library (S. L. Moshier, sinf.c and cosf.c). pi/2 is split into three parts. The
# first two have 8 significant bits (201 / 2^7 and 253 / 2^19), so n * part is exact in
# float32 for |n| < 2^16, that is |angle| < 1e5 rad. The third is the float32 nearest
# the rest, and the three add up to pi/2 within 6e-14.
_TWO_OVER_PI = 0.636619772367581343
_HALF_PI_PARTS = (1.5703125, 4.825592041015625e-4, 1.2675908465098473e-6)
_SIN_COEFFICIENTS = (-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1)
_COS_COEFFICIENTS = (2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2)


@jax.custom_jvp
def sin_cos(angle: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Return ``(sin(angle), cos(angle))`` for an angle in rad.

    For float32 this evaluates polynomials that XLA vectorises. On a 2-core AVX-512 Xeon
    with jax 0.10.2, over 32,768 float32 angles, ``jnp.sin`` took about 10 ns per value,
    a square root 0.6 ns and this function 3 ns. The error is below 2e-7 for
    ``|angle| < 5e4`` rad, eagerly and under ``jax.jit``. Beyond about 1e5 rad the
    reduction is no longer exact, so use ``jnp.sin`` and ``jnp.cos`` for such angles.
    Other dtypes use ``jnp.sin`` and ``jnp.cos``.
    """
    angle = jnp.asarray(angle)
    if angle.dtype != jnp.float32:
        return jnp.sin(angle), jnp.cos(angle)
    quadrant = jnp.round(angle * _TWO_OVER_PI)
    reduced = angle
    for part in _HALF_PI_PARTS:
        reduced = reduced - quadrant * part
    square = reduced * reduced
    sine = _SIN_COEFFICIENTS[0]
    for coefficient in _SIN_COEFFICIENTS[1:]:
        sine = sine * square + coefficient
    sine = reduced + reduced * square * sine
    cosine = _COS_COEFFICIENTS[0]
    for coefficient in _COS_COEFFICIENTS[1:]:
        cosine = cosine * square + coefficient
    cosine = 1.0 - 0.5 * square + square * square * cosine
    # Pick sin(r + n pi/2) and cos(r + n pi/2) by the quadrant n mod 4. Float operations
    # find it exactly for these integers, and measured faster than an integer conversion.
    index = quadrant - 4.0 * jnp.floor(quadrant * 0.25)
    odd = (index == 1.0) | (index == 3.0)
    sine_out = jnp.where(odd, cosine, sine)
    cosine_out = jnp.where(odd, sine, cosine)
    sine_out = jnp.where(index >= 2.0, -sine_out, sine_out)
    cosine_out = jnp.where((index == 1.0) | (index == 2.0), -cosine_out, cosine_out)
    return sine_out, cosine_out


@sin_cos.defjvp
def _sin_cos_jvp(primals, tangents):
    (angle,), (tangent,) = primals, tangents
    sine, cosine = sin_cos(angle)
    return (sine, cosine), (cosine * tangent, -sine * tangent)


# Range reduction by pi for `sin`. pi is split into three float32 parts. The first two
# have 8 significant bits (201 / 2^6 and 253 / 2^18), so n * part is exact in float32 for
# |n| < 2^16. The third is the float32 nearest the rest, within 1.1e-13 of it.
_ONE_OVER_PI = 0.318309886183790672
_PI_PARTS = (3.140625, 9.65118408203125e-4, 2.5351816930196946e-6)
# sin(r) ~ r + r^3 (c0 + c1 r^2 + c2 r^4 + c3 r^6) on [-pi/2, pi/2]. Fitted in float64
# with numpy by a Remez exchange on [0, pi/2] for the minimum max absolute error
# (4.6e-9), then rounded to float32 one coefficient at a time from c0, refitting the
# others after each rounding. These float32 values, evaluated in float64, are within
# 5.0e-9 of sin(r). Degree 7 would be off by 8.8e-7.
_SIN_PI_COEFFICIENTS = (
    -1.6666656733e-1,
    8.3330087364e-3,
    -1.9806050113e-4,
    2.5989336336e-6,
)


@jax.custom_jvp
def sin(angle: jax.Array) -> jax.Array:
    """Return ``sin(angle)`` for an angle in rad.

    For float32 this is cheaper than ``sin_cos(angle)[0]`` because it evaluates one odd
    polynomial after a reduction by pi and flips the sign, with no cosine or quadrant
    selects. The error is below 2e-7 for ``|angle| < 5e4`` rad, eagerly and under
    ``jax.jit``. Beyond about 2e5 rad the reduction is no longer exact (the error
    reached 3e-2 at 1e6 rad) and angles near the float32 limit give inf, so use
    ``jnp.sin`` for such angles. Other dtypes use ``jnp.sin``.
    """
    angle = jnp.asarray(angle)
    if angle.dtype != jnp.float32:
        return jnp.sin(angle)
    half_turns = jnp.round(angle * _ONE_OVER_PI)
    reduced = angle
    for part in _PI_PARTS:
        reduced = reduced - half_turns * part
    square = reduced * reduced
    polynomial = _SIN_PI_COEFFICIENTS[-1]
    for coefficient in reversed(_SIN_PI_COEFFICIENTS[:-1]):
        polynomial = polynomial * square + coefficient
    sine = reduced + reduced * square * polynomial
    # sin(r + n pi) = (-1)^n sin(r). n is odd when n / 2 is not an integer, which float
    # operations find exactly for these n.
    half = 0.5 * half_turns
    return jnp.where(jnp.floor(half) != half, -sine, sine)


@sin.defjvp
def _sin_jvp(primals, tangents):
    (angle,), (tangent,) = primals, tangents
    return sin(angle), sin_cos(angle)[1] * tangent
