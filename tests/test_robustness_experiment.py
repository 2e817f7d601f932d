"""The robustness experiment: a tiny end-to-end run and its results file."""

import json

import pytest

from diffland.training import ImitationConfig
from experiments import booster_landing, common, robustness
from experiments.vertical_landing import ControllerSetting

HELD_OUT = 8


def tiny_config():
    setting = ControllerSetting(steps=2, learning_rate=1e-3, batch_size=4)
    return booster_landing.BoosterLandingConfig(
        quick=True,
        control_dt=0.25,
        substeps=1,
        horizon_seconds=20.0,
        train_pool=16,
        validation_states=4,
        held_out_states=HELD_OUT,
        sampling_chunk=256,
        pid=setting,
        neuro_pid=setting,
        mlp=setting,
        imitation=ImitationConfig(steps=3, batch_size=16),
        imitation_states=4,
    )


@pytest.mark.slow
def test_robustness_smoke_results_file(tmp_path):
    config = tiny_config()
    folder = common.prepare_run_folder(tmp_path / "run", False, robustness.SPEC.experiment)
    common.save_config(folder, config, resume=False)

    robustness.run(config, folder, resume=False)

    results = json.loads((folder / "results.json").read_text())
    assert results["experiment"] == "robustness"
    for name in ("pid_tuned", "neuro_pid", "mlp"):
        entry = results["controllers"][name]
        assert entry["n_eval"] == HELD_OUT, name
        assert 0.0 <= entry["success_rate"] <= 1.0, name
        assert 0.0 <= entry["success_rate_ood"] <= 1.0, name
        assert entry["per_seed"][0]["success_rate_ood"] == entry["success_rate_ood"], name
    ranges = results["ranges"]
    assert ranges["training"]["max_thrust_scale"] == [0.95, 1.05]
    assert ranges["out_of_distribution"]["max_thrust_scale"] == [0.9, 1.1]
    assert results["setup"]["vehicle"]["throttle_lag"] is True


def test_out_of_distribution_episodes_share_start_states():
    """Both held-out sets start from the same states; only the vehicles differ."""
    config = tiny_config()
    task = robustness.SPEC.task(config)
    inside = booster_landing.draw_held_out(robustness.SPEC, config, task)
    outside = robustness.draw_out_of_distribution(config, task)
    for name in ("x", "z", "vx", "vz", "pitch", "pitch_rate"):
        assert (getattr(inside.state, name) == getattr(outside.state, name)).all(), name
    assert not (inside.params.max_thrust == outside.params.max_thrust).all()
