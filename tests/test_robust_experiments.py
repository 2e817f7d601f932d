"""The gradient-horizon and precision experiments: tiny end-to-end runs on the 1-D lander,
their results files and their option checks."""

import dataclasses
import json
import math
import signal

import jax.numpy as jnp
import pytest

from diffland.dynamics import SimConfig, make_vertical_state
from diffland.training import TrainingInterrupted, memory
from experiments import common, gradient_horizon, precision


def fixed_starts(key, vehicle, params, count):
    """Start states 150-250 m up at 40-60 m/s down, in place of the scenario sampler,
    whose fuel-optimal filter takes longer to compile than the runs here."""
    del key, vehicle, params
    fraction = jnp.linspace(0.0, 1.0, count)
    mass = jnp.full(count, 30_000.0)
    return make_vertical_state(150.0 + 100.0 * fraction, -40.0 - 20.0 * fraction, mass)


@pytest.fixture
def run_folder(tmp_path):
    return common.prepare_run_folder(tmp_path / "run", False, "test")


@pytest.mark.slow
def test_gradient_horizon_tiny_run(run_folder):
    config = gradient_horizon.GradientHorizonConfig(horizons=(30,), truncation=10, batch_size=2)
    case = dataclasses.replace(
        gradient_horizon.VEHICLES["vertical"], duration_seconds=6.0, sample=fixed_starts
    )
    gradient_horizon.run(config, run_folder, {"vertical": case})
    results = json.loads((run_folder / "results.json").read_text())

    assert results["experiment"] == "gradient_horizon"
    gradients = results["gradient_norm"]["vertical"]
    assert [(row["horizon"], row["truncation"]) for row in gradients] == [(30, None), (30, 10)]
    for row in gradients:
        assert row["finite"]
        assert math.isfinite(row["grad_norm"])
        assert row["grad_norm"] > 0.0
        assert row["control_dt"] == pytest.approx(6.0 / row["horizon"])
    memory = {(row["horizon"], row["remat"]): row for row in results["memory"]["vertical"]}
    assert set(memory) == {(30, "none"), (30, "step"), (30, "nested")}
    assert memory[(30, "nested")]["segment"] == 5
    assert memory[(30, "step")]["temp_size_in_bytes"] < memory[(30, "none")]["temp_size_in_bytes"]
    assert (run_folder / "plots" / "gradient_horizon.png").stat().st_size > 0


def test_gradient_horizon_checks_memory(run_folder, monkeypatch):
    config = gradient_horizon.GradientHorizonConfig(horizons=(30,), truncation=10, batch_size=2)
    case = dataclasses.replace(
        gradient_horizon.VEHICLES["vertical"], duration_seconds=6.0, sample=fixed_starts
    )
    monkeypatch.setattr(memory, "host_available_bytes", lambda: 1024)

    with pytest.raises(memory.InsufficientMemoryError) as error:
        gradient_horizon.run(config, run_folder, {"vertical": case})

    assert "the vertical gradient over 30 control steps (remat 'none')" in str(error.value)
    assert "Pass shorter horizons or a smaller batch_size." in str(error.value)


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("batch_size=0", "batch_size = 0 is invalid: pass an integer >= 1"),
        ("truncation=-5", "truncation = -5 is invalid"),
        ("horizons=0,100", "horizons = (0, 100) is invalid"),
        ("rigid_body_horizons=", "rigid_body_horizons = () is invalid"),
        ("horizons=100,3000000000", "from 1 to 2,147,483,647, for example 100,500"),
    ],
)
def test_gradient_horizon_bad_set_leaves_no_folder(assignment, expected, tmp_path, capsys):
    folder = tmp_path / "run"

    with pytest.raises(SystemExit) as exit_info:
        gradient_horizon.main(["--out", str(folder), "--set", assignment])

    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err
    assert not folder.exists()


def test_gradient_horizon_set_changes_config(tmp_path, monkeypatch):
    captured = {}

    def fake_run(config, run_folder):
        captured["config"] = config
        raise SystemExit(0)

    monkeypatch.setattr(gradient_horizon, "run", fake_run)
    with pytest.raises(SystemExit):
        gradient_horizon.main(["--out", str(tmp_path / "run"), "--set", "batch_size=4"])

    assert captured["config"].batch_size == 4


def test_gradient_horizon_rejects_resume(tmp_path):
    with pytest.raises(SystemExit):
        gradient_horizon.main(["--resume", "--out", str(tmp_path / "run")])


@pytest.mark.slow
def test_precision_tiny_run_fp64(run_folder):
    # float32 is the default path of every other training test, and tests/test_precision.py
    # trains a bf16 controller.
    config = dataclasses.replace(
        precision.PrecisionConfig.create(True, ("fp64",)),
        vertical_steps=1,
        batch_size=4,
        train_pool=8,
        validation_states=4,
        held_out_states=8,
    )
    case = dataclasses.replace(
        precision.VEHICLES["vertical"],
        sim=SimConfig(control_dt=0.1, substeps=1, horizon=30),
        sample=fixed_starts,
    )
    precision.run(config, run_folder, {"vertical": case})
    results = json.loads((run_folder / "results.json").read_text())

    controllers = results["vehicles"]["vertical"]["controllers"]
    assert list(controllers) == ["neuro_pid_fp64"]
    assert controllers["neuro_pid_fp64"]["param_dtypes"] == ["float64"]
    for entry in controllers.values():
        assert entry["n_eval"] == 8
        assert 0.0 <= entry["success_rate"] <= 1.0
        assert entry["train_seconds"] >= 0.0
    # x64 is switched on only for the float64 run.
    assert jnp.zeros(()).dtype == jnp.float32


@pytest.mark.parametrize("choice", [(), ("fp16",), ("fp32", "float64")])
def test_precision_rejects_unknown_choice(choice):
    with pytest.raises(ValueError, match="--precision"):
        precision.PrecisionConfig.create(False, choice)


def test_precision_stop_says_start_again(tmp_path, monkeypatch, capsys):
    def stopped(config, run_folder):
        raise TrainingInterrupted(signal.SIGTERM)

    monkeypatch.setattr(precision, "run", stopped)
    folder = tmp_path / "run"

    assert precision.main(["--quick", "--out", str(folder)]) == 143
    message = capsys.readouterr().err
    assert "interrupted by SIGTERM; this experiment cannot resume" in message
    assert f"{folder} keeps config.json and, in metrics.jsonl," in message


def test_precision_memory_shortage_in_one_line(tmp_path, monkeypatch, capsys):
    def too_large(config, run_folder):
        raise memory.InsufficientMemoryError("one training update needs about 9.0 GiB.")

    monkeypatch.setattr(precision, "run", too_large)

    assert precision.main(["--quick", "--out", str(tmp_path / "run")]) == 1
    message = capsys.readouterr().err
    assert message.startswith("\nerror: one training update needs about 9.0 GiB. The run")
    assert "batch_size=N the batch size" in message
