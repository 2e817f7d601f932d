"""The 6-DOF booster: a rigid body of variable mass with a gimballed engine.

Frames and signs. The world frame has z up and its origin at the pad centre. The body
frame has its origin at the centre of mass and its z axis along the long axis (tail to
nose). The attitude is a unit quaternion ``q = (w, x, y, z)`` that rotates body-frame
vectors into the world frame (see :mod:`diffland.dynamics.rotation`), and the angular
velocity ``omega`` is written in the body frame.

Engine and gimbal. The gimbal point sits at ``r_e = (0, 0, -l_e)`` in the body frame.
With gimbal angles ``(g_x, g_y)`` the thrust in the body frame is::

    F_e = T (-sin(g_y) cos(g_x), sin(g_x), cos(g_y) cos(g_x))

and the engine torque about the centre of mass is ``r_e × F_e``. So ``g_y > 0`` pushes
the tail towards body -x and makes a positive torque about body +y, and ``g_x > 0``
makes a positive torque about body +x. A pitch ``theta`` about +y moves the nose
towards world +x, the same sign as the planar booster of
:mod:`diffland.dynamics.planar`. With motion in the x-z plane this model reproduces the
planar one with ``pitch = theta`` and planar gimbal ``= g_y``.

Equations of motion::

    dr/dt = v
    m dv/dt = R(q) F_e + F_aero - m g e_z       (+ rotating-planet terms, below)
    dq/dt = 0.5 q ⊗ (0, omega)
    I domega/dt = tau - omega × (I omega)
    dm/dt = -T / (Isp g0)

with ``T = throttle * max_thrust`` while propellant remains (zero at the dry mass) and
``tau = r_e × F_e + tau_aero (+ RCS torque)`` in the body frame.

Moment of inertia. ``I = m diag(k_x^2, k_y^2, k_z^2)`` with constant radii of gyration,
so the inertia scales with the mass as propellant burns. As in the planar model, the
centre of mass stays fixed in the body, and the ``dI/dt omega`` and jet-damping terms of
variable-mass rigid-body dynamics are left out.

Drag. With ``drag=True`` the drag of :func:`diffland.dynamics.aero.drag_force` acts on
the air-relative velocity ``v - (w_x, w_y, 0)``, with the wind taken at the height of the
centre of mass. The normal force acts at the centre of pressure ``l_cp`` above the
centre of mass along the body axis, so it adds the torque ``(l_cp b) × F_normal``.

Reaction control. With ``rcs=True`` the action carries three more entries, a torque in
N m about each body axis, each clipped to ``[-rcs_torque_limit, rcs_torque_limit]``.

Rotating planet. With ``planet_rotation=True`` the world frame turns with the planet at
``Omega`` (world frame, rad/s), and the translational acceleration gets the Coriolis
and centrifugal terms ``-2 Omega × v - Omega × (Omega × r)`` with ``r`` measured from the
pad. ``gravity`` is then the local gravity at the pad, which already contains the
pad's own centrifugal part. NOTE: the attitude equations still treat the pad frame as
inertial, so ``omega`` is the rate relative to the planet and the ``Omega`` terms of
the rotational dynamics (about 7e-5 rad/s on Earth) are left out.

Gimbal actuator. With ``gimbal_lag=True`` each gimbal angle is a state that follows its
command as in the planar model: ``dg/dt = rate_limit * tanh((g_cmd - g) / (tau *
rate_limit))``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from diffland.dynamics import aero, components, landing_gear
from diffland.dynamics.base import (
    STANDARD_GRAVITY,
    TouchdownMeasures,
    Vehicle,
    check_finite_tree,
    is_concrete,
    safe_norm,
)
from diffland.dynamics.planar import (
    _NON_NEGATIVE,
    _POSITIVE,
    validate_mass_and_height,
    validate_rigid_params,
)
from diffland.dynamics.vertical import _show

QUATERNION_NORM_TOLERANCE = 1e-3
"""Largest accepted ``| |q| - 1 |`` of an initial attitude quaternion."""


@struct.dataclass
class RigidBodyState:
    """State of one 6-DOF booster."""

    position: jax.Array
    """Centre of mass in the world frame, m, shape ``(3,)``: z up, origin at the pad centre."""
    velocity: jax.Array
    """Velocity of the centre of mass in the world frame, m/s, shape ``(3,)``."""
    quaternion: jax.Array
    """Attitude ``(w, x, y, z)``, body to world, shape ``(4,)``; unit norm."""
    angular_velocity: jax.Array
    """Angular velocity in the body frame, rad/s, shape ``(3,)``."""
    mass: jax.Array
    """Total mass, kg, shape ``()``."""
    gimbal: jax.Array
    """Gimbal angles ``(g_x, g_y)``, rad, shape ``(2,)``; a state only with
    ``gimbal_lag=True``, otherwise constant."""
    wind: aero.Wind
    """Wind this lander meets (two horizontal axes, x and y), taken at the height of the
    centre of mass; constant along a rollout."""


def _zero_vector() -> jax.Array:
    return jnp.zeros((3,))


@struct.dataclass
class RigidBodyParams:
    """Physical parameters of a 6-DOF booster; fields have shape ``()`` unless noted.

    Fields shared with :class:`~diffland.dynamics.planar.PlanarParams` have the same
    names and meaning.
    """

    gravity: jax.Array
    """Magnitude of the gravitational acceleration, m/s^2 (along world -z)."""
    max_thrust: jax.Array
    """Thrust at full throttle, N."""
    throttle_min: jax.Array
    """Lowest throttle, fraction of ``max_thrust``."""
    throttle_max: jax.Array
    """Highest throttle, fraction of ``max_thrust``."""
    isp: jax.Array
    """Specific impulse, s."""
    dry_mass: jax.Array
    """Mass with no propellant left, kg; thrust stops at this mass."""
    gimbal_limit: jax.Array
    """Largest angle of each gimbal axis either way, rad."""
    engine_offset: jax.Array
    """Distance from the centre of mass down the body axis to the gimbal point, m."""
    radius_of_gyration: jax.Array
    """Radii of gyration ``(k_x, k_y, k_z)`` about the body axes through the centre of
    mass, m, shape ``(3,)``; the inertia tensor is ``m diag(k^2)``."""
    com_height: jax.Array
    """Distance from the centre of mass down the body axis to the plane of the feet, m."""
    leg_radius: jax.Array
    """Half the span of the landing legs, m."""
    gimbal_time_constant: jax.Array = 0.1
    """Time constant of the gimbal actuator lag, s (with ``gimbal_lag=True``)."""
    gimbal_rate_limit: jax.Array = 0.35
    """Largest gimbal slew rate of each axis, rad/s (with ``gimbal_lag=True``)."""
    axial_drag_coefficient: jax.Array = 0.0
    """C_A along the body axis over ``reference_area`` (used with ``drag=True``)."""
    normal_drag_coefficient: jax.Array = 0.0
    """C_N across the body axis over ``reference_area`` (used with ``drag=True``)."""
    reference_area: jax.Array = 0.0
    """Drag reference area, m^2."""
    pressure_center_offset: jax.Array = 0.0
    """Distance of the centre of pressure above the centre of mass along the body axis, m."""
    sea_level_density: jax.Array = 1.225
    """Air density at zero height, kg/m^3."""
    scale_height: jax.Array = 8500.0
    """Density scale height of the exponential atmosphere, m."""
    rcs_torque_limit: jax.Array = 0.0
    """Largest reaction-control torque about each body axis, N m (with ``rcs=True``)."""
    planet_angular_velocity: jax.Array = struct.field(default_factory=_zero_vector)
    """Angular velocity of the planet in the world frame, rad/s, shape ``(3,)`` (with
    ``planet_rotation=True``)."""

    @property
    def exhaust_velocity(self) -> jax.Array:
        """Effective exhaust velocity ``isp * g0``, m/s."""
        return self.isp * STANDARD_GRAVITY


VECTOR_FIELDS = {"radius_of_gyration": 3, "planet_angular_velocity": 3}
"""Parameters that are vectors, with their lengths; every other parameter is a scalar."""

_UP = (0.0, 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class RigidBody(Vehicle):
    """A booster that translates and rotates freely in three dimensions.

    The action is ``(throttle, g_x command, g_y command)`` in rad, shape ``(3,)``, within
    ``[throttle_min, throttle_max]`` and ``[-gimbal_limit, gimbal_limit]``. With
    ``rcs=True`` it is followed by the body-frame torque ``(tau_x, tau_y, tau_z)`` in N m,
    shape ``(6,)`` in all. Drag and wind are skipped entirely unless ``drag=True``, and the
    Coriolis and centrifugal terms unless ``planet_rotation=True``.
    """

    drag: bool = False
    gimbal_lag: bool = False
    rcs: bool = False
    planet_rotation: bool = False

    kinematic_fields = ("position", "quaternion")
    constant_fields = ("wind",)
    component_tuples = True

    def __post_init__(self):
        # Without the actuator lag the gimbal angles never change, so an instance also
        # lists them, and the physics step carries them over instead of integrating
        # zeros. A subclass whose derivative moves them without the lag must undo this.
        if not self.gimbal_lag and "gimbal" not in self.constant_fields:
            object.__setattr__(self, "constant_fields", self.constant_fields + ("gimbal",))

    @property
    def action_size(self) -> int:
        """Length of the action vector: 3, or 6 with ``rcs=True``."""
        return 6 if self.rcs else 3

    def thrust(self, state: RigidBodyState, action: jax.Array, params: RigidBodyParams):
        """Return the thrust magnitude in N: zero once only dry mass is left."""
        throttle = jnp.clip(action[0], params.throttle_min, params.throttle_max)
        has_propellant = state.mass > params.dry_mass
        return jnp.where(has_propellant, throttle * params.max_thrust, 0.0)

    def gimbal_command(self, action: jax.Array, params: RigidBodyParams) -> jax.Array:
        """Return the commanded gimbal angles ``(g_x, g_y)`` clipped to the limit, rad."""
        return jnp.clip(action[1:3], -params.gimbal_limit, params.gimbal_limit)

    def gimbal_angles(self, state: RigidBodyState, action: jax.Array, params: RigidBodyParams):
        """Return the gimbal angles ``(g_x, g_y)`` acting now, rad."""
        if self.gimbal_lag:
            return state.gimbal
        return self.gimbal_command(action, params)

    def engine_force_and_torque(self, state, action, params) -> tuple[jax.Array, jax.Array]:
        """Return the engine force and its torque about the centre of mass, both in the
        body frame (N and N m)."""
        force, torque = self._engine(state, action, params)
        return jnp.stack(force), jnp.stack(torque)

    def _engine(self, state, action, params) -> tuple[components.Vector, components.Vector]:
        thrust = self.thrust(state, action, params)
        gimbal = components.split(self.gimbal_angles(state, action, params), 2)
        sin_x, cos_x = components.sin_cos(gimbal[0])
        sin_y, cos_y = components.sin_cos(gimbal[1])
        force = (thrust * (-sin_y * cos_x), thrust * sin_x, thrust * (cos_y * cos_x))
        # r_e x F_e with r_e = (0, 0, -l_e), written out without its zero terms.
        offset = params.engine_offset
        torque = (offset * force[1], -offset * force[0], jnp.zeros_like(force[2]))
        return components.shared((force, torque))

    def body_axis(self, state: RigidBodyState) -> jax.Array:
        """Return the body z axis (tail to nose) in the world frame, a unit vector."""
        return jnp.stack(components.body_z_axis(components.split(state.quaternion, 4)))

    def aerodynamics(self, state: RigidBodyState, params: RigidBodyParams):
        """Return the drag force in the world frame, N, and its torque in the body frame,
        N m."""
        force, torque = self._aerodynamics(state, params)
        return jnp.stack(force), jnp.stack(torque)

    def _aerodynamics(self, state, params) -> tuple[components.Vector, components.Vector]:
        velocity = components.split(state.velocity, 3)
        if not self.drag:
            zero = jnp.zeros_like(velocity[0])
            return (zero, zero, zero), (zero, zero, zero)
        quaternion = components.split(state.quaternion, 4)
        axis = components.body_z_axis(quaternion)
        height = components.split(state.position, 3)[2]
        wind = aero.wind_components(state.wind, height)
        density = aero.air_density(height, params.sea_level_density, params.scale_height)
        wind, density = components.shared((wind, density))
        relative = (velocity[0] - wind[0], velocity[1] - wind[1], velocity[2])
        axial, normal = aero.drag_force_components(
            relative,
            axis,
            density,
            params.axial_drag_coefficient,
            params.normal_drag_coefficient,
            params.reference_area,
        )
        lever = components.scale(params.pressure_center_offset, axis)
        torque_world = components.cross(lever, normal)
        force = components.add(axial, normal)
        return components.shared((force, components.inverse_rotate(quaternion, torque_world)))

    def rcs_torque(self, action: jax.Array, params: RigidBodyParams) -> jax.Array:
        """Return the reaction-control torque in the body frame, N m (zero without RCS)."""
        if not self.rcs:
            return jnp.zeros_like(action[:3])
        return jnp.clip(action[3:6], -params.rcs_torque_limit, params.rcs_torque_limit)

    def planet_acceleration(self, state: RigidBodyState, params: RigidBodyParams):
        """Return the Coriolis plus centrifugal acceleration in the world frame, m/s^2
        (zero without ``planet_rotation``)."""
        if not self.planet_rotation:
            return jnp.zeros_like(state.velocity)
        return jnp.stack(self._planet_acceleration(state, params))

    def _planet_acceleration(self, state, params) -> components.Vector:
        spin = components.split(params.planet_angular_velocity, 3)
        velocity = components.split(state.velocity, 3)
        position = components.split(state.position, 3)
        coriolis = components.scale(-2.0, components.cross(spin, velocity))
        centrifugal = components.cross(spin, components.cross(spin, position))
        centrifugal = components.scale(-1.0, centrifugal)
        return components.add(coriolis, centrifugal)

    def derivative(self, state, action, params):
        # Written on components (see diffland.dynamics.components), so the same code
        # serves one lander and a batch held as one array per component.
        quaternion = components.split(state.quaternion, 4)
        engine_force, engine_torque = self._engine(state, action, params)
        aero_force, aero_torque = self._aerodynamics(state, params)
        force = components.add(components.rotate(quaternion, engine_force), aero_force)
        # Products with 1/m rather than divisions by m: a vector division costs several
        # multiplications.
        inverse_mass = 1.0 / state.mass
        acceleration = (
            force[0] * inverse_mass,
            force[1] * inverse_mass,
            force[2] * inverse_mass - params.gravity,
        )
        if self.planet_rotation:
            acceleration = components.add(acceleration, self._planet_acceleration(state, params))

        # Euler's equations with I = m diag(k^2): domega/dt = I^-1 tau - I^-1 (omega x I omega),
        # and m cancels in the second term.
        radius = components.split(params.radius_of_gyration, 3)
        squared_radius = tuple(k**2 for k in radius)
        omega = components.split(state.angular_velocity, 3)
        torque = components.add(engine_torque, aero_torque)
        if self.rcs:
            torque = components.add(torque, components.split(self.rcs_torque(action, params), 3))
        gyroscopic = components.cross(
            omega, tuple(k2 * w for k2, w in zip(squared_radius, omega, strict=True))
        )
        angular_acceleration = tuple(
            (t * inverse_mass - g) * (1.0 / k2)
            for t, g, k2 in zip(torque, gyroscopic, squared_radius, strict=True)
        )

        gimbal = components.split(state.gimbal, 2)
        if self.gimbal_lag:
            command = components.split(self.gimbal_command(action, params), 2)
            slew = params.gimbal_rate_limit * params.gimbal_time_constant
            gimbal_rate = tuple(
                params.gimbal_rate_limit * jnp.tanh((c - g) / slew)
                for c, g in zip(command, gimbal, strict=True)
            )
        else:
            gimbal_rate = tuple(jnp.zeros_like(g) for g in gimbal)

        thrust = self.thrust(state, action, params)
        return RigidBodyState(
            position=state.velocity,
            velocity=components.pack(state.velocity, acceleration),
            quaternion=components.pack(
                state.quaternion, components.quaternion_rate(quaternion, omega)
            ),
            angular_velocity=components.pack(state.angular_velocity, angular_acceleration),
            mass=-thrust / params.exhaust_velocity,
            gimbal=components.pack(state.gimbal, gimbal_rate),
            wind=jax.tree_util.tree_map(jnp.zeros_like, state.wind),
        )

    def project(self, state, params):
        """Normalise the quaternion and floor the mass at the dry mass.

        The integrators do not keep ``|q| = 1``, so this projection after every step is
        what keeps the attitude a rotation.
        """
        quaternion = components.split(state.quaternion, 4)
        return state.replace(
            quaternion=components.pack(
                state.quaternion, components.normalize_quaternion(quaternion)
            ),
            mass=jnp.maximum(state.mass, params.dry_mass),
        )

    def _tilt(self, state: RigidBodyState) -> tuple[jax.Array, jax.Array]:
        """Return ``(cos(tilt), sin(tilt))`` with the tilt of the body axis from the
        vertical in [0, pi]; ``sin`` has a zero subgradient when upright."""
        axis = components.body_z_axis(components.split(state.quaternion, 4))
        return axis[2], components.safe_norm(axis[:2])

    def height(self, state, params):
        cos_tilt, sin_tilt = self._tilt(state)
        return landing_gear.footprint_height(
            components.split(state.position, 3)[2],
            cos_tilt,
            sin_tilt,
            params.com_height,
            params.leg_radius,
        )

    def action_bounds(self, params):
        gimbal = params.gimbal_limit
        low = [params.throttle_min, -gimbal, -gimbal]
        high = [params.throttle_max, gimbal, gimbal]
        if self.rcs:
            torque = params.rcs_torque_limit
            low += [-torque, -torque, -torque]
            high += [torque, torque, torque]
        return jnp.stack(low), jnp.stack(high)

    def touchdown_speed(self, state, params):
        del params
        return jnp.abs(state.velocity[2])

    def touchdown_measures(self, state, params):
        cos_tilt, sin_tilt = self._tilt(state)
        lateral = safe_norm(state.velocity[:2])
        rate = safe_norm(state.angular_velocity)
        transverse_radius = jnp.maximum(params.radius_of_gyration[0], params.radius_of_gyration[1])
        return TouchdownMeasures(
            vertical_speed=jnp.abs(state.velocity[2]),
            lateral_speed=lateral,
            tilt=jnp.arctan2(sin_tilt, cos_tilt),
            angular_rate=rate,
            pad_distance=safe_norm(state.position[:2]),
            tip_over=landing_gear.tip_over_measure(
                lateral,
                rate,
                cos_tilt,
                sin_tilt,
                state.mass,
                state.mass * transverse_radius**2,
                params.gravity,
                params.com_height,
                params.leg_radius,
            ),
        )

    def propellant_mass(self, state, params):
        return jnp.maximum(state.mass - params.dry_mass, 0.0)

    def max_deceleration(self, state: RigidBodyState, params: RigidBodyParams) -> jax.Array:
        """Return the net upward acceleration at full throttle when upright, m/s^2."""
        return params.throttle_max * params.max_thrust / state.mass - params.gravity

    def observation(self, state, params):
        """Return eighteen scaled features.

        The features are, in order: horizontal position (x, y) in hm, height of the feet
        in km, horizontal velocity in 10 m/s and vertical velocity in hm/s. Then come the
        body axis in the world frame minus (0, 0, 1), the body-frame angular velocity in
        rad/s, the two gimbal angles over their limit and the propellant in 10 t. The
        last three are the hover throttle ``m g / T_max``, the deceleration needed to
        stop at the ground ``vz^2 / (2 h)`` over the full-throttle deceleration (clipped
        to [0, 5]), and ``sqrt(h) / 30``.
        """
        height = self.height(state, params)
        above = jnp.maximum(height, 0.0)
        vertical_velocity = state.velocity[2]
        needed = vertical_velocity**2 / (2.0 * jnp.maximum(above, 1.0))
        available = jnp.maximum(self.max_deceleration(state, params), 1e-3)
        tilt = self.body_axis(state) - jnp.asarray(_UP, state.quaternion.dtype)
        scalars = jnp.stack(
            [
                self.propellant_mass(state, params) / 1.0e4,
                state.mass * params.gravity / params.max_thrust,
                jnp.clip(needed / available, 0.0, 5.0),
                jnp.sqrt(above + 1e-6) / 30.0,
            ]
        )
        return jnp.concatenate(
            [
                state.position[:2] / 100.0,
                (height / 1000.0)[None],
                state.velocity[:2] / 10.0,
                (vertical_velocity / 100.0)[None],
                tilt,
                state.angular_velocity,
                state.gimbal / params.gimbal_limit,
                scalars,
            ]
        )

    def validate(self, state, params):
        validate_rigid_body_params(params)
        if self.rcs and is_concrete(params):
            limit = jnp.asarray(params.rcs_torque_limit)
            if bool(jnp.any(limit <= 0)):
                raise ValueError(
                    f"params.rcs_torque_limit = {_show(limit)} N m, but RigidBody(rcs=True) "
                    "needs a positive limit (its torque bounds would be empty). Pass "
                    "rcs_torque_limit > 0 or use RigidBody(rcs=False)."
                )
        validate_rigid_body_state(state, params, self)


def _check_trailing_size(value, size: int, name: str) -> None:
    """Raise ``ValueError`` unless the last axis of ``value`` has length ``size``."""
    shape = jnp.shape(value)
    if not shape or shape[-1] != size:
        raise ValueError(
            f"{name} has shape {shape}, but its last axis must have length {size}; pass "
            f"{size} numbers per lander."
        )


def validate_rigid_body_params(params: RigidBodyParams) -> None:
    """Raise ``ValueError`` for invalid 6-DOF booster parameters, naming the value."""
    if not is_concrete(params):
        return
    for name, size in VECTOR_FIELDS.items():
        _check_trailing_size(getattr(params, name), size, f"params.{name}")
    validate_rigid_params(
        params, positive=_POSITIVE, non_negative=_NON_NEGATIVE + ("rcs_torque_limit",)
    )


def validate_quaternion(quaternion, name: str = "state.quaternion") -> None:
    """Raise ``ValueError`` unless every quaternion has a norm within
    :data:`QUATERNION_NORM_TOLERANCE` of 1."""
    _check_trailing_size(quaternion, 4, name)
    norm = np.linalg.norm(np.asarray(quaternion, dtype=np.float64), axis=-1)
    if np.any(norm < 1e-6):
        raise ValueError(
            f"{name} = {_show(quaternion)} has norm {_show(norm)}: a zero quaternion is no "
            "attitude. Pass a unit quaternion (w, x, y, z), for example (1, 0, 0, 0) for "
            "upright, or build one with rotation.from_axis_angle."
        )
    if np.any(np.abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE):
        raise ValueError(
            f"{name} = {_show(quaternion)} has norm {_show(norm)}, but an attitude must be "
            "a unit quaternion (w, x, y, z). Divide it by its norm or build it with "
            "rotation.from_axis_angle."
        )


def lander_axes(params: RigidBodyParams, count: int) -> RigidBodyParams:
    """Return the ``vmap`` axes of ``params`` over a batch of ``count`` landers.

    A field with one more axis than its own shape (``()``, or ``(3,)`` for the
    :data:`VECTOR_FIELDS`) contains one value per lander and maps over axis 0, as in
    episodes with randomised parameters. Any other field is shared (None). Raises
    ``ValueError`` when a per-lander field's leading axis is not ``count`` long.
    """
    axes = {}
    for field in dataclasses.fields(params):
        value = getattr(params, field.name)
        own_ndim = 1 if field.name in VECTOR_FIELDS else 0
        if jnp.ndim(value) <= own_ndim:
            axes[field.name] = None
            continue
        if jnp.shape(value)[0] != count:
            raise ValueError(
                f"params.{field.name} has shape {jnp.shape(value)}, so it contains "
                f"{jnp.shape(value)[0]} per-lander values, but the batch has {count} "
                "landers. Pass one value per lander, or one value for all of them."
            )
        axes[field.name] = 0
    return type(params)(**axes)


def validate_rigid_body_state(state: RigidBodyState, params: RigidBodyParams, vehicle=None):
    """Raise ``ValueError`` for a non-finite state, wrong shapes, a quaternion that is not
    of unit norm, a bad mass or feet at or below the ground.

    For a batch of states, each parameter may be shared or contain one value per lander
    (see :func:`lander_axes`). Each lander is then checked with its own parameters.
    """
    if not is_concrete((state, params)):
        return
    check_finite_tree(state, "state")
    sizes = {"position": 3, "velocity": 3, "quaternion": 4, "angular_velocity": 3, "gimbal": 2}
    for name, size in sizes.items():
        _check_trailing_size(getattr(state, name), size, f"state.{name}")
    _check_trailing_size(state.wind.steady, 2, "state.wind.steady")
    validate_quaternion(state.quaternion)
    vehicle = vehicle or RigidBody()
    if jnp.ndim(state.mass):
        params_axes = lander_axes(params, jnp.shape(state.mass)[0])
        height = jax.vmap(vehicle.height, in_axes=(0, params_axes))(state, params)
    else:
        height = vehicle.height(state, params)
    validate_mass_and_height(state.mass, height, params)


def _check_number(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} = {value!r} is invalid: pass a real number.")
    if math.isnan(float(value)):
        raise ValueError(f"{name} = {value!r} is NaN; pass a finite real number.")


def _check_dtype(dtype) -> None:
    if dtype is not None and not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"dtype = {jnp.dtype(dtype).name} is invalid: pass a floating-point dtype."
        )


def make_rigid_body_params(*, dtype=None, **values) -> RigidBodyParams:
    """Build and validate :class:`RigidBodyParams` from plain numbers (keyword arguments
    named as its fields; ``radius_of_gyration`` and ``planet_angular_velocity`` take
    three numbers each)."""
    _check_dtype(dtype)

    fields = dataclasses.fields(RigidBodyParams)
    names = {field.name for field in fields}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown rigid-body parameters {unknown}; valid names: {sorted(names)}.")
    for name, value in values.items():
        size = VECTOR_FIELDS.get(name)
        if size is None:
            _check_number(name, value)
            continue
        entries = list(np.ravel(value)) if np.ndim(value) else [value]
        if np.ndim(value) != 1 or len(entries) != size:
            raise ValueError(f"{name} = {value!r} is invalid: pass {size} real numbers.")
        for index, entry in enumerate(entries):
            _check_number(f"{name}[{index}]", entry)

    missing = sorted(
        field.name
        for field in fields
        if field.name not in values
        and field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    )
    if missing:
        raise ValueError(f"missing rigid-body parameters {missing}.")

    params = RigidBodyParams(**values)
    # Convert field by field: tree_map would descend into tuples given for vector fields.
    params = params.replace(
        **{field.name: jnp.asarray(getattr(params, field.name), dtype) for field in fields}
    )
    validate_rigid_body_params(params)
    return params


def make_rigid_body_state(
    position,
    velocity,
    mass,
    quaternion=(1.0, 0.0, 0.0, 0.0),
    angular_velocity=(0.0, 0.0, 0.0),
    gimbal=(0.0, 0.0),
    wind=None,
    dtype=None,
) -> RigidBodyState:
    """Build a :class:`RigidBodyState` from numbers (by default upright, not rotating
    and in calm air).

    Checks the shapes and, for concrete values, that the quaternion has unit norm. For a
    batch, build the single states and stack them, or vmap this function.
    """
    _check_dtype(dtype)

    def as_array(value):
        return jnp.asarray(value, dtype=dtype)

    state = RigidBodyState(
        position=as_array(position),
        velocity=as_array(velocity),
        quaternion=as_array(quaternion),
        angular_velocity=as_array(angular_velocity),
        mass=as_array(mass),
        gimbal=as_array(gimbal),
        wind=wind if wind is not None else aero.calm(2, dtype=as_array(0.0).dtype),
    )
    sizes = {"position": 3, "velocity": 3, "quaternion": 4, "angular_velocity": 3, "gimbal": 2}
    for name, size in sizes.items():
        _check_trailing_size(getattr(state, name), size, name)
    if jnp.ndim(state.mass) != 0:
        raise ValueError(f"mass has shape {jnp.shape(state.mass)}; pass one number (kg).")
    if is_concrete(state.quaternion):
        validate_quaternion(state.quaternion, "quaternion")
    return state
