"""Minimum-fuel powered-descent guidance for the point-mass lander, as second-order cone
programs.

Sources: Acikmese and Ploen, "Convex programming approach to powered descent guidance for
Mars landing", Journal of Guidance, Control, and Dynamics, 2007 (lossless convexification
of the thrust bounds, the change of variables below); Acikmese, Carson and Blackmore,
"Lossless Convexification of Nonconvex Control Bound and Pointing Constraints of the Soft
Landing Optimal Control Problem", IEEE Transactions on Control Systems Technology, 2013
(the pointing constraint and the minimum-landing-error problem).

NOTE: the papers themselves were not available while this module was written; the
formulation follows their widely reproduced form and is checked by the tests against
the 1-D fuel-optimal burn of :mod:`diffland.optimal` and by replaying solutions through
:class:`~diffland.dynamics.point_mass.PointMassLander`.

Change of variables. With ``u = T / m``, ``sigma`` an upper bound on ``|u|`` and
``z = ln m``, the mass equation becomes linear, ``dz/dt = -alpha sigma`` with
``alpha = 1 / (Isp g0)``. The non-convex bounds ``rho1 <= |T| <= rho2`` are replaced by
``|u| <= sigma`` and

    rho1 e^-z0 (1 - (z - z0) + (z - z0)^2 / 2) <= sigma <= rho2 e^-z0 (1 - (z - z0))

with ``z0(t) = ln(m0 - alpha rho2 t)`` (the mass after burning at full thrust) and
``z0(t) <= z <= ln(m0 - alpha rho1 t)``. Within an interval the thrust ``u m(t)`` falls
with the mass, so the lower bound is imposed at the end of each interval and the upper
bound at its start. The two sides are the second- and first-order
Taylor expansions of ``rho e^-z`` about ``z0``; both are conservative for ``z >= z0``, so
a solution keeps the true bounds, at the price of a thrust range narrowed by the
Taylor error. The relaxation is lossless: at the optimum ``|u| = sigma`` wherever no
state constraint is active (the tests check this to 1e-4 relative on the Mars reference).

Discretisation. ``u`` and ``sigma`` are held constant over each of ``nodes`` equal
intervals (zero-order hold), and position and velocity are propagated exactly for that
input, with the Coriolis and centrifugal terms of the planet's rotation in the linear
system matrix (matrix exponential). The state constraints hold at the nodes only.

Constraints. Thrust pointing: ``u_z >= cos(theta) sigma``, the thrust within ``theta`` of
the vertical. Glide slope: ``altitude >= tan(gamma) * horizontal distance`` from the
landing point, a cone with its tip there (the landing point is the target except in the
fallback below). Speed: ``|v| <= v_max``. Landing: position zero
and velocity zero (or straight down at ``touchdown_speed``) at the final node, and at
least the dry mass left.

Time of flight. For a fixed time the problem is convex; the time of flight is found by a
one-dimensional search. The feasible times lie within
``[m_dry |v0| / rho2, m_fuel / (alpha rho1)]``. The first is the shortest time in which
full thrust can cancel the start speed (ignoring gravity), the second the longest burn at
minimum thrust. The search evaluates an evenly spaced grid of ``grid_points`` times over
that interval (or over ``search_interval`` when one is given),
then runs a golden-section search between the neighbours of the best grid time until the
bracket is shorter than ``time_tolerance``. Infeasible times count as infinitely costly.
The propellant as a function of the time of flight was unimodal on the Mars reference and
the 1-D test case. The grid guards against a search that starts on the wrong side of a
second minimum, but a minimum narrower than the grid spacing can still be missed.

Fallback. When no time of flight lets the lander reach the target, the
minimum-landing-error problem is solved instead: the final altitude and velocity are
zero and the horizontal distance from the target is minimised (searched over the time of
flight the same way). The minimum-fuel problem is then solved with the final distance
bounded by that minimum (plus 1 cm and 1e-4 of it), and the solution's ``status`` is
``"minimum_landing_error"``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable

import cvxpy as cp
import numpy as np
import scipy.linalg

from diffland.dynamics.base import STANDARD_GRAVITY
from diffland.dynamics.point_mass import (
    PointMassParams,
    PointMassState,
    validate_point_mass_params,
    validate_point_mass_state,
)

logger = logging.getLogger(__name__)

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


class InfeasibleGuidanceError(ValueError):
    """No time of flight gives a feasible descent, not even to the nearest landing point."""


@dataclasses.dataclass(frozen=True)
class GuidanceConstraints:
    """State and thrust constraints of the guidance problem; None switches one off.

    The defaults are those of the Mars reference scenario (glide slope 30 degrees above
    the horizontal, speed at most 90 m/s); the pointing limit of 90 degrees (thrust never
    downwards) is an assumption, because no public source confirmed the paper's value.
    """

    glide_slope_deg: float | None = 30.0
    """Smallest elevation of the lander above the target's horizon, degrees, in [0, 90)."""
    pointing_deg: float | None = 90.0
    """Largest angle between the thrust and the vertical, degrees, in [0, 180]."""
    max_speed: float | None = 90.0
    """Largest speed, m/s."""
    touchdown_speed: float = 0.0
    """Descent speed at the final node, m/s: 0 lands at rest. A small positive speed
    gives descents that a closed-loop controller following them touches down on, rather
    than stopping just above the ground."""

    def __post_init__(self):
        checks = (
            ("glide_slope_deg", self.glide_slope_deg, lambda x: 0.0 <= x < 90.0, "in [0, 90)"),
            ("pointing_deg", self.pointing_deg, lambda x: 0.0 <= x <= 180.0, "in [0, 180]"),
            ("max_speed", self.max_speed, lambda x: x > 0.0, "> 0"),
            ("touchdown_speed", self.touchdown_speed, lambda x: x >= 0.0, ">= 0"),
        )
        for name, value, valid, text in checks:
            if value is None:
                continue
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and valid(value)):
                raise ValueError(
                    f"GuidanceConstraints.{name} = {value!r} is invalid: pass a number {text}, "
                    "or None to drop the constraint."
                )

    def glide_slope_violation(self, position: np.ndarray) -> np.ndarray:
        """Return how far each position lies below the glide-slope cone, m (0 inside).

        The distance is ``tan(gamma) * horizontal distance - altitude``, clipped at zero.
        """
        if self.glide_slope_deg is None:
            return np.zeros(np.shape(position)[:-1])
        position = np.asarray(position)
        horizontal = np.linalg.norm(position[..., :2], axis=-1)
        slope = math.tan(math.radians(self.glide_slope_deg))
        return np.maximum(slope * horizontal - position[..., 2], 0.0)


