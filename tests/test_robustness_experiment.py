"""The robustness experiment: a tiny end-to-end run and its results file."""

import json

import pytest
from test_booster_experiment import HELD_OUT, tiny_config

from diffland import cli
from experiments import booster_landing, common, robustness


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Train and score the tiny configuration once; return the run folder."""
    folder = tmp_path_factory.mktemp("robustness") / "run"
    folder = common.prepare_run_folder(folder, False, robustness.SPEC.experiment)
    common.save_config(folder, tiny_config(), resume=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DIFFLAND_CHECKS", "0")
        robustness.run(tiny_config(), folder, resume=False)
    return folder


@pytest.fixture(scope="module")
def reproduced(tiny_run):
    """The tiny run's metrics, rescored from its checkpoints as ``diffland eval`` does."""
    return cli.reproduce_metrics(tiny_run)


@pytest.mark.slow
def test_robustness_smoke_results_file(tiny_run):
    folder = tiny_run

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


@pytest.mark.slow
def test_eval_reproduces_ood_success(tiny_run, reproduced):
    results = json.loads((tiny_run / "results.json").read_text())

    rows = cli.check_reproduction(results, reproduced)

    ood_rows = [row for row in rows if row["metric"] == "success_rate_ood"]
    controllers = {"pid_hand", "pid_tuned", "neuro_pid", "mlp"}
    assert {row["controller"] for row in ood_rows} == controllers
    assert len(ood_rows) == 4
    for row in rows:
        assert row["matches"], row
    for row in ood_rows:
        assert row["reported"] is not None, row


@pytest.mark.slow
def test_eval_flags_changed_ood_success(tiny_run, reproduced):
    results = json.loads((tiny_run / "results.json").read_text())
    entry = results["controllers"]["mlp"]["per_seed"][0]
    entry["success_rate_ood"] = entry["success_rate_ood"] + 0.01

    rows = cli.check_reproduction(results, reproduced)

    differing = [(row["controller"], row["metric"]) for row in rows if not row["matches"]]
    assert differing == [("mlp", "success_rate_ood")]


def test_out_of_distribution_episodes_share_start_states():
    """Both held-out sets start from the same states; only the vehicles differ."""
    config = tiny_config()
    task = robustness.SPEC.task(config)
    inside = booster_landing.draw_held_out(robustness.SPEC, config, task)
    outside = robustness.draw_out_of_distribution(config, task)
    for name in ("x", "z", "vx", "vz", "pitch", "pitch_rate"):
        assert (getattr(inside.state, name) == getattr(outside.state, name)).all(), name
    assert not (inside.params.max_thrust == outside.params.max_thrust).all()


def test_main_prints_both_tables(tmp_path, monkeypatch, capsys):
    entry = dict.fromkeys(common.CONTROLLER_METRICS)
    entry.update(n_eval=8, success_rate=0.75, success_rate_ood=0.5)
    calls = []

    def fake_run(config, run_folder, resume):
        calls.append((config, run_folder, resume))
        timings = {"compile": 1.0, "train": 2.0, "eval": 3.0, "total": 6.0}
        return {"controllers": {"mlp": entry}, "timings": timings}

    monkeypatch.setattr(robustness, "run", fake_run)
    folder = tmp_path / "run"

    assert robustness.main(["--quick", "--out", str(folder), "--pad-radius", "5"]) == 0

    ((config, run_folder, resume),) = calls
    assert config.quick
    assert config.pad_radius == 5.0
    assert config.train_pool == robustness.QUICK["train_pool"]
    assert run_folder == folder.absolute()
    assert not resume
    assert json.loads((folder / "config.json").read_text())["pad_radius"] == 5.0
    output = capsys.readouterr().out
    assert "success ood" in output
    assert f"{'mlp':<12}{'75.00%':>10}{'50.00%':>14}" in output
    assert "timings (s): compile 1.0, train 2.0, eval 3.0, total 6.0" in output


def test_quick_help_states_held_out_size(capsys):
    with pytest.raises(SystemExit) as exit_info:
        robustness.main(["--help"])

    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "same held-out set" not in text
    quick = robustness.QUICK["held_out_states"]
    assert f"({quick} start states instead of {robustness.CONFIG.held_out_states})" in text
