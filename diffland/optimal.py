"""The 1-D fuel-optimal landing burn for an engine that stays lit within its throttle bounds.

For vertical flight with the engine lit between ``T_min`` and ``T_max`` from ignition to
touchdown, the minimum-propellant landing burns at ``T_min`` and switches once to
``T_max`` so that the speed and the altitude reach zero together. This is the bang-bang
solution of the rocket landing problem without drag. With drag on, the same one-switch
family is searched, which is a restriction, not a proof of optimality.

The switch time is the root of ``g(t_s)``, the altitude at which the descent stops when
switching at ``t_s``. The function ``g`` is evaluated on the vehicle's own equations of
motion with RK4: 64 steps over the minimum-thrust phase, then fixed steps of ``dt`` over
the full-thrust phase. The stopping point is found by cubic Hermite interpolation inside
the step where the velocity changes sign. The root is bracketed in ``[0, 2 h0 / |v0|]``
(under minimum thrust the booster reaches the ground before that time, or not at all)
and found by the Illinois variant of regula falsi.

The propellant limit is lifted while searching (the dry mass is set to 1 kg), so the
result is the propellant the burn needs, which can be compared with what is on board.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from diffland.dynamics.integrators import RK4
from diffland.dynamics.simulate import crossing_fraction
from diffland.dynamics.vertical import VerticalLander, VerticalParams, VerticalState

_PHASE_ONE_STEPS = 64
_ROOT_ITERATIONS = 30


@struct.dataclass
class OptimalBurn:
    """The fuel-optimal burn from one start state; every field has shape ``()``."""

    switch_time: jax.Array
    """Time of the switch from minimum to maximum throttle after ignition, s."""
    burn_time: jax.Array
    """Time from ignition to the stop at the ground, s."""
    propellant: jax.Array
    """Propellant used, kg."""
    feasible: jax.Array
    """False when even full thrust from ignition cannot stop above the ground, or minimum
    thrust stops the descent before the ground."""
    stop_altitude: jax.Array
    """Altitude where the velocity reaches zero at the returned switch time, m (near 0)."""


def _integrate(vehicle, state, throttle, params, dt, steps):
    action = jnp.reshape(throttle, (1,))

    def body(s, _):
        nxt = RK4().step(vehicle, s, action, params, dt)
        return nxt, (s, nxt)

    return jax.lax.scan(body, state, None, length=steps)


def _hermite(y0, y1, dy0, dy1, s):
    """Cubic Hermite interpolation on the unit interval; dy are per-interval derivatives."""
    s2, s3 = s * s, s * s * s
    return (
        (2 * s3 - 3 * s2 + 1) * y0
        + (s3 - 2 * s2 + s) * dy0
        + (-2 * s3 + 3 * s2) * y1
        + (s3 - s2) * dy1
    )


def stop_state(
    vehicle: VerticalLander,
    state: VerticalState,
    params: VerticalParams,
    switch_time: jax.Array,
    dt: float,
    max_burn: float,
) -> tuple[VerticalState, jax.Array]:
    """Return the state where the descent stops (velocity zero) and the time of the stop.

    Minimum throttle until ``switch_time``, maximum throttle after it. If the velocity
    has not reached zero within ``max_burn`` seconds of full thrust, the state at the end
    is returned.
    """
    switch_time = jnp.maximum(switch_time, 0.0)
    phase_one_dt = switch_time / _PHASE_ONE_STEPS
    at_switch, _ = _integrate(
        vehicle, state, params.throttle_min, params, phase_one_dt, _PHASE_ONE_STEPS
    )
    steps = int(round(max_burn / dt))
    end, (starts, ends) = _integrate(vehicle, at_switch, params.throttle_max, params, dt, steps)

    crossed = (starts.velocity < 0.0) & (ends.velocity >= 0.0)
    any_crossing = jnp.any(crossed)
    index = jnp.where(any_crossing, jnp.argmax(crossed), steps - 1)
    s0 = jax.tree_util.tree_map(lambda x: x[index], starts)
    s1 = jax.tree_util.tree_map(lambda x: x[index], ends)
    action = jnp.reshape(params.throttle_max, (1,))
    d0 = vehicle.derivative(s0, action, params)
    d1 = vehicle.derivative(s1, action, params)
    # Velocity crossing: reuse the height-crossing formula on -v, with -dv/dt as its rate.
    fraction = crossing_fraction(-s0.velocity, -s1.velocity, -d0.velocity * dt)
    fraction = jnp.where(any_crossing, fraction, 1.0)
    altitude = _hermite(s0.altitude, s1.altitude, d0.altitude * dt, d1.altitude * dt, fraction)
    mass = s0.mass + fraction * (s1.mass - s0.mass)
    stopped = VerticalState(
        altitude=altitude, velocity=jnp.zeros_like(altitude) * s0.velocity, mass=mass
    )
    stop_time = switch_time + (index + fraction) * dt
    return stopped, stop_time


def fuel_optimal_burn(
    vehicle: VerticalLander,
    state: VerticalState,
    params: VerticalParams,
    dt: float = 0.1,
    max_burn: float = 40.0,
) -> OptimalBurn:
    """Return the minimum-propellant burn (minimum, then maximum throttle) from ``state``.

    ``state`` is one lander at ignition (vmap for a batch). ``dt`` is the RK4 step of the
    full-thrust phase, s, and ``max_burn`` bounds that phase's duration, s.
    """
    unlimited = params.replace(dry_mass=jnp.ones_like(params.dry_mass))

    def stop_altitude(switch_time):
        stopped, _ = stop_state(vehicle, state, unlimited, switch_time, dt, max_burn)
        return stopped.altitude

    low = jnp.zeros_like(state.altitude)
    high = 2.0 * jnp.maximum(state.altitude, 1e-3) / jnp.maximum(-state.velocity, 1e-3)
    f_low, f_high = stop_altitude(low), stop_altitude(high)
    feasible = (f_low >= 0.0) & (f_high <= 0.0)

    def illinois(_, bracket):
        a, fa, b, fb = bracket
        denominator = fb - fa
        c = jnp.where(jnp.abs(denominator) > 0, (a * fb - b * fa) / denominator, 0.5 * (a + b))
        c = jnp.clip(c, jnp.minimum(a, b), jnp.maximum(a, b))
        fc = stop_altitude(c)
        sign_change = fc * fb < 0
        a, fa = jnp.where(sign_change, b, a), jnp.where(sign_change, fb, 0.5 * fa)
        return a, fa, c, fc

    a, fa, b, fb = jax.lax.fori_loop(0, _ROOT_ITERATIONS, illinois, (low, f_low, high, f_high))
    switch_time = jnp.where(jnp.abs(fa) < jnp.abs(fb), a, b)
    stopped, stop_time = stop_state(vehicle, state, unlimited, switch_time, dt, max_burn)
    return OptimalBurn(
        switch_time=switch_time,
        burn_time=stop_time,
        propellant=state.mass - stopped.mass,
        feasible=feasible,
        stop_altitude=stopped.altitude,
    )
