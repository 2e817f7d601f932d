"""Landing pictures: flight records, plots, animations and the offline 3-D replay page."""

import pathlib
import re
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from diffland.controllers import PointMassPID
from diffland.controllers.cascaded import CascadedPID
from diffland.dynamics import (
    PlanarBooster,
    PointMassLander,
    RigidBody,
    SimConfig,
    falcon9_like_planar,
    falcon9_like_rigid_body,
    gfold_mars_lander,
    make_planar_state,
    make_point_mass_state,
    make_rigid_body_state,
)
from diffland.training import LandingTask, init_controller
from diffland.training.evaluation import rollout_outcomes
from diffland.viz import plots
from diffland.viz.animation import animate_landings
from diffland.viz.flight import FlightRecord, flight_record
from diffland.viz.viewer import BODY_COLOUR, TRAJECTORY_COLOURS, write_viewer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LANDERS = 3


STARTS = (
    ((30.0, -20.0, 1800.0), (2.0, -1.0, -220.0)),
    ((-25.0, 10.0, 2000.0), (-1.0, 3.0, -240.0)),
    ((5.0, 35.0, 1600.0), (0.0, -2.0, -210.0)),
)
"""Start positions and velocities (x, y, z), m and m/s, of the drawn flights, written out
rather than sampled because sampling feasible states takes longer than the flights."""
PROPELLANT = 6000.0
"""Propellant on board at the start, kg."""
POINT_MASS_STARTS = (
    ((400.0, -150.0, 2000.0), (-5.0, 10.0, -30.0)),
    ((-300.0, 250.0, 1600.0), (10.0, -5.0, -40.0)),
)
"""Start positions and velocities (x, y, z), m and m/s, of the Mars point-mass flights."""


def _fly(vehicle, params, states):
    """Fly the hand-tuned cascaded PID from ``states`` and record the flights."""
    states = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *states)
    task = LandingTask(vehicle, params, SimConfig(control_dt=0.25, substeps=1, horizon=100))
    controller = CascadedPID(vehicle, 0.25)
    first = jax.tree_util.tree_map(lambda x: x[0], states)
    variables = init_controller(task, controller, jax.random.PRNGKey(0), first)
    trajectory, _ = rollout_outcomes(task, controller, variables, states)
    return flight_record(vehicle, params, trajectory, 0.25)


@pytest.fixture(scope="module")
def rigid_body_record():
    params = falcon9_like_rigid_body(drag=True)
    mass = float(params.dry_mass) + PROPELLANT
    states = [make_rigid_body_state(position, velocity, mass) for position, velocity in STARTS]
    return _fly(RigidBody(drag=True), params, states)


@pytest.fixture(scope="module")
def planar_record():
    params = falcon9_like_planar(drag=True)
    mass = float(params.dry_mass) + PROPELLANT
    states = [
        make_planar_state(position[0], position[2], velocity[0], velocity[2], mass)
        for position, velocity in STARTS
    ]
    return _fly(PlanarBooster(drag=True), params, states)


@pytest.fixture(scope="module")
def point_mass_trajectory():
    """Fly the hand-tuned point-mass PID on the Mars lander (2,000 kg wet).

    Returns the task, the raw trajectory and the outcome, so tests can check the record
    against them.
    """
    params = gfold_mars_lander()
    vehicle = PointMassLander()
    task = LandingTask(vehicle, params, SimConfig(control_dt=0.5, substeps=2, horizon=160))
    starts = [
        make_point_mass_state(position, velocity, 2000.0)
        for position, velocity in POINT_MASS_STARTS
    ]
    states = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *starts)
    controller = PointMassPID(vehicle, 0.5)
    first = jax.tree_util.tree_map(lambda x: x[0], states)
    variables = init_controller(task, controller, jax.random.PRNGKey(0), first)
    trajectory, outcome = rollout_outcomes(task, controller, variables, states)
    return task, trajectory, outcome


@pytest.fixture(scope="module")
def point_mass_record(point_mass_trajectory):
    task, trajectory, _ = point_mass_trajectory
    return flight_record(task.vehicle, task.params, trajectory, task.sim.control_dt)


def test_point_mass_record_follows_thrust(point_mass_trajectory, point_mass_record):
    task, trajectory, outcome = point_mass_trajectory
    record = point_mass_record
    params = task.params
    active = record.active
    command = np.clip(np.asarray(trajectory.actions, np.float64), -1.0, 1.0)
    size = np.linalg.norm(command, axis=-1)

    assert record.vehicle == "point_mass"
    assert record.gimbal.shape == (2, 160, 0)
    np.testing.assert_allclose(record.position, trajectory.states.position, rtol=1e-6)
    np.testing.assert_allclose(record.height, record.position[..., 2])
    np.testing.assert_allclose(np.linalg.norm(record.up, axis=-1), 1.0, atol=1e-6)
    # The PID lands both, so the propellant lasts and the thrust follows the command.
    assert np.all(np.asarray(outcome.success))
    np.testing.assert_allclose(record.up[active], command[active] / size[active, None], atol=1e-5)
    expected = np.clip(size, float(params.throttle_min), float(params.throttle_max))
    np.testing.assert_allclose(record.throttle[active], expected[active], rtol=1e-5)
    tilt_x = np.degrees(np.arctan2(command[..., 0], command[..., 2]))
    np.testing.assert_allclose(record.lean[active][:, 0], tilt_x[active], atol=1e-3)
    # The starts are hundreds of metres off the target, so the thrust must tilt.
    assert np.abs(record.lean[active]).max() > 1.0