@dataclasses.dataclass(frozen=True)
class GuidanceSolution:
    """A guidance solution at the nodes ``times`` (arrays in the world frame, SI units)."""

    status: str
    """``"optimal"`` (minimum fuel to the target) or ``"minimum_landing_error"`` (the
    target is out of reach; the lander lands as close as it can)."""
    solver_status: str
    """Status that cvxpy reported for the final solve."""
    time_of_flight: float
    """s."""
    times: np.ndarray
    """Node times, s, shape ``(nodes + 1,)``."""
    position: np.ndarray
    """m, shape ``(nodes + 1, 3)``."""
    velocity: np.ndarray
    """m/s, shape ``(nodes + 1, 3)``."""
    mass: np.ndarray
    """kg, shape ``(nodes + 1,)``."""
    thrust: np.ndarray
    """Thrust vector at the start of each interval, N, shape ``(nodes, 3)``."""
    acceleration: np.ndarray
    """Thrust acceleration ``u = T / m`` held over each interval, m/s^2, shape ``(nodes, 3)``."""
    slack: np.ndarray
    """The relaxation variable ``sigma`` of each interval, m/s^2, shape ``(nodes,)``."""
    propellant: float
    """Propellant used, kg."""
    landing_error: float
    """Horizontal distance of the final position from the target, m."""
    solve_seconds: float
    """Wall time of every solve of this call, including the time-of-flight search, s."""
    solves: int
    """Number of convex problems solved."""
    searched: tuple[tuple[float, float | None], ...]
    """Every time of flight tried and its propellant (None where infeasible)."""

    @property
    def fuel_flow_slack(self) -> np.ndarray:
        """``sigma - |u|`` per interval, m/s^2: zero where the relaxation is tight."""
        return self.slack - np.linalg.norm(self.acceleration, axis=1)


