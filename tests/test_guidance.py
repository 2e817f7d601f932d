"""Convex powered-descent guidance: the 1-D optimum, the constraints along a solution,
an open-loop replay through the point-mass dynamics, tightness of the relaxation, the
fallback and the errors."""

import importlib
import math
import sys

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("cvxpy", reason="needs the guidance extra: pip install 'diffland[guidance]'")

from diffland.dynamics import (  # noqa: E402
    PointMassLander,
    SimConfig,
    VerticalLander,
    gfold_mars_lander,
    gfold_start_state,
    make_point_mass_state,
    make_vertical_params,
    make_vertical_state,
    open_loop_policy,
    rollout,
)
from diffland.guidance import (  # noqa: E402
    GuidanceConstraints,
    InfeasibleGuidanceError,
    PoweredDescentGuidance,
    open_loop_actions,
)
from diffland.optimal import fuel_optimal_burn  # noqa: E402

REFERENCE_NODES = 30
CONSTRAINT_TOLERANCE = 1e-4
"""Relative tolerance of the constraint checks. With Clarabel's default tolerances the
reference solution's |u| stays up to 5e-5 m/s^2 below sigma (about 1e-5 relative)."""


@pytest.fixture(scope="module")
def reference():
    """The Mars reference scenario solved once (with planet rotation)."""
    params = gfold_mars_lander()
    guidance = PoweredDescentGuidance(params, nodes=REFERENCE_NODES)
    return params, guidance, guidance.solve(gfold_start_state())


def test_vertical_case_matches_optimal_burn(x64):
    params = gfold_mars_lander(planet_rotation=False, dtype=jnp.float64)
    vertical = make_vertical_params(
        gravity=3.71,
        max_thrust=24_000.0,
        throttle_min=0.2,
        throttle_max=0.8,
        isp=float(params.isp),
        dry_mass=1700.0,
        dtype=jnp.float64,
    )
    burn = fuel_optimal_burn(
        VerticalLander(), make_vertical_state(1000.0, -60.0, 2000.0, jnp.float64), vertical, 0.01
    )
    assert bool(burn.feasible)
    vertical_only = GuidanceConstraints(glide_slope_deg=None, pointing_deg=0.0, max_speed=None)
    guidance = PoweredDescentGuidance(
        params, vertical_only, nodes=40, planet_rotation=False, time_tolerance=0.1
    )
    solution = guidance.solve(make_point_mass_state([0.0, 0.0, 1000.0], [0.0, 0.0, -60.0], 2000.0))
    assert solution.status == "optimal"
    assert abs(solution.propellant / float(burn.propellant) - 1.0) < 0.01
    assert abs(solution.time_of_flight - float(burn.burn_time)) < 0.5
    assert np.allclose(solution.thrust[:, :2], 0.0, atol=1e-3)


def test_reference_solution_lands(reference):
    params, _, solution = reference
    assert solution.status == "optimal"
    assert solution.solver_status == "optimal"
    assert np.allclose(solution.position[-1], 0.0, atol=1e-5)
    assert np.allclose(solution.velocity[-1], 0.0, atol=1e-5)
    assert 0.0 < solution.propellant < 300.0
    assert solution.mass[-1] >= float(params.dry_mass)


def test_reference_constraints_hold(reference):
    params, guidance, solution = reference
    constraints = guidance.constraints
    magnitude = np.linalg.norm(solution.thrust, axis=1)
    low = float(params.throttle_min * params.max_thrust)
    high = float(params.throttle_max * params.max_thrust)
    assert magnitude.min() >= low * (1.0 - CONSTRAINT_TOLERANCE)
    assert magnitude.max() <= high * (1.0 + CONSTRAINT_TOLERANCE)
    # The thrust falls with the mass over an interval; at its end it is still above low.
    at_interval_end = np.linalg.norm(solution.acceleration, axis=1) * solution.mass[1:]
    assert at_interval_end.min() >= low * (1.0 - CONSTRAINT_TOLERANCE)

    cosine = solution.thrust[:, 2] / magnitude
    assert cosine.min() >= math.cos(math.radians(constraints.pointing_deg)) - CONSTRAINT_TOLERANCE

    below = constraints.glide_slope_violation(solution.position)
    assert below.max() <= CONSTRAINT_TOLERANCE * 1000.0

    speed = np.linalg.norm(solution.velocity, axis=1)
    assert speed.max() <= constraints.max_speed * (1.0 + CONSTRAINT_TOLERANCE)


