"""The fuel-optimal landing burn against an independent scipy integration, in float64.

The reference integrates ``dh/dt = v``, ``dv/dt = u T_max / m - g``, ``dm/dt = -u T_max /
(Isp g0)`` with ``scipy.integrate.solve_ivp`` (RK45, rtol 1e-10) and stops at the event
``v = 0``. As in ``fuel_optimal_burn``, the dry-mass limit is ignored.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import brentq

from diffland.dynamics import STANDARD_GRAVITY, VerticalLander, falcon9_like, make_vertical_state
from diffland.optimal import fuel_optimal_burn
from diffland.scenarios import LandingBurnScenario, sample_landing_burn_states

VEHICLE = VerticalLander()
STARTS = [
    (2000.0, -250.0, 31_000.0),
    (1500.0, -200.0, 29_000.0),
    (3000.0, -300.0, 34_000.0),
    (2500.0, -220.0, 30_000.0),
]
SOLVER = dict(method="RK45", rtol=1e-10, atol=1e-9)


@jax.jit
def optimal_burn(state, params):
    return fuel_optimal_burn(VEHICLE, state, params)


def stop_event(t, y, throttle, params):
    return y[1]


stop_event.terminal = True
stop_event.direction = 1.0


def ground_event(t, y, throttle, params):
    return y[0]


ground_event.terminal = True
ground_event.direction = -1.0


def rocket_rhs(t, y, throttle, params):
    altitude, velocity, mass = y
    thrust = throttle * params["max_thrust"]
    return [velocity, thrust / mass - params["gravity"], -thrust / params["exhaust_velocity"]]


def fly_burn(start, switch_time, params, second_throttle=None, stop_at_ground=False):
    """Fly minimum throttle until ``switch_time``, then ``second_throttle`` (default
    maximum) until the velocity reaches zero, or the ground with ``stop_at_ground``.

    Returns ``(event, state)`` where event is "stop" or "ground" and state is
    ``[altitude, velocity, mass]`` at that event.
    """
    if second_throttle is None:
        second_throttle = params["throttle_max"]
    events = [stop_event, ground_event] if stop_at_ground else [stop_event]
    state = np.asarray(start, float)
    if switch_time > 0.0:
        phase_one = solve_ivp(
            rocket_rhs,
            (0.0, switch_time),
            state,
            args=(params["throttle_min"], params),
            events=[ground_event] if stop_at_ground else None,
            **SOLVER,
        )
        if stop_at_ground and phase_one.t_events[0].size:
            return "ground", phase_one.y_events[0][0]
        state = phase_one.y[:, -1]
    phase_two = solve_ivp(
        rocket_rhs,
        (switch_time, switch_time + 120.0),
        state,
        args=(second_throttle, params),
        events=events,
        **SOLVER,
    )
    if phase_two.t_events[0].size:
        return "stop", phase_two.y_events[0][0]
    if stop_at_ground and phase_two.t_events[1].size:
        return "ground", phase_two.y_events[1][0]
    raise AssertionError(f"the burn from {start} neither stopped nor reached the ground")


@pytest.fixture
def falcon(x64):
    """Return the float64 Falcon-9-like params and the same values as plain floats."""
    params = falcon9_like(dtype=jnp.float64)
    plain = {
        "gravity": float(params.gravity),
        "max_thrust": float(params.max_thrust),
        "throttle_min": float(params.throttle_min),
        "throttle_max": float(params.throttle_max),
        "exhaust_velocity": float(params.isp) * STANDARD_GRAVITY,
    }
    return params, plain


def solve_burn(start, params):
    return optimal_burn(make_vertical_state(*start, dtype=jnp.float64), params)


@pytest.mark.parametrize("start", STARTS)
def test_optimal_burn_stops_at_ground(falcon, start):
    params, plain = falcon
    burn = solve_burn(start, params)
    assert bool(burn.feasible)
    assert float(burn.switch_time) > 0.0

    event, stop = fly_burn(start, float(burn.switch_time), plain)

    assert event == "stop"
    assert abs(stop[0]) < 0.005 * start[0]
    assert abs(float(burn.stop_altitude)) < 0.005 * start[0]


@pytest.mark.parametrize("start", STARTS)
def test_optimal_burn_propellant_matches_scipy(falcon, start):
    params, plain = falcon
    burn = solve_burn(start, params)

    _, stop = fly_burn(start, float(burn.switch_time), plain)

    reference = start[2] - stop[2]
    assert float(burn.propellant) == pytest.approx(reference, rel=0.005)
    assert float(burn.burn_time) > float(burn.switch_time)


@pytest.mark.parametrize("start", STARTS)
def test_switch_shifted_half_second(falcon, start):
    # Switching 0.5 s early stops the descent well above the ground, 0.5 s late hits it.
    params, plain = falcon
    switch_time = float(solve_burn(start, params).switch_time)

    early_event, early = fly_burn(start, switch_time - 0.5, plain, stop_at_ground=True)
    late_event, late = fly_burn(start, switch_time + 0.5, plain, stop_at_ground=True)

    assert early_event == "stop"
    assert early[0] > 10.0
    assert late_event == "ground"
    assert late[1] < -10.0


def landing_switch_time(start, plain, second_throttle, latest):
    """Return the switch time to ``second_throttle`` that stops exactly at the ground."""

    def stop_altitude(switch_time):
        _, stop = fly_burn(start, switch_time, plain, second_throttle=second_throttle)
        return stop[0]

    return brentq(stop_altitude, 0.0, latest, xtol=1e-10)


def constant_landing_throttle(start, plain):
    """Return the constant throttle from ignition that stops exactly at the ground."""

    def stop_altitude(throttle):
        _, stop = fly_burn(start, 0.0, plain, second_throttle=throttle)
        return stop[0]

    return brentq(stop_altitude, plain["throttle_min"] + 0.05, plain["throttle_max"], xtol=1e-12)


@pytest.mark.parametrize("start", [STARTS[0], STARTS[1], STARTS[3]])
def test_optimum_beats_other_landings(falcon, start):
    # Two other burns that also stop at the ground: minimum throttle, then 95 % from a
    # switch solved for, and one constant throttle from ignition.
    params, plain = falcon
    burn = solve_burn(start, params)
    optimal = float(burn.propellant)

    switch_95 = landing_switch_time(start, plain, 0.95, float(burn.switch_time) + 0.5)
    _, stop_95 = fly_burn(start, switch_95, plain, second_throttle=0.95)
    throttle = constant_landing_throttle(start, plain)
    _, stop_constant = fly_burn(start, 0.0, plain, second_throttle=throttle)

    assert abs(stop_95[0]) < 1e-3
    assert abs(stop_constant[0]) < 1e-3
    assert optimal < start[2] - stop_95[2]
    assert optimal < start[2] - stop_constant[2]


def test_optimal_burn_infeasible_too_late(falcon):
    # At 200 m and 250 m/s a stop needs 156 m/s^2, far beyond the stage's 17 m/s^2.
    params, _ = falcon

    burn = solve_burn((200.0, -250.0, 31_000.0), params)

    assert not bool(burn.feasible)


def test_sampled_states_pass_filter():
    params = falcon9_like()
    scenario = LandingBurnScenario()

    states, optima = sample_landing_burn_states(
        jax.random.PRNGKey(7), 24, VEHICLE, params, scenario, chunk=512
    )

    altitude = np.asarray(states.altitude)
    speed = -np.asarray(states.velocity)
    on_board = np.asarray(states.mass) - float(params.dry_mass)
    assert altitude.shape == (24,)
    assert np.all((altitude >= 1500.0) & (altitude <= 3000.0))
    assert np.all((speed >= 200.0) & (speed <= 300.0))
    assert np.all((on_board >= 3000.0 - 1e-2) & (on_board <= 9000.0 + 1e-2))
    assert np.all(np.asarray(optima.feasible))
    assert np.all(np.asarray(optima.switch_time) >= scenario.min_switch_time)
    assert np.all(on_board >= 1.2 * np.asarray(optima.propellant))


def test_sampler_shortfall_names_needed_draws():
    with pytest.raises(ValueError) as error:
        sample_landing_burn_states(
            jax.random.PRNGKey(7), 10_000, VEHICLE, falcon9_like(), chunk=64, max_draws=2
        )

    message = str(error.value)
    assert "drawn states are feasible, fewer than the 10000 requested." in message
    assert "draws are needed: raise chunk or max_draws, request fewer states" in message


def test_sampler_shortfall_without_feasible_states():
    # From 20-30 m up at 200-300 m/s no burn can stop the stage in time.
    scenario = dataclasses.replace(LandingBurnScenario(), altitude_range=(20.0, 30.0))

    with pytest.raises(ValueError) as error:
        sample_landing_burn_states(
            jax.random.PRNGKey(7), 4, VEHICLE, falcon9_like(), scenario, chunk=64, max_draws=1
        )

    message = str(error.value)
    assert message.startswith("only 0 of 64 drawn states are feasible, fewer than the 4")
    assert message.endswith("or relax its margins.")
