"""The convex-guidance experiment: a tiny end-to-end run through the diffland command, its
results file, the stored optima that a resumed run reads back, and eval and render of
the finished run."""

import dataclasses
import json
import pathlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("cvxpy", reason="needs the guidance extra: pip install 'diffland[guidance]'")

from diffland import cli  # noqa: E402
from experiments import common, convex_guidance  # noqa: E402

TINY_OVERRIDES = (
    "control_dt=1.0",
    "substeps=1",
    "horizon_seconds=100",
    "train_pool=8",
    "validation_states=4",
    "held_out_states=6",
    "compared_states=3",
    "imitation_states=2",
    "reference_nodes=8",
    "nodes=8",
    "neuro_pid.steps=2",
    "neuro_pid.batch_size=4",
    "mlp.steps=2",
    "mlp.batch_size=4",
    "imitation.steps=3",
    "imitation.batch_size=8",
)
"""Changes to the quick config for a run of about a minute on 2 CPU cores. At a 1 s
control period the hand-tuned PID, which the NeuroPID starts from, lands the first
held-out state, so the propellant ratios are numbers rather than None."""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Train the experiment through ``diffland train`` with tiny overrides.

    Runtime checks are off here: they are tested elsewhere and double the compile time.
    """
    folder = tmp_path_factory.mktemp("convex_guidance") / "run"
    argv = ["train", "convex_guidance", "--quick", "--out", str(folder)]
    argv += ["--log-level", "WARNING", "--set", *TINY_OVERRIDES]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DIFFLAND_CHECKS", "0")
        assert cli.main(argv) == 0
    return folder


@pytest.fixture(scope="module")
def reproduced(tiny_run):
    """The tiny run's metrics, rescored from its checkpoints."""
    return cli.reproduce_metrics(tiny_run)


@pytest.mark.slow
def test_experiment_writes_results_file(tiny_run):
    results = json.loads((tiny_run / "results.json").read_text())

    for key in ("neuro_pid", "mlp", "fuel_optimal", "n_eval", "n_compared_to_optimal"):
        assert key in results
    assert "propellant_ratio_to_optimal" in results
    assert results["n_eval"] == 6
    assert results["config"]["control_dt"] == 1.0
    assert results["config"]["neuro_pid"]["steps"] == 2
    assert results["fuel_optimal"]["n_compared_to_optimal"] == 3
    assert results["reference"]["status"] == "optimal"
    assert results["decision_cost"]["convex_solve_seconds"] > 0
    assert (tiny_run / "plots" / "reference.png").is_file()
    assert (tiny_run / "held_out_optima.npz").is_file()


@pytest.mark.slow
def test_eval_reproduces_results(tiny_run, reproduced):
    results = json.loads((tiny_run / "results.json").read_text())

    rows = cli.check_reproduction(results, reproduced)

    assert {row["controller"] for row in rows} == {"neuro_pid", "mlp", "fuel_optimal"}
    for row in rows:
        assert row["matches"], row
    neuro_pid = reproduced[0]["neuro_pid"]
    for metric in (
        "success_rate",
        "glide_slope_violation_rate",
        "n_compared_to_optimal",
        "propellant_ratio_spread.median",
    ):
        assert metric in neuro_pid
    # A number, so the match above compared a rescored ratio with the stored one.
    assert neuro_pid["propellant_ratio_to_optimal"] is not None
    assert neuro_pid["n_eval"] == 6


@pytest.mark.slow
def test_eval_flags_changed_ratio(tiny_run, reproduced):
    results = json.loads((tiny_run / "results.json").read_text())
    entry = results["controllers"]["neuro_pid"]["per_seed"][0]
    entry["propellant_ratio_to_optimal"] += 0.01

    rows = cli.check_reproduction(results, reproduced)

    differing = [(row["controller"], row["metric"]) for row in rows if not row["matches"]]
    assert differing == [("neuro_pid", "propellant_ratio_to_optimal")]


@pytest.mark.slow
def test_render_writes_point_mass_files(tiny_run):
    paths = cli.run_render(cli.Render(run_dir=tiny_run, landers=3, frames=4))

    names = {path.name for path in paths}
    assert names == {
        "phase_portrait.png",
        "controls.png",
        "ground_track.png",
        "attitude.png",
        "training.png",
        "landing_mlp.gif",
        "replay.html",
    }
    for path in paths:
        assert path.stat().st_size > 0, path
    with Image.open(tiny_run / "render" / "landing_mlp.gif") as gif:
        assert gif.n_frames == 4
    assert "point_mass" in (tiny_run / "render" / "replay.html").read_text()


def test_eval_without_optima_names_file(tmp_path, capsys):
    config = convex_guidance.ConvexGuidanceConfig(quick=True)
    common.save_config(tmp_path, config, resume=False)
    common.write_results(tmp_path, convex_guidance.EXPERIMENT, dataclasses.asdict(config), {})

    assert cli.main(["eval", str(tmp_path)]) == 2

    message = capsys.readouterr().err
    assert "held_out_optima.npz does not exist" in message
    assert "--resume" in message


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("nodes=0", "nodes = 0 is invalid: pass an integer >= 2"),
        ("nodes=1", "nodes = 1 is invalid: pass an integer >= 2"),
        ("reference_nodes=1", "reference_nodes = 1 is invalid: pass an integer >= 2"),
        ("search_interval=30,inf", "search_interval = (30.0, inf) is invalid"),
        ("search_interval=30", "search_interval takes exactly 2 comma-separated values"),
        ("imitation_states=9000", "pass at most train_pool = 1024"),
        ("control_dt=-1", "control_dt = -1.0 is invalid: pass a positive number"),
        ("mlp.batch_size=0", "mlp: TrainConfig.batch_size = 0"),
        ("imitation_teacher=teacher", "imitation_teacher = 'teacher' is invalid"),
    ],
)
def test_bad_override_rejected_before_solve(assignment, expected, tmp_path, capsys):
    folder = tmp_path / "run"

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "convex_guidance", "--quick", "--out", str(folder), "--set", assignment])

    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err
    assert not folder.exists()


def test_stored_optima_read_back_on_resume(tmp_path):
    path = tmp_path / "optima.npz"
    stored = {"propellant": np.array([200.0, np.nan])}
    first = convex_guidance.load_or_solve(path, resume=False, solve=lambda: stored)
    second = convex_guidance.load_or_solve(path, resume=True, solve=lambda: pytest.fail())
    assert np.array_equal(first["propellant"], second["propellant"], equal_nan=True)


def test_resume_command_repeats_overrides():
    argv = ["--quick", "--seeds", "2", "--set", "nodes=8", "mlp.steps=5"]
    args = convex_guidance.build_parser().parse_args(argv)

    command = convex_guidance.resume_command(args, pathlib.Path("runs/cg"))

    assert command == (
        "python -m experiments.convex_guidance --resume --out runs/cg --quick --seeds 2 "
        "--set nodes=8 mlp.steps=5"
    )
