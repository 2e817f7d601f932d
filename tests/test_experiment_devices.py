"""The experiments' ``--num-devices`` option: validation, the automatic default and a run
on four CPU devices forced in a subprocess (XLA fixes the CPU device count at start)."""

import json
import pathlib
import subprocess
import sys

import jax
import pytest
from training_scenarios import subprocess_environment

from diffland import cli
from experiments import booster_landing, common, planar_landing, precision, vertical_landing
from experiments.vertical_landing import ControllerSetting, VerticalLandingConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]
FORCED_DEVICES = 4
TINY_OVERRIDES = (
    "control_dt=0.1",
    "horizon_seconds=20",
    "train_pool=32",
    "validation_states=8",
    "held_out_states=8",
    "sampling_chunk=512",
    "pid.steps=1",
    "pid.batch_size=8",
    "neuro_pid.steps=1",
    "neuro_pid.batch_size=8",
    "mlp.steps=1",
    "mlp.batch_size=8",
)

# Runs in the subprocess: checks the validation against four devices, then trains the
# vertical experiment with the command-line arguments given to the subprocess.
FOUR_DEVICE_SCRIPT = """
import json, pathlib, sys
from experiments import vertical_landing
from experiments.vertical_landing import ControllerSetting, VerticalLandingConfig

report = {}
for size in (8, 6):
    setting = ControllerSetting(steps=1, learning_rate=1e-3, batch_size=size)
    report[f"automatic_{size}"] = vertical_landing.trainer_config(setting, 0).num_devices
for count in (3, 5):
    try:
        VerticalLandingConfig(num_devices=count).validate()
    except ValueError as error:
        report[f"rejected_{count}"] = str(error)
VerticalLandingConfig(num_devices=4).validate()
report["status"] = vertical_landing.main(sys.argv[2:])
pathlib.Path(sys.argv[1]).write_text(json.dumps(report))
"""


@pytest.fixture(scope="module")
def four_device_run(tmp_path_factory):
    """Run the script on four forced CPU devices; return its report, config and log."""
    folder = tmp_path_factory.mktemp("devices")
    report_path = folder / "report.json"
    run_folder = folder / "run"
    cache = tmp_path_factory.getbasetemp() / "jax-compilation-cache"
    env = subprocess_environment(cache, devices=FORCED_DEVICES)
    env["DIFFLAND_CHECKS"] = "0"
    argv = ["--quick", "--out", str(run_folder), "--num-devices", str(FORCED_DEVICES)]
    argv += ["--set", *TINY_OVERRIDES]
    completed = subprocess.run(
        [sys.executable, "-c", FOUR_DEVICE_SCRIPT, str(report_path), *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = json.loads(report_path.read_text())
    config = json.loads((run_folder / "config.json").read_text())
    return report, config, completed.stderr


@pytest.mark.slow
def test_four_devices_train_every_controller(four_device_run):
    report, config, log = four_device_run

    assert report["status"] == 0
    assert config["num_devices"] == FORCED_DEVICES
    # One line per trained controller (tuned PID, NeuroPID, MLP).
    assert log.count(f"training on {FORCED_DEVICES} cpu device(s) in 1 process(es)") == 3


@pytest.mark.slow
def test_automatic_devices_follow_batch(four_device_run):
    report, _, _ = four_device_run

    assert report["automatic_8"] == FORCED_DEVICES
    assert report["automatic_6"] == 1


@pytest.mark.slow
def test_four_devices_reject_bad_counts(four_device_run):
    report, _, _ = four_device_run

    indivisible = report["rejected_3"]
    assert "num_devices = 3 is invalid" in indivisible
    assert "pid.batch_size = 256 does not split evenly over 3 devices" in indivisible
    assert "--set pid.batch_size=" in indivisible
    too_many = report["rejected_5"]
    assert "num_devices = 5 is invalid: JAX lists only 4 local cpu device(s)" in too_many
    assert "Pass at most 4" in too_many
    assert "--xla_force_host_platform_device_count=5" in too_many


def test_default_num_devices_recorded_as_none(tmp_path):
    config = VerticalLandingConfig.create(quick=True, seeds=1)

    values = common.save_config(tmp_path, config, resume=False)

    assert values["num_devices"] is None
    assert json.loads((tmp_path / "config.json").read_text())["num_devices"] is None


def test_set_changes_num_devices():
    config = common.apply_overrides(VerticalLandingConfig(), ["num_devices=1"])
    assert config.num_devices == 1

    config = common.apply_overrides(config, ["num_devices=none"])
    assert config.num_devices is None


def test_automatic_devices_on_one_device():
    setting = ControllerSetting(steps=1, learning_rate=1e-3, batch_size=6)
    expected = jax.local_device_count() if 6 % jax.local_device_count() == 0 else 1

    assert vertical_landing.trainer_config(setting, 0).num_devices == expected
    assert vertical_landing.trainer_config(setting, 0, num_devices=1).num_devices == 1


@pytest.mark.parametrize("value", [0, -2, True, 1.5])
def test_bad_num_devices_rejected(value):
    with pytest.raises(ValueError, match=r"num_devices = .* is invalid: pass an integer >= 1"):
        VerticalLandingConfig(num_devices=value).validate()


def test_num_devices_option_rejected_before_run(tmp_path, capsys):
    count = jax.local_device_count()
    folder = tmp_path / "run"

    with pytest.raises(SystemExit) as exit_info:
        vertical_landing.main(["--num-devices", str(count + 1), "--out", str(folder)])

    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert f"num_devices = {count + 1} is invalid: JAX lists only {count} local" in message
    assert not folder.exists()


def test_set_num_devices_rejected_through_cli(tmp_path, capsys):
    count = jax.local_device_count()
    folder = tmp_path / "run"
    argv = ["train", "vertical_landing", "--out", str(folder), "--set", f"num_devices={count + 1}"]

    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)

    assert exit_info.value.code == 2
    assert f"num_devices = {count + 1} is invalid" in capsys.readouterr().err
    assert not folder.exists()


def test_booster_num_devices_rejected(tmp_path, capsys):
    folder = tmp_path / "run"
    argv = ["--num-devices", "0", "--out", str(folder)]

    with pytest.raises(SystemExit) as exit_info:
        booster_landing.main(
            planar_landing.SPEC, planar_landing.CONFIG, planar_landing.QUICK, "test", argv
        )

    assert exit_info.value.code == 2
    assert "num_devices = 0 is invalid: pass an integer >= 1" in capsys.readouterr().err
    assert not folder.exists()


def test_booster_num_devices_reaches_config():
    config = booster_landing.create_config(planar_landing.CONFIG, True, 1, {}, (), 1)

    assert config.num_devices == 1


def test_precision_num_devices_rejected(tmp_path, capsys):
    folder = tmp_path / "run"

    with pytest.raises(SystemExit) as exit_info:
        precision.main(["--set", "num_devices=0", "--out", str(folder)])

    assert exit_info.value.code == 2
    assert "num_devices = 0 is invalid: pass an integer >= 1" in capsys.readouterr().err
    assert not folder.exists()


def test_help_says_how_to_force_cpu_devices(capsys):
    with pytest.raises(SystemExit):
        vertical_landing.main(["--help"])

    text = " ".join(capsys.readouterr().out.split())
    assert "--num-devices N" in text
    assert "XLA_FLAGS=--xla_force_host_platform_device_count=N" in text
