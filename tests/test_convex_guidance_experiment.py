"""The convex-guidance experiment: a tiny end-to-end run, its results file, and the
stored optima that a resumed run reads back."""

import dataclasses
import json

import numpy as np
import pytest

pytest.importorskip("cvxpy", reason="needs the guidance extra: pip install 'diffland[guidance]'")

from diffland.training import ImitationConfig  # noqa: E402
from experiments import common, convex_guidance  # noqa: E402
from experiments.vertical_landing import ControllerSetting  # noqa: E402


def tiny_config():
    setting = ControllerSetting(steps=2, learning_rate=1e-3, batch_size=4)
    return dataclasses.replace(
        convex_guidance.ConvexGuidanceConfig(quick=True),
        control_dt=3.0,
        substeps=1,
        horizon_seconds=60.0,
        train_pool=8,
        validation_states=4,
        held_out_states=6,
        compared_states=3,
        imitation_states=2,
        reference_nodes=8,
        nodes=8,
        neuro_pid=setting,
        mlp=setting,
        imitation=ImitationConfig(steps=3, batch_size=8),
    )


@pytest.mark.slow
def test_experiment_writes_results_file(tmp_path):
    config = tiny_config()
    folder = common.prepare_run_folder(tmp_path / "run", False, convex_guidance.EXPERIMENT)
    common.save_config(folder, config, resume=False)

    convex_guidance.run(config, folder, resume=False)

    results = json.loads((folder / "results.json").read_text())
    for key in ("neuro_pid", "mlp", "fuel_optimal", "n_eval", "n_compared_to_optimal"):
        assert key in results
    assert "propellant_ratio_to_optimal" in results
    assert results["n_eval"] == 6
    assert results["fuel_optimal"]["n_compared_to_optimal"] == 3
    assert results["reference"]["status"] == "optimal"
    assert results["decision_cost"]["convex_solve_seconds"] > 0
    assert (folder / "plots" / "reference.png").is_file()
    assert (folder / "held_out_optima.npz").is_file()


def test_stored_optima_read_back_on_resume(tmp_path):
    path = tmp_path / "optima.npz"
    stored = {"propellant": np.array([200.0, np.nan])}
    first = convex_guidance.load_or_solve(path, resume=False, solve=lambda: stored)
    second = convex_guidance.load_or_solve(path, resume=True, solve=lambda: pytest.fail())
    assert np.array_equal(first["propellant"], second["propellant"], equal_nan=True)
