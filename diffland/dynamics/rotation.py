"""Quaternion maths for attitude: products, rotations, kinematics and attitude errors.

Conventions. A quaternion is an array of shape ``(4,)`` stored scalar first,
``q = (w, x, y, z)``, and multiplied with the Hamilton product. A unit quaternion ``q``
describes the attitude of a body: it rotates body-frame vectors into the world frame,
``v_world = q ⊗ (0, v_body) ⊗ q*``, so the columns of :func:`rotation_matrix` are the body
axes written in world coordinates. ``q`` and ``-q`` are the same attitude.

Kinematics. With the angular velocity ``omega`` in the body frame,
``dq/dt = 0.5 q ⊗ (0, omega)``. This rate is tangent to the unit sphere, so an exact
solution keeps ``|q| = 1``. A numerical integrator drifts off it, and the vehicles
normalise the quaternion after each step with :func:`normalize`.

The functions work on single quaternions and vectors; batch them with ``jax.vmap``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffland.dynamics.base import safe_norm


def identity(dtype=None) -> jax.Array:
    """Return the identity quaternion ``(1, 0, 0, 0)``."""
    return jnp.array([1.0, 0.0, 0.0, 0.0], dtype)


def multiply(p: jax.Array, q: jax.Array) -> jax.Array:
    """Return the Hamilton product ``p ⊗ q``: rotating by ``q`` first, then by ``p``."""
    pw, pv = p[0], p[1:]
    qw, qv = q[0], q[1:]
    scalar = pw * qw - jnp.dot(pv, qv)
    vector = pw * qv + qw * pv + jnp.cross(pv, qv)
    return jnp.concatenate([scalar[None], vector])


def conjugate(q: jax.Array) -> jax.Array:
    """Return ``q* = (w, -x, -y, -z)``, the inverse rotation of a unit quaternion."""
    return q * jnp.array([1.0, -1.0, -1.0, -1.0], q.dtype)


def rotate(q: jax.Array, vector: jax.Array) -> jax.Array:
    """Rotate a body-frame ``vector`` (shape ``(3,)``) into the world frame by unit ``q``.

    Uses the expanded form of ``q ⊗ (0, v) ⊗ q*``:
    ``v + 2 w (u × v) + 2 u × (u × v)`` with ``u = (x, y, z)``.
    """
    w, u = q[0], q[1:]
    twice_cross = 2.0 * jnp.cross(u, vector)
    return vector + w * twice_cross + jnp.cross(u, twice_cross)


def inverse_rotate(q: jax.Array, vector: jax.Array) -> jax.Array:
    """Rotate a world-frame ``vector`` into the body frame of unit ``q``."""
    return rotate(conjugate(q), vector)


def normalize(q: jax.Array) -> jax.Array:
    """Scale ``q`` to unit norm.

    The zero quaternion has no direction: it maps to the identity with a zero gradient,
    where a plain ``q / |q|`` would return NaN values and NaN gradients. A NaN input stays
    NaN, so a diverged integration is not hidden.
    """
    squared = jnp.dot(q, q)
    is_zero = squared == 0.0
    scaled = q / jnp.sqrt(jnp.where(is_zero, 1.0, squared))
    return jnp.where(is_zero, identity(q.dtype), scaled)


def from_axis_angle(axis: jax.Array, angle: jax.Array) -> jax.Array:
    """Return the unit quaternion of a rotation by ``angle`` (rad, right-handed) about
    ``axis`` (shape ``(3,)``, any non-zero length; a zero axis gives the identity)."""
    axis = jnp.asarray(axis)
    angle = jnp.asarray(angle, axis.dtype)
    length = safe_norm(axis)
    unit_axis = axis / jnp.where(length > 0.0, length, 1.0)
    half = 0.5 * angle
    q = jnp.concatenate([jnp.cos(half)[None], jnp.sin(half) * unit_axis])
    return jnp.where(length > 0.0, q, identity(q.dtype))


def rotation_matrix(q: jax.Array) -> jax.Array:
    """Return the 3x3 matrix ``R`` of unit ``q`` with ``v_world = R @ v_body``.

    Column ``i`` of ``R`` is body axis ``i`` expressed in the world frame.
    """
    w, x, y, z = q[0], q[1], q[2], q[3]
    return jnp.array(
        [
            [1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - w * z), 2.0 * (x * z + w * y)],
            [2.0 * (x * y + w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - w * x)],
            [2.0 * (x * z - w * y), 2.0 * (y * z + w * x), 1.0 - 2.0 * (x * x + y * y)],
        ]
    )


def kinematics(q: jax.Array, omega_body: jax.Array) -> jax.Array:
    """Return ``dq/dt = 0.5 q ⊗ (0, omega_body)`` for the body-frame angular velocity
    ``omega_body`` in rad/s."""
    pure = jnp.concatenate([jnp.zeros((1,), omega_body.dtype), omega_body])
    return 0.5 * multiply(q, pure)


def attitude_error(q: jax.Array, q_ref: jax.Array) -> jax.Array:
    """Return the vector part of the error quaternion ``q_ref* ⊗ q``, shape ``(3,)``.

    For unit quaternions that differ by a rotation of ``angle`` about the unit axis ``n``
    (in the reference frame, equally in the body frame), the result is
    ``sin(angle / 2) n`` with ``angle`` in ``[0, pi]``. The error quaternion is negated
    when its scalar part is negative (exactly zero counts as positive). This picks the
    shorter of the two rotations, so ``q`` and ``-q`` give the same error.

    The function is smooth except at exactly 180 degrees, where the scalar part is zero
    and the sign flips, so the error jumps from ``n`` to ``-n``. The gradient there is
    the one-sided value of the positive branch, a documented subgradient. Use
    :func:`attitude_error_measure` for a cost that is smooth everywhere.
    """
    error = multiply(conjugate(q_ref), q)
    sign = jnp.where(error[0] >= 0.0, 1.0, -1.0).astype(error.dtype)
    return sign * error[1:]


def attitude_error_measure(q: jax.Array, q_ref: jax.Array) -> jax.Array:
    """Return ``1 - (q . q_ref)^2 / (|q|^2 |q_ref|^2)``, which is ``sin^2(angle / 2)``.

    ``angle`` is the rotation between the two attitudes. The measure is smooth
    everywhere, including at 180 degrees where it reaches 1. It is zero with a zero
    gradient when the attitudes agree, is the same for ``q`` and ``-q``, and does not
    change when either quaternion is scaled, so it needs no normalised input. A zero
    quaternion gets the value 1 and a zero gradient instead of NaN values.
    """
    dot = jnp.dot(q, q_ref)
    norms = jnp.dot(q, q) * jnp.dot(q_ref, q_ref)
    nonzero = norms > 0.0
    return 1.0 - dot**2 / jnp.where(nonzero, norms, 1.0)
