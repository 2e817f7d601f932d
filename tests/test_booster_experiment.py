"""The planar and 6-DOF booster experiments: tiny end-to-end runs and their options."""

import dataclasses
import json
import pathlib

import pytest

from diffland import cli
from diffland.training import ImitationConfig
from experiments import booster_landing, common, planar_landing, rigid_body_landing
from experiments.vertical_landing import ControllerSetting

CONTROLLERS = ("pid_hand", "pid_tuned", "neuro_pid", "mlp")
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
def test_booster_experiment_smoke_results_file(tmp_path, monkeypatch):
    """The planar run covers the driver; the 6-DOF one differs only in its spec, whose
    vehicle and controllers are tested on their own."""
    module = planar_landing
    config = tiny_config()
    folder = common.prepare_run_folder(tmp_path / "run", False, module.SPEC.experiment)
    common.save_config(folder, config, resume=False)
    starts = {}
    train = booster_landing.train_controller

    def recording_train(name, *args, initial_params=None, **kwargs):
        starts[name] = initial_params
        return train(name, *args, initial_params=initial_params, **kwargs)

    monkeypatch.setattr(booster_landing, "train_controller", recording_train)

    booster_landing.run(module.SPEC, config, folder, resume=False)

    assert starts["pid_tuned"] is None
    assert starts["mlp"] is not None
    # Whether the NeuroPID is fitted to the MLP depends on their validation scores.
    first = json.loads((folder / "results.json").read_text())
    # The fit is also dropped when it validates no better than the tuned PID.
    neuro_record = first["controllers"]["neuro_pid"]["per_seed"][0].get("imitation")
    neuro_fitted = neuro_record is not None
    neuro_used = neuro_fitted and neuro_record["used"]
    assert (starts["neuro_pid"] is not None) == neuro_used
    # A resumed run continues the checkpoints and does not repeat the fits.
    booster_landing.run(module.SPEC, config, folder, resume=True)
    assert starts["mlp"] is None
    assert starts["neuro_pid"] is None
    again = json.loads((folder / "results.json").read_text())
    for name in ("mlp", "neuro_pid") if neuro_fitted else ("mlp",):
        first_fit = first["controllers"][name]["per_seed"][0]["imitation"]
        assert again["controllers"][name]["per_seed"][0]["imitation"] == first_fit

    results = json.loads((folder / "results.json").read_text())
    assert results["experiment"] == module.SPEC.experiment
    assert results["config"] == json.loads(json.dumps(dataclasses.asdict(config)))
    assert tuple(results["controllers"]) == CONTROLLERS
    for name, entry in results["controllers"].items():
        assert entry["n_eval"] == HELD_OUT, name
        assert 0.0 <= entry["success_rate"] <= 1.0, name
        assert entry["propellant_ratio_to_optimal"] is None, name
    assert set(results["controllers"]["pid_tuned"]["per_seed"][0]["gains"]) >= {"kp", "rate_gain"}
    exceeded = results["controllers"]["pid_hand"]["per_seed"][0]["limit_exceeded_rate"]
    assert set(exceeded) == {
        "vertical_speed",
        "lateral_speed",
        "tilt",
        "angular_rate",
        "pad_distance",
        "tip_over",
    }
    assert all(0.0 <= rate <= 1.0 for rate in exceeded.values())
    setup = results["setup"]
    assert setup["vehicle"]["class"] == "PlanarBooster"
    assert setup["params"]["max_thrust"] == pytest.approx(845.0e3)
    assert setup["scenario"]["offset_range"] == [0.0, 50.0]
    teachers = {"mlp": "CascadedPID", "neuro_pid": "MLPPolicy"}
    if not neuro_fitted:
        del teachers["neuro_pid"]
    for name, teacher in teachers.items():
        imitation = results["controllers"][name]["per_seed"][0]["imitation"]
        assert imitation["teacher"] == teacher
        assert imitation["pairs"] > 0
        assert imitation["action_error"] >= 0.0
        assert imitation["action_error_before"] > 0.0
    assert (folder / "plots" / "landings_seed0.png").stat().st_size > 0