def test_relaxation_tight_where_states_free(reference):
    _, guidance, solution = reference
    constraints = guidance.constraints
    slope = math.tan(math.radians(constraints.glide_slope_deg))
    horizontal = np.linalg.norm(solution.position[:, :2], axis=1)
    glide_margin = solution.position[:, 2] - slope * horizontal
    speed_margin = constraints.max_speed - np.linalg.norm(solution.velocity, axis=1)
    # An interval is free when no state constraint is active at either of its nodes.
    free_nodes = (glide_margin > 1e-3) & (speed_margin > 1e-3)
    free = free_nodes[:-1] & free_nodes[1:]
    assert free.sum() >= REFERENCE_NODES // 2
    relative_gap = solution.fuel_flow_slack[free] / solution.slack[free]
    assert np.abs(relative_gap).max() < 1e-4


def test_open_loop_replay_lands_on_target(reference, x64):
    params, _, solution = reference
    params = gfold_mars_lander(dtype=jnp.float64)
    actions, step = open_loop_actions(solution, params, steps_per_interval=20)
    start = gfold_start_state(dtype=jnp.float64)
    config = SimConfig(control_dt=step, substeps=1, horizon=actions.shape[0])
    trajectory = rollout(
        PointMassLander(), config, open_loop_policy(jnp.asarray(actions)), start, params, 0
    )
    final = trajectory.final.vehicle
    # Stated tolerance: touchdown within 0.5 m of the target at under 0.5 m/s. Measured
    # (30 nodes, 20 steps per interval): 2e-4 m and 0.11 m/s, a few steps before the end.
    assert bool(trajectory.final.touched_down)
    assert float(jnp.linalg.norm(final.position)) < 0.5
    assert float(jnp.linalg.norm(final.velocity)) < 0.5
    assert abs(float(final.mass) - solution.mass[-1]) < 0.5


def test_unreachable_target_falls_back():
    params = gfold_mars_lander(planet_rotation=False)
    guidance = PoweredDescentGuidance(params, nodes=20, planet_rotation=False, grid_points=6)
    # 3 km off the target at 1.2 km altitude lies below the 30-degree cone of the target.
    start = make_point_mass_state([3000.0, 0.0, 1200.0], [0.0, 0.0, -20.0], 2000.0)
    solution = guidance.solve(start)
    assert solution.status == "minimum_landing_error"
    assert solution.landing_error > 100.0
    assert abs(solution.position[-1, 2]) < 1e-4
    assert np.allclose(solution.velocity[-1], 0.0, atol=1e-4)


def test_no_propellant_raises():
    guidance = PoweredDescentGuidance(gfold_mars_lander(), nodes=10)
    start = make_point_mass_state([0.0, 0.0, 100.0], [0.0, 0.0, -80.0], 1710.0)
    with pytest.raises(InfeasibleGuidanceError, match="more propellant"):
        guidance.solve(start)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(glide_slope_deg=95.0), "glide_slope_deg"),
        (dict(pointing_deg=-1.0), "pointing_deg"),
        (dict(max_speed=0.0), "max_speed"),
    ],
)
def test_invalid_constraints_raise(options, message):
    with pytest.raises(ValueError, match=message):
        GuidanceConstraints(**options)


def test_invalid_inputs_raise():
    params = gfold_mars_lander()
    with pytest.raises(ValueError, match="nodes"):
        PoweredDescentGuidance(params, nodes=1)
    with pytest.raises(ValueError, match="not installed"):
        PoweredDescentGuidance(params, solver="NO_SUCH_SOLVER")
    guidance = PoweredDescentGuidance(params, nodes=10)
    with pytest.raises(ValueError, match="max_speed"):
        guidance.solve(make_point_mass_state([0.0, 0.0, 2000.0], [0.0, 0.0, -120.0], 2000.0))
    with pytest.raises(ValueError, match="dry_mass"):
        guidance.solve(make_point_mass_state([0.0, 0.0, 2000.0], [0.0, 0.0, -20.0], 1600.0))
    with pytest.raises(ValueError, match="time_of_flight"):
        guidance.solve(gfold_start_state(), time_of_flight=-3.0)


def test_missing_extra_names_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "cvxpy", None)
    monkeypatch.delitem(sys.modules, "diffland.guidance", raising=False)
    with pytest.raises(ImportError, match=r"diffland\[guidance\]"):
        importlib.import_module("diffland.guidance")
