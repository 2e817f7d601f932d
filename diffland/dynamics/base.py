"""The vehicle interface that integrators, the simulator and the trainer are written against.

A vehicle is a frozen dataclass of static options (for example whether drag is modelled)
whose methods are pure functions of ``(state, action, params)``. States and parameters
are pytrees of arrays, so they can be vmapped (batches of landers, randomised parameters)
and differentiated (system identification). Physics is written for one vehicle; batching
happens outside with ``jax.vmap``.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

State = Any
Params = Any
Action = jax.Array

STANDARD_GRAVITY = 9.80665
"""Standard gravity g0 in m/s^2, used to convert specific impulse to exhaust velocity."""


class Vehicle(abc.ABC):
    """A rigid vehicle with variable mass that lands on the ground at height zero.

    Subclasses are frozen dataclasses (hashable, so they can be static arguments of jitted
    functions) and implement the abstract methods below. Everything else in diffland
    (integrators, touchdown handling, rollouts, costs, the trainer) uses only this
    interface.
    """

    kinematic_fields: ClassVar[tuple[str, ...]] = ()
    """State fields whose time derivative depends only on other state fields (positions,
    attitude). Semi-implicit Euler updates them last, from the already updated rates."""

    action_size: ClassVar[int] = 1
    """Length of the action vector."""

    constant_fields: ClassVar[tuple[str, ...]] = ()
    """State fields whose time derivative is always zero (the wind a lander meets). The
    physics step carries them over unchanged instead of integrating and interpolating
    zeros, so a field listed here never changes, whatever the derivative returns. An
    instance may list more fields than its class: ``RigidBody`` adds its gimbal angles
    when ``gimbal_lag`` is off."""

    component_tuples: ClassVar[bool] = False
    """True when :meth:`derivative`, :meth:`height` and :meth:`project` also accept a
    state whose vector fields are tuples with one array per component (see
    :mod:`diffland.dynamics.components`), every array of one batch shape, and actions
    and constant fields with that batch shape as their last axes. Parameters are then
    unbatched. :func:`~diffland.dynamics.simulate.final_state_batch` steps a batch in
    that layout; for other vehicles it falls back to ``jax.vmap``."""

    @abc.abstractmethod
    def derivative(self, state: State, action: Action, params: Params) -> State:
        """Return the time derivative of ``state`` as a pytree of the same structure."""

    @abc.abstractmethod
    def height(self, state: State, params: Params) -> jax.Array:
        """Return the height above the ground in m; touchdown is the crossing of zero."""

    @abc.abstractmethod
    def action_bounds(self, params: Params) -> tuple[jax.Array, jax.Array]:
        """Return the lower and upper action bounds, each of shape ``(action_size,)``."""

    @abc.abstractmethod
    def observation(self, state: State, params: Params) -> jax.Array:
        """Return a 1-D vector of scaled features for learned controllers."""

    @abc.abstractmethod
    def touchdown_speed(self, state: State, params: Params) -> jax.Array:
        """Return the speed that the touchdown speed limit bounds, m/s.

        For a vehicle that moves only vertically this is the magnitude of the velocity;
        vehicles with lateral motion return the magnitude of the vertical velocity.
        """

    def touchdown_measures(self, state: State, params: Params) -> TouchdownMeasures:
        """Return the quantities that the touchdown limits bound, at ``state``.

        The default suits a vehicle that moves only vertically: the vertical speed is
        :meth:`touchdown_speed` and every other measure is zero. Vehicles with lateral
        motion or attitude override it.
        """
        speed = self.touchdown_speed(state, params)
        zero = jnp.zeros_like(speed)
        return TouchdownMeasures(
            vertical_speed=speed,
            lateral_speed=zero,
            tilt=zero,
            angular_rate=zero,
            pad_distance=zero,
            tip_over=zero,
        )

    @abc.abstractmethod
    def propellant_mass(self, state: State, params: Params) -> jax.Array:
        """Return the propellant left on board in kg (zero when only dry mass is left)."""

    def project(self, state: State, params: Params) -> State:
        """Map a state after an integration step back onto the valid set.

        The default is the identity. Vehicles use it for constraints that an integrator
        does not keep, such as the dry-mass floor or the unit norm of a quaternion.
        """
        del params
        return state

    def validate(self, state: State, params: Params) -> None:
        """Raise ``ValueError`` for an invalid state or parameter set.

        Called by the public entry points on concrete (non-traced) values before anything
        is compiled. The default checks only that every leaf is finite.
        """
        check_finite_tree(state, "state")
        check_finite_tree(params, "params")


@struct.dataclass
class TouchdownMeasures:
    """Quantities bounded by the landing limits at touchdown; each field is non-negative.

    A landing succeeds when every measure is within its limit (see
    :class:`~diffland.training.cost.LandingCost`).
    """

    vertical_speed: jax.Array
    """Magnitude of the vertical velocity, m/s."""
    lateral_speed: jax.Array
    """Magnitude of the horizontal velocity, m/s."""
    tilt: jax.Array
    """Angle between the vehicle's long axis and the vertical, rad."""
    angular_rate: jax.Array
    """Magnitude of the angular velocity, rad/s."""
    pad_distance: jax.Array
    """Horizontal distance of the centre of mass from the pad centre, m."""
    tip_over: jax.Array
    """Ratio of the kinetic energy available to tip the vehicle over its downhill foot to
    the potential-energy barrier of that tip. At 1 or more the vehicle falls over."""


