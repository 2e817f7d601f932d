"""The planar booster: three degrees of freedom (horizontal, vertical, pitch) and mass.

Frame and signs (z up, x horizontal). The pitch ``theta`` is the angle of the body axis
(tail to nose) from the vertical, positive when the nose leans towards +x. The body axis
is ``b = (sin theta, cos theta)``. This is a rotation about +y, so the 6-DOF model with
motion in the x-z plane has the same pitch. A positive gimbal angle ``delta`` turns the
thrust to ``(sin(theta - delta), cos(theta - delta))``, which pushes the tail towards -x
and makes a positive pitching torque.

Equations of motion::

    dx/dt = vx,  dz/dt = vz,  dtheta/dt = omega
    m dvx/dt = T sin(theta - delta) + Fx
    m dvz/dt = T cos(theta - delta) + Fz - m g
    I(m) domega/dt = l_e T sin(delta) + tau_aero
    dm/dt = -T / (Isp g0)

with thrust ``T = throttle * max_thrust`` while propellant remains (zero at the dry mass),
the engine mount at ``l_e`` below the centre of mass, and drag ``F`` from
:mod:`diffland.dynamics.aero` in the wind of the lander's height. The normal drag acts
at the centre of pressure ``l_cp`` above the centre of mass along the body axis.

Moment of inertia. ``I(m) = m k^2`` with a constant radius of gyration ``k``: the inertia
scales with the mass as propellant burns. Two simplifications are documented here: the
centre of mass does not move along the body as the tanks empty, and the jet-damping and
``dI/dt omega`` terms of variable-mass rigid-body dynamics are left out (both are small
over a landing burn of a few tonnes).

Gimbal actuator. With ``gimbal_lag=False`` the commanded angle acts at once. With
``gimbal_lag=True`` the angle is a state that follows the command as a first-order lag
with time constant ``tau``, its rate saturated smoothly at ``rate_limit``::

    ddelta/dt = rate_limit * tanh((delta_cmd - delta) / (tau * rate_limit))

Throttle build-up. With ``throttle_lag=False`` (the default) the commanded throttle acts
at once. With ``throttle_lag=True`` the throttle that makes thrust is a state that
follows the command as a first-order lag with time constant ``tau_T``
(``throttle_time_constant``)::

    dthrottle/dt = (throttle_cmd - throttle) / tau_T

so after a step of the command the throttle covers ``1 - exp(-t / tau_T)`` of the step.

Engine misalignment. ``engine_misalignment`` (rad, default zero) is a fixed offset of the
thrust line from the gimbal's commanded direction, as if the gimbal angle were
``delta + misalignment``. A positive offset pushes the tail towards -x and makes a
positive pitching torque ``l_e T sin(delta + misalignment)``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import jax
import jax.numpy as jnp
from flax import struct

from diffland.dynamics import aero, components, landing_gear
from diffland.dynamics.base import (
    STANDARD_GRAVITY,
    TouchdownMeasures,
    Vehicle,
    check_finite_tree,
    is_concrete,
)
from diffland.dynamics.vertical import _show


@struct.dataclass
class PlanarState:
    """State of one planar booster; scalar fields have shape ``()``."""

    x: jax.Array
    """Horizontal position of the centre of mass, m (the pad centre is at x = 0)."""
    z: jax.Array
    """Height of the centre of mass above the ground, m."""
    pitch: jax.Array
    """Angle of the body axis from the vertical, rad (positive: nose towards +x)."""
    vx: jax.Array
    """Horizontal velocity, m/s."""
    vz: jax.Array
    """Vertical velocity, m/s (negative in a descent)."""
    pitch_rate: jax.Array
    """d(pitch)/dt, rad/s."""
    mass: jax.Array
    """Total mass, kg."""
    gimbal: jax.Array
    """Engine gimbal angle, rad; a state only with ``gimbal_lag=True``, otherwise constant."""
    wind: aero.Wind
    """Wind this lander meets (one horizontal axis); constant along a rollout."""
    throttle: jax.Array | None = None
    """Throttle that makes thrust now, fraction of ``max_thrust``; a state only with
    ``throttle_lag=True``. None otherwise, so the state has no such leaf."""


@struct.dataclass
class PlanarParams:
    """Physical parameters of a planar booster; every field has shape ``()``."""

    gravity: jax.Array
    """Magnitude of the gravitational acceleration, m/s^2."""
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
    """Largest gimbal angle either way, rad."""
    engine_offset: jax.Array
    """Distance from the centre of mass down the body axis to the gimbal point, m."""
    radius_of_gyration: jax.Array
    """k in ``I = m k^2`` about the pitch axis through the centre of mass, m."""
    com_height: jax.Array
    """Distance from the centre of mass down the body axis to the plane of the feet, m."""
    leg_radius: jax.Array
    """Half the span of the landing legs, m."""
    gimbal_time_constant: jax.Array = 0.1
    """Time constant of the gimbal actuator lag, s (with ``gimbal_lag=True``)."""
    gimbal_rate_limit: jax.Array = 0.35
    """Largest gimbal slew rate, rad/s (with ``gimbal_lag=True``)."""
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
    engine_misalignment: jax.Array = 0.0
    """Fixed offset of the thrust line from the commanded gimbal direction, rad (positive
    in the sense of a positive gimbal angle)."""
    throttle_time_constant: jax.Array = 0.2
    """Time constant of the throttle build-up lag, s (with ``throttle_lag=True``)."""

    @property
    def exhaust_velocity(self) -> jax.Array:
        """Effective exhaust velocity ``isp * g0``, m/s."""
        return self.isp * STANDARD_GRAVITY


def planar_torque(lever: jax.Array, force: jax.Array) -> jax.Array:
    """Return the pitching torque (positive towards +pitch) of ``force`` applied at
    ``lever`` from the centre of mass, both ``(x, z)`` vectors (arrays or tuples of
    components): ``F_x r_z - F_z r_x``."""
    return force[0] * lever[1] - force[1] * lever[0]


@dataclasses.dataclass(frozen=True)
class PlanarBooster(Vehicle):
    """A booster that moves in the vertical x-z plane and pitches about y.

    The action is ``(throttle, gimbal command in rad)``, shape ``(2,)``, within
    ``[throttle_min, throttle_max]`` and ``[-gimbal_limit, gimbal_limit]``. Drag and wind
    are skipped entirely unless ``drag=True``. With ``throttle_lag=True`` the state needs
    a ``throttle`` array (see :func:`make_planar_state`).
    """

    drag: bool = False
    gimbal_lag: bool = False
    throttle_lag: bool = False

    kinematic_fields = ("x", "z", "pitch")
    constant_fields = ("wind",)
    component_tuples = True
    action_size = 2

    def thrust(self, state: PlanarState, action: jax.Array, params: PlanarParams) -> jax.Array:
        """Return the thrust magnitude in N: zero once only dry mass is left."""
        if self.throttle_lag:
            throttle = state.throttle
        else:
            throttle = jnp.clip(action[0], params.throttle_min, params.throttle_max)
        has_propellant = state.mass > params.dry_mass
        return jnp.where(has_propellant, throttle * params.max_thrust, 0.0)

    def gimbal_angle(self, state: PlanarState, action: jax.Array, params: PlanarParams):
        """Return the gimbal angle acting now, rad."""
        if self.gimbal_lag:
            return state.gimbal
        return jnp.clip(action[1], -params.gimbal_limit, params.gimbal_limit)

    def body_axis(self, state: PlanarState) -> jax.Array:
        """Return the unit body axis ``(sin theta, cos theta)``."""
        return jnp.stack(self._body_axis(state))

    def _body_axis(self, state: PlanarState) -> components.Vector:
        return components.sin_cos(state.pitch)

    def aerodynamics(self, state: PlanarState, params: PlanarParams):
        """Return the drag force ``(Fx, Fz)`` in N and its pitching torque in N m."""
        force, torque = self._aerodynamics(state, params)
        return jnp.stack(force), torque

    def _aerodynamics(self, state, params) -> tuple[components.Vector, jax.Array]:
        # Written on components: with (x, z) pairs stacked into arrays, XLA repeated the
        # drag in several concatenation loops, and the batched planar step with drag ran
        # 14 times slower (2-core AVX-512 Xeon, jax 0.10.2).
        if not self.drag:
            zero = jnp.zeros_like(state.x)
            return (zero, zero), zero
        axis = self._body_axis(state)
        wind = aero.wind_components(state.wind, state.z)[0]
        density = aero.air_density(state.z, params.sea_level_density, params.scale_height)
        axis, wind, density = components.shared((axis, wind, density))
        axial, normal = aero.drag_force_components(
            (state.vx - wind, state.vz),
            axis,
            density,
            params.axial_drag_coefficient,
            params.normal_drag_coefficient,
            params.reference_area,
        )
        lever = components.scale(params.pressure_center_offset, axis)
        torque = planar_torque(lever, normal)
        return components.shared((components.add(axial, normal), torque))

    def derivative(self, state, action, params):
        thrust = self.thrust(state, action, params)
        # The misalignment adds to the gimbal angle; zero leaves both sums exact.
        delta = self.gimbal_angle(state, action, params) + params.engine_misalignment
        direction = state.pitch - delta
        force, aero_torque = self._aerodynamics(state, params)
        inertia = state.mass * params.radius_of_gyration**2
        torque = params.engine_offset * thrust * components.sin_cos(delta)[0] + aero_torque
        if self.gimbal_lag:
            command = jnp.clip(action[1], -params.gimbal_limit, params.gimbal_limit)
            slew = params.gimbal_rate_limit * params.gimbal_time_constant
            gimbal_rate = params.gimbal_rate_limit * jnp.tanh((command - state.gimbal) / slew)
        else:
            gimbal_rate = jnp.zeros_like(state.gimbal)
        sin_direction, cos_direction = components.sin_cos(direction)
        throttle_rate = None
        if self.throttle_lag:
            command = jnp.clip(action[0], params.throttle_min, params.throttle_max)
            throttle_rate = (command - state.throttle) / params.throttle_time_constant
        return PlanarState(
            x=state.vx,
            z=state.vz,
            pitch=state.pitch_rate,
            vx=(thrust * sin_direction + force[0]) / state.mass,
            vz=(thrust * cos_direction + force[1]) / state.mass - params.gravity,
            pitch_rate=torque / inertia,
            mass=-thrust / params.exhaust_velocity,
            gimbal=gimbal_rate,
            wind=jax.tree_util.tree_map(jnp.zeros_like, state.wind),
            throttle=throttle_rate,
        )

    def project(self, state, params):
        return state.replace(mass=jnp.maximum(state.mass, params.dry_mass))

    def _tilt(self, state: PlanarState) -> tuple[jax.Array, jax.Array]:
        """Return ``(cos(tilt), sin(tilt))`` with the tilt from the vertical in [0, pi]."""
        sine, cosine = components.sin_cos(state.pitch)
        return cosine, jnp.abs(sine)

    def height(self, state, params):
        cos_tilt, sin_tilt = self._tilt(state)
        return landing_gear.footprint_height(
            state.z, cos_tilt, sin_tilt, params.com_height, params.leg_radius
        )

    def action_bounds(self, params):
        return (
            jnp.stack([params.throttle_min, -params.gimbal_limit]),
            jnp.stack([params.throttle_max, params.gimbal_limit]),
        )

    def touchdown_speed(self, state, params):
        del params
        return jnp.abs(state.vz)

    def touchdown_measures(self, state, params):
        cos_tilt, sin_tilt = self._tilt(state)
        lateral = jnp.abs(state.vx)
        rate = jnp.abs(state.pitch_rate)
        return TouchdownMeasures(
            vertical_speed=jnp.abs(state.vz),
            lateral_speed=lateral,
            tilt=jnp.arctan2(sin_tilt, cos_tilt),
            angular_rate=rate,
            pad_distance=jnp.abs(state.x),
            tip_over=landing_gear.tip_over_measure(
                lateral,
                rate,
                cos_tilt,
                sin_tilt,
                state.mass,
                state.mass * params.radius_of_gyration**2,
                params.gravity,
                params.com_height,
                params.leg_radius,
            ),
        )

    def propellant_mass(self, state, params):
        return jnp.maximum(state.mass - params.dry_mass, 0.0)

    def max_deceleration(self, state: PlanarState, params: PlanarParams) -> jax.Array:
        """Return the net upward acceleration at full throttle when upright, m/s^2."""
        return params.throttle_max * params.max_thrust / state.mass - params.gravity

    def observation(self, state, params):
        """Return twelve scaled features.

        Kinematics: horizontal position in hm, height of the feet in km, horizontal
        velocity in 10 m/s, vertical velocity in hm/s, sine and cosine of the pitch minus
        (0, 1), and pitch rate in rad/s. Vehicle: gimbal angle over its limit,
        propellant in 10 t, and the hover throttle ``m g / T_max``. Braking: the
        deceleration needed to stop at the ground ``vz^2 / (2 h)`` over the
        full-throttle deceleration (clipped to [0, 5]), and ``sqrt(h) / 30``.
        """
        height = self.height(state, params)
        above = jnp.maximum(height, 0.0)
        needed = state.vz**2 / (2.0 * jnp.maximum(above, 1.0))
        available = jnp.maximum(self.max_deceleration(state, params), 1e-3)
        sine, cosine = components.sin_cos(state.pitch)
        return jnp.stack(
            [
                state.x / 100.0,
                height / 1000.0,
                state.vx / 10.0,
                state.vz / 100.0,
                sine,
                cosine - 1.0,
                state.pitch_rate,
                state.gimbal / params.gimbal_limit,
                self.propellant_mass(state, params) / 1.0e4,
                state.mass * params.gravity / params.max_thrust,
                jnp.clip(needed / available, 0.0, 5.0),
                jnp.sqrt(above + 1e-6) / 30.0,
            ]
        )

    def validate(self, state, params):
        validate_planar_params(params)
        validate_planar_state(state, params, self)
        validate_throttle_state(state, params, self.throttle_lag)


_POSITIVE = (
    "gravity",
    "max_thrust",
    "isp",
    "dry_mass",
    "gimbal_limit",
    "radius_of_gyration",
    "gimbal_time_constant",
    "gimbal_rate_limit",
    "scale_height",
    "leg_radius",
)
_NON_NEGATIVE = (
    "engine_offset",
    "com_height",
    "axial_drag_coefficient",
    "normal_drag_coefficient",
    "reference_area",
    "sea_level_density",
)


def validate_rigid_params(params, positive=_POSITIVE, non_negative=_NON_NEGATIVE) -> None:
    """Raise ``ValueError`` naming the value and the fix for invalid booster parameters.

    Shared by the planar and 6-DOF boosters, whose parameters have the same names.
    """
    if not is_concrete(params):
        return
    check_finite_tree(params, "params")
    for name in positive:
        value = jnp.asarray(getattr(params, name))
        if bool(jnp.any(value <= 0)):
            raise ValueError(f"params.{name} = {_show(value)} must be positive.")
    for name in non_negative:
        value = jnp.asarray(getattr(params, name))
        if bool(jnp.any(value < 0)):
            raise ValueError(f"params.{name} = {_show(value)} must be zero or positive.")
    low = jnp.asarray(params.throttle_min)
    high = jnp.asarray(params.throttle_max)
    if bool(jnp.any(low < 0)) or bool(jnp.any(low >= high)):
        raise ValueError(
            f"throttle bounds [{_show(low)}, {_show(high)}] must satisfy "
            "0 <= throttle_min < throttle_max; pass them in that order."
        )
    limit = jnp.asarray(params.gimbal_limit)
    if bool(jnp.any(limit >= math.pi / 2)):
        raise ValueError(
            f"params.gimbal_limit = {_show(limit)} rad must be below pi/2; pass the largest "
            "gimbal deflection in radians (5 degrees is 0.0873)."
        )


def validate_planar_params(params: PlanarParams) -> None:
    """Raise ``ValueError`` for invalid planar-booster parameters."""
    validate_rigid_params(params)
    if not is_concrete(params):
        return
    tau = jnp.asarray(params.throttle_time_constant)
    if bool(jnp.any(tau <= 0)):
        raise ValueError(
            f"params.throttle_time_constant = {_show(tau)} s must be positive; pass the time "
            "constant of the throttle build-up (it is used only with throttle_lag=True)."
        )
    offset = jnp.asarray(params.engine_misalignment)
    if bool(jnp.any(jnp.abs(offset) >= math.pi / 2)):
        raise ValueError(
            f"params.engine_misalignment = {_show(offset)} rad must lie within (-pi/2, pi/2); "
            "pass the offset of the thrust line in radians (0.5 degrees is 0.0087)."
        )


def validate_throttle_state(state: PlanarState, params: PlanarParams, throttle_lag: bool) -> None:
    """Raise ``ValueError`` when the ``throttle`` state field does not suit ``throttle_lag``."""
    if throttle_lag and state.throttle is None:
        raise ValueError(
            "the booster has throttle_lag=True but state.throttle is None; pass the throttle "
            "at the start, for example make_planar_state(..., throttle=0.4)."
        )
    if not throttle_lag and state.throttle is not None:
        raise ValueError(
            "state.throttle is set but the booster has throttle_lag=False, so it would be "
            "ignored; build the state with throttle=None or the booster with throttle_lag=True."
        )
    if state.throttle is None or not is_concrete((state.throttle, params)):
        return
    throttle = jnp.asarray(state.throttle)
    low = jnp.asarray(params.throttle_min)
    high = jnp.asarray(params.throttle_max)
    if bool(jnp.any((throttle < low) | (throttle > high))):
        raise ValueError(
            f"state.throttle = {_show(throttle)} lies outside the throttle bounds "
            f"[{_show(low)}, {_show(high)}]; start the throttle within them."
        )


def validate_mass_and_height(mass, height, params) -> None:
    """Raise ``ValueError`` for a mass outside ``[dry_mass, inf)`` or feet at or below
    the ground."""
    mass = jnp.asarray(mass)
    if bool(jnp.any(mass <= 0)):
        raise ValueError(f"state.mass = {_show(mass)} must be positive (kg).")
    dry = jnp.asarray(params.dry_mass)
    if bool(jnp.any(mass < dry)):
        raise ValueError(
            f"state.mass = {_show(mass)} kg is below params.dry_mass = {_show(dry)} kg; the "
            "propellant would be negative. Lower dry_mass or raise the initial mass."
        )
    height = jnp.asarray(height)
    if bool(jnp.any(height <= 0)):
        raise ValueError(
            f"the feet start at height {_show(height)} m: a lander must start above the "
            "ground (raise the start height above com_height), or touchdown cannot be "
            "detected."
        )


def validate_planar_state(state: PlanarState, params: PlanarParams, vehicle=None) -> None:
    """Raise ``ValueError`` for a non-finite state, a bad mass or feet below the ground."""
    if not is_concrete((state, params)):
        return
    check_finite_tree(state, "state")
    vehicle = vehicle or PlanarBooster()
    if jnp.ndim(state.z):
        # Parameters drawn per lander (domain randomisation) carry the batch axis too.
        params_axes = jax.tree_util.tree_map(lambda leaf: 0 if jnp.ndim(leaf) else None, params)
        height = jax.vmap(vehicle.height, in_axes=(0, params_axes))(state, params)
    else:
        height = vehicle.height(state, params)
    validate_mass_and_height(state.mass, height, params)


def make_planar_params(*, dtype=None, **values) -> PlanarParams:
    """Build and validate :class:`PlanarParams` from plain numbers (keyword arguments
    named as its fields)."""
    names = {field.name for field in dataclasses.fields(PlanarParams)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown planar parameters {unknown}; valid names: {sorted(names)}.")
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{name} = {value!r} is invalid: pass a real number.")
        if math.isnan(float(value)):
            raise ValueError(f"{name} = {value!r} is NaN; pass a finite real number.")
    missing = sorted(
        field.name
        for field in dataclasses.fields(PlanarParams)
        if field.name not in values and field.default is dataclasses.MISSING
    )
    if missing:
        raise ValueError(f"missing planar parameters {missing}.")
    params = PlanarParams(**{k: jnp.asarray(v, dtype=dtype) for k, v in values.items()})
    params = jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf, dtype=dtype), params)
    validate_planar_params(params)
    return params


def make_planar_state(
    x,
    z,
    vx,
    vz,
    mass,
    pitch=0.0,
    pitch_rate=0.0,
    gimbal=0.0,
    wind=None,
    dtype=None,
    throttle=None,
) -> PlanarState:
    """Build a :class:`PlanarState` from numbers (calm air unless ``wind`` is given).

    ``throttle`` is the throttle at the start for a booster with ``throttle_lag=True``;
    leave it None otherwise.

    For a batch, build the single states and stack them, or vmap this function.
    """

    def as_array(value):
        return jnp.asarray(value, dtype=dtype)

    state = PlanarState(
        x=as_array(x),
        z=as_array(z),
        pitch=as_array(pitch),
        vx=as_array(vx),
        vz=as_array(vz),
        pitch_rate=as_array(pitch_rate),
        mass=as_array(mass),
        gimbal=as_array(gimbal),
        wind=wind if wind is not None else aero.calm(1, dtype=as_array(0.0).dtype),
        throttle=None if throttle is None else as_array(throttle),
    )
    return state