def test_rigid_body_record_geometry(rigid_body_record):
    record = rigid_body_record
    touchdown = record.touchdown_index()

    assert record.vehicle == "rigid_body"
    assert record.position.shape == (LANDERS, 100, 3)
    assert record.gimbal.shape == (LANDERS, 100, 2)
    np.testing.assert_allclose(np.linalg.norm(record.up, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(record.position[:, 0], [start for start, _ in STARTS], rtol=1e-6)
    # The hand-tuned PID brings every booster down within the horizon, near the pad.
    final_height = record.height[np.arange(LANDERS), touchdown]
    assert np.all(final_height < 5.0), final_height
    final_distance = np.linalg.norm(record.position[np.arange(LANDERS), touchdown, :2], axis=-1)
    assert np.all(final_distance < 20.0), final_distance
    assert np.all(np.abs(record.lean) < 90.0)


def test_planar_record_stays_in_plane(planar_record):
    assert planar_record.vehicle == "planar"
    assert np.all(planar_record.position[..., 1] == 0.0)
    assert np.all(planar_record.up[..., 1] == 0.0)
    assert planar_record.gimbal.shape[-1] == 1
    np.testing.assert_allclose(planar_record.lean[..., 1], 0.0)


@pytest.mark.parametrize("fixture", ["rigid_body_record", "planar_record", "point_mass_record"])
def test_booster_plots_smoke(fixture, request, tmp_path):
    record = request.getfixturevalue(fixture)
    records = {"pid_hand": record}

    written = [
        plots.plot_phase_portrait(records, tmp_path / "phase.png"),
        plots.plot_ground_track(records, tmp_path / "track.png"),
        plots.plot_controls(records, tmp_path / "controls.png"),
        plots.plot_attitude(records, tmp_path / "attitude.png"),
    ]

    for path in written:
        with Image.open(path) as image:
            assert image.size[0] > 100, path


@pytest.mark.parametrize("fixture", ["rigid_body_record", "planar_record", "point_mass_record"])
def test_animation_frames_differ(fixture, request, tmp_path):
    record = request.getfixturevalue(fixture)

    path = animate_landings(record, tmp_path / "landing.gif", frames=3)

    with Image.open(path) as gif:
        assert gif.n_frames == 3
        gif.seek(0)
        first = np.asarray(gif.convert("RGB"), dtype=float)
        gif.seek(2)
        last = np.asarray(gif.convert("RGB"), dtype=float)
    assert np.abs(first - last).mean() > 0.1


def test_animation_rejects_unknown_suffix(rigid_body_record, tmp_path):
    with pytest.raises(ValueError, match="use a .gif or .mp4 suffix"):
        animate_landings(rigid_body_record, tmp_path / "landing.avi")


def test_vertical_has_no_ground_track(tmp_path):
    vertical = FlightRecord(
        vehicle="vertical",
        time=np.zeros(2),
        position=np.zeros((1, 2, 3)),
        velocity=np.zeros((1, 2, 3)),
        height=np.zeros((1, 2)),
        up=np.zeros((1, 2, 3)),
        lean=np.zeros((1, 2, 2)),
        throttle=np.zeros((1, 2)),
        gimbal=np.zeros((1, 2, 0)),
        active=np.ones((1, 2), bool),
    )

    with pytest.raises(ValueError, match="no ground track"):
        plots.plot_ground_track({"pid": vertical}, tmp_path / "track.png")


def test_viewer_page_is_offline(rigid_body_record, tmp_path):
    page = write_viewer({"pid_hand": rigid_body_record}, tmp_path / "replay.html").read_text()

    assert re.search(r"https?://", page) is None
    assert re.search(r"\b(src|href)\s*=", page) is None
    assert "fetch(" not in page
    assert "XMLHttpRequest" not in page
    assert "default-src 'none'" in page
    # The data sits in one JSON block, and nothing in it can end the script element.
    data = re.search(r'<script id="flight-data" type="application/json">(.*?)</script>', page, re.S)
    assert data is not None
    assert "<" not in data.group(1)


def _colour_pixels(pixels, colour, tolerance=40):
    target = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)
    return int((np.abs(pixels - target).max(axis=-1) < tolerance).sum())


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_viewer_renders_scene_in_chromium(rigid_body_record, tmp_path):
    page = write_viewer({"pid_hand": rigid_body_record}, tmp_path / "replay.html")
    screenshot = tmp_path / "shot.png"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={screenshot}",
        "--window-size=800,600",
        # Paused at 60 % of the flight, so the bodies are in the air over their paths.
        page.as_uri() + "#t=0.6",
    ]

    subprocess.run(command, check=True, capture_output=True, timeout=120)

    with Image.open(screenshot) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=float)
    scene = pixels[40:-50]  # without the title and the control bar
    assert scene.std() > 5.0
    assert _colour_pixels(scene, BODY_COLOUR) > 20
    for colour in TRAJECTORY_COLOURS[:LANDERS]:
        assert _colour_pixels(scene, colour) > 20, colour


def test_colour_count_rejects_blank_image():
    blank = np.zeros((60, 80, 3))

    assert _colour_pixels(blank, BODY_COLOUR) == 0
    assert _colour_pixels(blank, TRAJECTORY_COLOURS[0]) == 0


def test_viewer_needs_records(tmp_path):
    with pytest.raises(ValueError, match="no flight records"):
        write_viewer({}, pathlib.Path(tmp_path) / "replay.html")