def safe_norm(x: jax.Array, axis: int = -1) -> jax.Array:
    """Return the Euclidean norm along ``axis`` with gradient zero (not NaN) at zero.

    ``sqrt`` has an infinite slope at zero, so the plain norm of a zero vector has a NaN
    gradient. Zero is a valid subgradient of the norm there.
    """
    squared = jnp.sum(x * x, axis=axis)
    positive = squared > 0.0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def is_concrete(tree: Any) -> bool:
    """Return True when no leaf of ``tree`` is a tracer, so its values can be inspected."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))


def leaf_dtype(leaf: Any) -> np.dtype:
    """Return the dtype that JAX gives ``leaf`` (an array, tracer or Python number) in this
    process: float64 becomes float32 unless ``jax_enable_x64`` is set."""
    dtype = leaf.dtype if hasattr(leaf, "dtype") else jnp.result_type(leaf)
    return jax.dtypes.canonicalize_dtype(dtype)


def _is_weakly_typed(leaf: Any) -> bool:
    """Return whether ``leaf`` takes the dtype of the arrays it meets: a Python number or a
    JAX array or tracer made from one."""
    return not hasattr(leaf, "dtype") or bool(getattr(leaf, "weak_type", False))


def check_state_dtypes(state: Any, name: str = "state") -> None:
    """Raise ``ValueError`` unless every leaf of ``state`` is float32, or every leaf float64.

    Dtypes are known while tracing, so this check also runs on traced states. The
    dynamics state is integrated, so integer and boolean leaves have no derivative. A
    float narrower than 32 bits loses the touchdown speed to rounding: bfloat16 keeps 8
    bits of mantissa, so it resolves a height of 2000 m to 8 m. Python numbers, which take
    the dtype of the arrays they meet, are not compared with the other leaves.
    """
    first_field = first_dtype = None
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        dtype = leaf_dtype(leaf)
        field = f"{name}{jax.tree_util.keystr(path)}"
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(
                f"{field} has dtype {dtype}; the dynamics state is integrated and "
                f"differentiated, so it must be a float. {_CAST_ADVICE}"
            )
        if jnp.finfo(dtype).bits < 32:
            raise ValueError(
                f"{field} has dtype {dtype}, too coarse for the dynamics state (half "
                "precision is only for controller networks, through their dtype setting). "
                f"{_CAST_ADVICE}"
            )
        if _is_weakly_typed(leaf):
            continue
        if first_dtype is None:
            first_field, first_dtype = field, dtype
        elif dtype != first_dtype:
            raise ValueError(
                f"{first_field} has dtype {first_dtype} but {field} has dtype {dtype}; every leaf "
                f"of the dynamics state needs the same dtype. {_CAST_ADVICE}"
            )


_CAST_ADVICE = (
    "Cast the whole state to float32 (or to float64 with jax_enable_x64), for example with "
    "jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), state)."
)


def check_step_dtypes(state: Any, action: Any, params: Any) -> None:
    """Raise ``ValueError`` when ``action`` or a float leaf of ``params`` would change the
    dtype of the dynamics state.

    JAX computes with the wider of two float dtypes, so a physics step with a float64
    action or parameter returns a float64 state from a float32 one, which a rollout's
    scan rejects with a type error. Narrower leaves (float32 on a float64 state) and
    weakly typed ones (Python numbers) take the state's dtype and pass. A state made
    only of weakly typed leaves takes the dtype of any typed leaf it meets, so there
    every typed leaf must have JAX's default float dtype (float64 with
    ``jax_enable_x64``, else float32).
    """
    leaves = jax.tree_util.tree_leaves(state)
    if not leaves:
        return
    typed = [leaf for leaf in leaves if not _is_weakly_typed(leaf)]
    dtype = leaf_dtype(typed[0] if typed else leaves[0])
    weak_note = "" if typed else " (its leaves are Python numbers or weakly typed arrays)"

    def changes_state(other: np.dtype) -> bool:
        if other == dtype:
            return False
        return not typed or jnp.finfo(other).bits > jnp.finfo(dtype).bits

    for leaf in jax.tree_util.tree_leaves(action):
        other = leaf_dtype(leaf)
        if not _is_weakly_typed(leaf) and changes_state(other):
            raise ValueError(
                f"the action has dtype {other} but the state has dtype {dtype}{weak_note}; "
                "return the policy's action in the state's dtype, or build the state with "
                "an explicit dtype."
            )
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        other = leaf_dtype(leaf)
        if _is_weakly_typed(leaf) or not jnp.issubdtype(other, jnp.floating):
            continue
        if changes_state(other):
            raise ValueError(
                f"params{jax.tree_util.keystr(path)} has dtype {other} but the state has "
                f"dtype {dtype}{weak_note}; build the parameters and the state in one dtype "
                "(the make_* functions and the presets take dtype=)."
            )


def check_finite_tree(tree: Any, name: str) -> None:
    """Raise ``ValueError`` naming the first non-finite leaf of a concrete pytree."""
    if not is_concrete(tree):
        return
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    for path, leaf in leaves:
        values = np.asarray(leaf)
        not_finite = ~np.isfinite(values)
        if not not_finite.any():
            continue
        field = jax.tree_util.keystr(path)
        # numpy abbreviates long arrays, so the message also gives where the first
        # non-finite entry is.
        location = ""
        if values.ndim:
            first = ", ".join(str(int(i)) for i in np.argwhere(not_finite)[0])
            location = f" at index [{first}] ({int(not_finite.sum())} of {values.size} entries)"
        raise ValueError(
            f"{name}{field} contains a non-finite value ({values}){location}; every state and "
            "parameter entry must be a finite number."
        )