def test_neuro_pid_clones_mlp_only_if_better():
    pid = (0.90, -4100.0)
    assert booster_landing.choose_teacher("mlp", {"pid_tuned": pid}) == "pid_tuned"
    better = {"pid_tuned": pid, "mlp": (0.95, -4200.0)}
    assert booster_landing.choose_teacher("neuro_pid", better) == "mlp"
    worse = {"pid_tuned": pid, "mlp": (0.50, -3900.0)}
    assert booster_landing.choose_teacher("neuro_pid", worse) is None
    # Equal success: the one that uses less propellant scores higher.
    thriftier = {"pid_tuned": pid, "mlp": (0.90, -4000.0)}
    assert booster_landing.choose_teacher("neuro_pid", thriftier) == "mlp"
    assert booster_landing.choose_teacher("pid_tuned", better) is None


def test_limit_options_reach_the_cost():
    config = booster_landing.create_config(
        planar_landing.CONFIG, False, 1, {}, pad_radius=5.0, tilt_limit_deg=3.0
    )

    cost = config.cost()

    assert cost.pad_radius == 5.0
    assert cost.tilt_limit_deg == 3.0
    assert cost.speed_limit == 2.0


def test_quick_option_applies_the_quick_settings():
    config = booster_landing.create_config(
        rigid_body_landing.CONFIG, True, 1, rigid_body_landing.QUICK
    )

    assert config.quick
    assert config.train_pool == rigid_body_landing.QUICK["train_pool"]
    assert config.mlp == rigid_body_landing.QUICK["mlp"]


def test_negative_limit_is_rejected_with_its_value(capsys, tmp_path):
    with pytest.raises(SystemExit) as raised:
        booster_landing.main(
            planar_landing.SPEC,
            planar_landing.CONFIG,
            planar_landing.QUICK,
            "test",
            ["--pad-radius", "-3", "--out", str(tmp_path / "run")],
        )

    assert raised.value.code == 2
    message = capsys.readouterr().err
    assert "--pad-radius" in message
    assert "-3" in message
    assert not (tmp_path / "run").exists()


def test_tilt_limit_beyond_90_degrees_is_rejected():
    with pytest.raises(ValueError, match=r"--tilt-limit-deg 120.0 is invalid.*\(0, 90\]"):
        booster_landing.create_config(planar_landing.CONFIG, False, 1, {}, tilt_limit_deg=120.0)


def test_resume_command_keeps_the_options():
    parser = booster_landing.build_parser(planar_landing.SPEC, "test")
    args = parser.parse_args(["--quick", "--pad-radius", "5", "--set", "mlp.steps=3"])

    command = booster_landing.resume_command(planar_landing.SPEC, args, pathlib.Path("runs/a"))

    assert command == (
        "python -m experiments.planar_landing --resume --out runs/a --quick --pad-radius 5.0 "
        "--set mlp.steps=3"
    )


def test_train_interrupt_prints_diffland_resume(tmp_path, monkeypatch, capsys):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(booster_landing, "run", interrupt)
    folder = tmp_path / "run"

    status = cli.main(["train", "planar_landing", "--quick", "--out", str(folder)])

    assert status == 130
    message = capsys.readouterr().err
    assert f": diffland train planar_landing --resume --out {folder} --quick\n" in message


def test_out_below_a_file_is_rejected(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")

    with pytest.raises(SystemExit) as raised:
        booster_landing.main(
            planar_landing.SPEC,
            planar_landing.CONFIG,
            planar_landing.QUICK,
            "test",
            ["--out", str(blocker / "run")],
        )

    assert raised.value.code == 2
    assert "cannot create the run folder" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-1"])
def test_zero_or_negative_pad_radius_says_positive(capsys, tmp_path, value):
    with pytest.raises(SystemExit):
        booster_landing.main(
            planar_landing.SPEC,
            planar_landing.CONFIG,
            planar_landing.QUICK,
            "test",
            ["--pad-radius", value, "--out", str(tmp_path / "run")],
        )

    assert "> 0" in capsys.readouterr().err