def open_loop_actions(
    solution: GuidanceSolution, params: PointMassParams, steps_per_interval: int
) -> tuple[np.ndarray, float]:
    """Return the thrust as actions of :class:`PointMassLander` and their step, s.

    Each node interval is split into ``steps_per_interval`` equal steps, so no step
    straddles two intervals of different thrust. Over an interval the solution holds the
    thrust acceleration ``u``, so the thrust ``u m(t)`` shrinks with the planned mass
    ``m(t) = m_k exp(-alpha sigma (t - t_k))``. Each action is that thrust at the middle
    of its step divided by ``max_thrust``. The actions have shape
    ``(nodes * steps_per_interval, 3)``.
    """
    if isinstance(steps_per_interval, bool) or not (
        isinstance(steps_per_interval, int) and steps_per_interval >= 1
    ):
        raise ValueError(
            f"steps_per_interval = {steps_per_interval!r} is invalid: pass an integer >= 1."
        )
    alpha = 1.0 / (float(params.isp) * STANDARD_GRAVITY)
    nodes = len(solution.slack)
    interval = solution.times[1] - solution.times[0]
    step = interval / steps_per_interval
    index = np.repeat(np.arange(nodes), steps_per_interval)
    elapsed = (np.tile(np.arange(steps_per_interval), nodes) + 0.5) * step
    mass = solution.mass[index] * np.exp(-alpha * solution.slack[index] * elapsed)
    thrust = solution.acceleration[index] * mass[:, None]
    return thrust / float(params.max_thrust), float(step)


def dense_states(
    solution: GuidanceSolution,
    params: PointMassParams,
    steps_per_interval: int,
    planet_rotation: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the planned position, velocity and mass at the start of every step of
    :func:`open_loop_actions` with the same ``steps_per_interval``.

    Between nodes the plan is propagated exactly for the held thrust acceleration, with
    the Coriolis and centrifugal terms unless ``planet_rotation`` is False. Shapes are
    ``(nodes * steps_per_interval, 3)`` and ``(nodes * steps_per_interval,)``.
    """
    omega = np.asarray(params.planet_rotation, np.float64) if planet_rotation else np.zeros(3)
    alpha = 1.0 / (float(params.isp) * STANDARD_GRAVITY)
    gravity = np.array([0.0, 0.0, -float(params.gravity)])
    interval = solution.times[1] - solution.times[0]
    start = np.concatenate([solution.position[:-1], solution.velocity[:-1]], axis=1)
    states, masses = [], []
    for j in range(steps_per_interval):
        elapsed = j * interval / steps_per_interval
        transition, input_matrix = _discretise(omega, elapsed)
        states.append(start @ transition.T + (solution.acceleration + gravity) @ input_matrix.T)
        masses.append(solution.mass[:-1] * np.exp(-alpha * solution.slack * elapsed))
    # Order the samples by time: node interval first, then the step within it.
    state = np.stack(states, axis=1).reshape(-1, 6)
    mass = np.stack(masses, axis=1).reshape(-1)
    return state[:, 0:3], state[:, 3:6], mass


def _discretise(omega: np.ndarray, interval: float) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(Phi, Gamma)`` of ``x+ = Phi x + Gamma w`` for ``x = (r, v)`` and an input
    acceleration ``w`` held over ``interval`` seconds, including the Coriolis and
    centrifugal terms of the rotation ``omega``."""
    cross = np.array(
        [[0.0, -omega[2], omega[1]], [omega[2], 0.0, -omega[0]], [-omega[1], omega[0], 0.0]]
    )
    system = np.zeros((9, 9))
    system[0:3, 3:6] = np.eye(3)
    system[3:6, 0:3] = -cross @ cross
    system[3:6, 3:6] = -2.0 * cross
    system[3:6, 6:9] = np.eye(3)
    transition = scipy.linalg.expm(system * interval)
    return transition[0:6, 0:6], transition[0:6, 6:9]


class _FixedTimeProblem:
    """One parametrised cvxpy problem for a fixed number of nodes; the start state and
    the time of flight are parameters, so a new solve reuses the compiled problem."""

    def __init__(self, nodes: int, constraints: GuidanceConstraints, dry_mass: float, kind: str):
        self.kind = kind
        n = nodes
        self.transition = cp.Parameter((6, 6), name="transition")
        self.input_matrix = cp.Parameter((6, 3), name="input_matrix")
        self.drift = cp.Parameter((6, 1), name="drift")
        self.start = cp.Parameter(6, name="start")
        self.log_mass_start = cp.Parameter(name="log_mass_start")
        self.mass_rate = cp.Parameter(nonneg=True, name="alpha_times_interval")
        self.lower_scale = cp.Parameter(n, nonneg=True, name="mu1")
        self.lower_offset = cp.Parameter(n, name="mu1_times_1_plus_z0")
        self.lower_root = cp.Parameter(n, nonneg=True, name="sqrt_half_mu1")
        self.lower_root_z0 = cp.Parameter(n, name="sqrt_half_mu1_times_z0")
        self.upper_scale = cp.Parameter(n, nonneg=True, name="mu2")
        self.upper_offset = cp.Parameter(n, name="mu2_times_1_plus_z0")
        self.log_mass_low = cp.Parameter(n + 1, name="z0")
        self.log_mass_high = cp.Parameter(n + 1, name="z_max")
        self.landing_radius = cp.Parameter(nonneg=True, name="landing_radius")

        self.state = cp.Variable((6, n + 1), name="state")
        self.control = cp.Variable((3, n), name="u")
        self.slack = cp.Variable(n, name="sigma")
        self.log_mass = cp.Variable(n + 1, name="z")

        x, u, sigma, z = self.state, self.control, self.slack, self.log_mass
        z_start, z_end = z[:-1], z[1:]
        rows = [
            x[:, 0] == self.start,
            z[0] == self.log_mass_start,
            x[:, 1:]
            == self.transition @ x[:, :-1] + self.input_matrix @ u + self.drift @ np.ones((1, n)),
            z[1:] == z_start - self.mass_rate * sigma,
            cp.norm(u, 2, axis=0) <= sigma,
            # The lower bound holds at the end of each interval and the upper bound at its
            # start. The thrust u m(t) falls with the mass over an interval, so it then
            # stays within both bounds at every instant, not only at the nodes.
            self.lower_offset
            - cp.multiply(self.lower_scale, z_end)
            + cp.square(cp.multiply(self.lower_root, z_end) - self.lower_root_z0)
            <= sigma,
            sigma <= self.upper_offset - cp.multiply(self.upper_scale, z_start),
            z >= self.log_mass_low,
            z <= self.log_mass_high,
            z[n] >= math.log(dry_mass),
        ]
        if constraints.pointing_deg is not None:
            rows.append(u[2, :] >= math.cos(math.radians(constraints.pointing_deg)) * sigma)
        if constraints.glide_slope_deg is not None:
            slope = math.tan(math.radians(constraints.glide_slope_deg))
            # The cone's tip is the landing point, which is the target unless the
            # target is out of reach (the minimum-landing-error problems).
            horizontal = x[0:2, :] - cp.reshape(x[0:2, n], (2, 1), order="C") @ np.ones((1, n + 1))
            rows.append(slope * cp.norm(horizontal, 2, axis=0) <= x[2, :])
        if constraints.max_speed is not None:
            rows.append(cp.norm(x[3:6, :], 2, axis=0) <= constraints.max_speed)

        final = x[:, n]
        # Altitude zero and the velocity of the touchdown; the horizontal position is
        # fixed by each kind of problem.
        landed = np.array([0.0, 0.0, 0.0, -constraints.touchdown_speed])
        if kind == "minimum_fuel":
            rows += [final[0:2] == 0.0, final[2:] == landed]
            objective = cp.Maximize(z[n])
        elif kind == "fuel_within_radius":
            rows += [final[2:] == landed, cp.norm(final[0:2], 2) <= self.landing_radius]
            objective = cp.Maximize(z[n])
        elif kind == "minimum_landing_error":
            rows.append(final[2:] == landed)
            objective = cp.Minimize(cp.norm(final[0:2], 2))
        else:
            raise ValueError(f"unknown problem kind {kind!r}")
        self.problem = cp.Problem(objective, rows)
        if not self.problem.is_dpp():
            raise AssertionError("the guidance problem must follow cvxpy's DPP rules")


class PoweredDescentGuidance:
    """Minimum-fuel powered-descent guidance for one :class:`PointMassParams` vehicle.

    Args:
      params: the vehicle (gravity along -z, thrust bounds ``throttle_min`` and
        ``throttle_max`` times ``max_thrust``, ``isp``, ``dry_mass``, rotation).
      constraints: glide slope, thrust pointing and maximum speed.
      nodes: number of zero-order-hold intervals over the time of flight.
      planet_rotation: whether to include the Coriolis and centrifugal terms.
      grid_points: times of flight evaluated before the golden-section search.
      time_tolerance: the search stops when its bracket is shorter than this, s.
      search_interval: times of flight ``(low, high)`` to grid instead of the bounds of
        :meth:`time_bounds`, s. A narrower interval saves solves when the optimum is known
        to lie in it, for example for start states near a solved reference; the search
        cannot find an optimum outside it.
      solver: the cvxpy solver name.
    """

    def __init__(
        self,
        params: PointMassParams,
        constraints: GuidanceConstraints = GuidanceConstraints(),
        *,
        nodes: int = 40,
        planet_rotation: bool = True,
        grid_points: int = 8,
        time_tolerance: float = 0.25,
        search_interval: tuple[float, float] | None = None,
        solver: str = "CLARABEL",
    ):
        validate_point_mass_params(params)
        if isinstance(nodes, bool) or not (isinstance(nodes, int) and nodes >= 2):
            raise ValueError(f"nodes = {nodes!r} is invalid: pass an integer >= 2.")
        if isinstance(grid_points, bool) or not (isinstance(grid_points, int) and grid_points >= 3):
            raise ValueError(f"grid_points = {grid_points!r} is invalid: pass an integer >= 3.")
        if not (math.isfinite(time_tolerance) and time_tolerance > 0):
            raise ValueError(
                f"time_tolerance = {time_tolerance!r} is invalid: pass a positive number of s."
            )
        if solver not in cp.installed_solvers():
            raise ValueError(
                f"solver {solver!r} is not installed (installed: {cp.installed_solvers()}). "
                "Install the guidance extra, pip install 'diffland[guidance]', or name an "
                "installed conic solver."
            )
        self.params = params
        self.constraints = constraints
        self.nodes = nodes
        self.grid_points = grid_points
        self.time_tolerance = float(time_tolerance)
        if search_interval is not None:
            low, high = (float(t) for t in search_interval)
            if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
                raise ValueError(
                    f"search_interval = {search_interval!r} is invalid: pass (low, high) "
                    "seconds with 0 < low < high, or None to use time_bounds."
                )
            search_interval = (low, high)
        self.search_interval = search_interval
        self.solver = solver
        self.gravity = float(params.gravity)
        self.max_thrust = float(params.max_thrust)
        self.thrust_low = float(params.throttle_min) * self.max_thrust
        self.thrust_high = float(params.throttle_max) * self.max_thrust
        self.alpha = 1.0 / (float(params.isp) * STANDARD_GRAVITY)
        self.dry_mass = float(params.dry_mass)
        rotation = np.asarray(params.planet_rotation, dtype=np.float64)
        self.omega = rotation if planet_rotation else np.zeros(3)
        self._problems: dict[str, _FixedTimeProblem] = {}

    def _problem(self, kind: str) -> _FixedTimeProblem:
        if kind not in self._problems:
            self._problems[kind] = _FixedTimeProblem(
                self.nodes, self.constraints, self.dry_mass, kind
            )
        return self._problems[kind]

    # -- bounds and checks ----------------------------------------------------------------

    def time_bounds(self, state: PointMassState) -> tuple[float, float]:
        """Return the interval that contains every feasible time of flight, s."""
        mass = float(state.mass)
        speed = float(np.linalg.norm(np.asarray(state.velocity)))
        shortest = self.dry_mass * speed / self.thrust_high
        longest = (mass - self.dry_mass) / (self.alpha * self.thrust_low)
        return max(shortest, 1e-3), longest

    def _check_start(self, state: PointMassState) -> None:
        validate_point_mass_state(state, self.params)
        position = np.asarray(state.position, dtype=np.float64)
        velocity = np.asarray(state.velocity, dtype=np.float64)
        if position.shape != (3,):
            raise ValueError(
                f"state.position has shape {position.shape}; guidance solves for one lander "
                "at a time, so pass a single state with 3-vectors."
            )
        speed = float(np.linalg.norm(velocity))
        limit = self.constraints.max_speed
        if limit is not None and speed > limit:
            raise ValueError(
                f"the start speed {speed:.4g} m/s exceeds max_speed = {limit} m/s. Start "
                "slower or raise max_speed."
            )

    # -- one fixed time of flight --------------------------------------------------------

    def _set_parameters(self, problem: _FixedTimeProblem, state: PointMassState, tof: float):
        n = self.nodes
        interval = tof / n
        transition, input_matrix = _discretise(self.omega, interval)
        gravity = np.array([0.0, 0.0, -self.gravity])
        mass = float(state.mass)
        problem.transition.value = transition
        problem.input_matrix.value = input_matrix
        problem.drift.value = (input_matrix @ gravity).reshape(6, 1)
        problem.start.value = np.concatenate(
            [np.asarray(state.position, np.float64), np.asarray(state.velocity, np.float64)]
        )
        problem.log_mass_start.value = math.log(mass)
        problem.mass_rate.value = self.alpha * interval

        times = np.arange(n + 1) * interval
        # Full thrust from the start cannot leave less than the dry mass on board;
        # the floor keeps the logarithm finite for times the search rejects anyway.
        low_mass = np.maximum(mass - self.alpha * self.thrust_high * times, self.dry_mass)
        high_mass = np.maximum(mass - self.alpha * self.thrust_low * times, 1e-6 * mass)
        z0 = np.log(low_mass)
        problem.log_mass_low.value = z0
        problem.log_mass_high.value = np.log(high_mass)
        mu1 = self.thrust_low * np.exp(-z0[1:])
        mu2 = self.thrust_high * np.exp(-z0[:-1])
        root = np.sqrt(0.5 * mu1)
        problem.lower_scale.value = mu1
        problem.lower_offset.value = mu1 * (1.0 + z0[1:])
        problem.lower_root.value = root
        problem.lower_root_z0.value = root * z0[1:]
        problem.upper_scale.value = mu2
        problem.upper_offset.value = mu2 * (1.0 + z0[:-1])

    def _solve_fixed(
        self, kind: str, state: PointMassState, tof: float, radius: float = 0.0
    ) -> tuple[_FixedTimeProblem, bool]:
        problem = self._problem(kind)
        self._set_parameters(problem, state, tof)
        problem.landing_radius.value = radius
        try:
            problem.problem.solve(solver=self.solver)
        except cp.error.SolverError as error:
            logger.warning("solver %s failed at time of flight %.3f s: %s", self.solver, tof, error)
            return problem, False
        solved = problem.problem.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)
        if problem.problem.status == cp.OPTIMAL_INACCURATE:
            logger.warning("solver %s returned an inaccurate optimum at %.3f s", self.solver, tof)
        return problem, solved

    def _package(self, problem, state, tof, status, seconds, solves, searched) -> GuidanceSolution:
        x = np.asarray(problem.state.value)
        u = np.asarray(problem.control.value)
        mass = np.exp(np.asarray(problem.log_mass.value))
        position, velocity = x[0:3].T, x[3:6].T
        return GuidanceSolution(
            status=status,
            solver_status=str(problem.problem.status),
            time_of_flight=float(tof),
            times=np.linspace(0.0, tof, self.nodes + 1),
            position=position,
            velocity=velocity,
            mass=mass,
            thrust=u.T * mass[:-1, None],
            acceleration=u.T,
            slack=np.asarray(problem.slack.value),
            propellant=float(state.mass) - float(mass[-1]),
            landing_error=float(np.linalg.norm(position[-1, :2])),
            solve_seconds=seconds,
            solves=solves,
            searched=tuple(searched),
        )

    # -- the search ----------------------------------------------------------------------

    def _search(
        self, cost: Callable[[float], float], low: float, high: float
    ) -> tuple[float, float]:
        """Minimise ``cost`` over ``[low, high]``: a grid, then golden-section search
        between the neighbours of the best grid point. Return the best time and cost."""
        grid = np.linspace(low, high, self.grid_points)
        if self.search_interval is not None:
            grid = np.linspace(*self.search_interval, self.grid_points)
        values = [cost(float(t)) for t in grid]
        best = int(np.argmin(values))
        if not math.isfinite(values[best]):
            return float(grid[best]), math.inf
        a = float(grid[max(best - 1, 0)])
        b = float(grid[min(best + 1, len(grid) - 1)])
        best_time, best_value = float(grid[best]), values[best]
        c = b - _GOLDEN * (b - a)
        d = a + _GOLDEN * (b - a)
        fc, fd = cost(c), cost(d)
        while b - a > self.time_tolerance:
            if fc <= fd:
                b, d, fd = d, c, fc
                c = b - _GOLDEN * (b - a)
                fc = cost(c)
            else:
                a, c, fc = c, d, fd
                d = a + _GOLDEN * (b - a)
                fd = cost(d)
        for t, value in ((c, fc), (d, fd)):
            if value < best_value:
                best_time, best_value = t, value
        return best_time, best_value

    def solve(self, state: PointMassState, time_of_flight: float | None = None) -> GuidanceSolution:
        """Return the minimum-fuel descent from ``state`` (one lander, concrete values).

        With ``time_of_flight`` given, only that time is solved; otherwise the time is
        searched (see the module docstring). Falls back to the minimum-landing-error
        problem when the target cannot be reached. Raises
        :class:`InfeasibleGuidanceError` when no landing at all is feasible.
        """
        self._check_start(state)
        start_time = time.perf_counter()
        searched: list[tuple[float, float | None]] = []
        solves = 0

        best: dict[str, GuidanceSolution] = {}

        def propellant_at(tof: float) -> float:
            nonlocal solves
            solves += 1
            problem, solved = self._solve_fixed("minimum_fuel", state, tof)
            value = float(state.mass) - math.exp(problem.log_mass.value[-1]) if solved else None
            searched.append((tof, value))
            if value is None:
                return math.inf
            if "optimal" not in best or value < best["optimal"].propellant:
                # Keep the arrays now, because the next solve overwrites the variables.
                best["optimal"] = self._package(problem, state, tof, "optimal", 0.0, 0, ())
            return value

        def landing_error_at(tof: float) -> float:
            nonlocal solves
            solves += 1
            problem, solved = self._solve_fixed("minimum_landing_error", state, tof)
            return float(problem.problem.value) if solved else math.inf

        if time_of_flight is not None:
            if not (math.isfinite(time_of_flight) and time_of_flight > 0):
                raise ValueError(
                    f"time_of_flight = {time_of_flight!r} is invalid: pass a positive number "
                    "of seconds, or None to search for it."
                )
            low = high = float(time_of_flight)
            tof, fuel = low, propellant_at(low)
        else:
            low, high = self.time_bounds(state)
            if high <= low:
                raise InfeasibleGuidanceError(
                    f"no time of flight can be feasible: the propellant on board "
                    f"({float(state.mass) - self.dry_mass:.4g} kg) lasts {high:.4g} s at minimum "
                    f"thrust, less than the {low:.4g} s that full thrust needs to cancel the "
                    "start speed. Start with more propellant or a lower speed."
                )
            tof, fuel = self._search(propellant_at, low, high)

        if math.isfinite(fuel):
            return dataclasses.replace(
                best["optimal"],
                solve_seconds=time.perf_counter() - start_time,
                solves=solves,
                searched=tuple(searched),
            )

        logger.info("the target is out of reach; solving the minimum-landing-error problem")
        if time_of_flight is not None:
            tof, error = low, landing_error_at(low)
        else:
            tof, error = self._search(landing_error_at, low, high)
        if not math.isfinite(error):
            raise InfeasibleGuidanceError(
                f"no feasible descent from position {np.asarray(state.position).tolist()} m, "
                f"velocity {np.asarray(state.velocity).tolist()} m/s, mass "
                f"{float(state.mass):.6g} kg for any time of flight in [{low:.4g}, "
                f"{high:.4g}] s: the lander cannot stop at the ground within its thrust, "
                "propellant, speed and glide-slope limits. Start higher or slower, carry "
                "more propellant, or relax the constraints."
            )
        # Bound the distance slightly above the minimum (by 1 cm plus 1e-4 of it). With a
        # bound at the minimum itself the feasible set shrinks to almost one point, and
        # Clarabel returned an inaccurate optimum in the fallback test.
        radius = error * (1.0 + 1e-4) + 0.01
        problem, solved = self._solve_fixed("fuel_within_radius", state, tof, radius)
        solves += 1
        if not solved:
            problem, _ = self._solve_fixed("minimum_landing_error", state, tof)
            solves += 1
        return self._package(
            problem,
            state,
            tof,
            "minimum_landing_error",
            time.perf_counter() - start_time,
            solves,
            searched,
        )
