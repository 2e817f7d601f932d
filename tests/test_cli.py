"""The diffland command: experiment discovery, overrides, train, eval, render, compare."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tomllib

import pytest
from PIL import Image

from diffland import cli
from experiments import common
from experiments.booster_landing import BoosterLandingConfig
from experiments.vertical_landing import VerticalLandingConfig

TINY_OVERRIDES = (
    "control_dt=0.1",
    "horizon_seconds=20",
    "train_pool=32",
    "validation_states=8",
    "held_out_states=12",
    "sampling_chunk=512",
    "pid.steps=2",
    "pid.batch_size=8",
    "neuro_pid.steps=2",
    "neuro_pid.batch_size=8",
    "mlp.steps=2",
    "mlp.batch_size=8",
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Train the vertical experiment through ``diffland train`` with tiny overrides.

    Runtime checks are off here: they are tested elsewhere and double the compile time.
    """
    folder = tmp_path_factory.mktemp("cli") / "run"
    argv = ["train", "vertical_landing", "--quick", "--out", str(folder)]
    argv += ["--log-level", "WARNING", "--set", *TINY_OVERRIDES]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DIFFLAND_CHECKS", "0")
        assert cli.main(argv) == 0
    return folder


@pytest.fixture(scope="module")
def reproduced(tiny_run):
    """The tiny run's metrics, rescored from its checkpoints."""
    return cli.reproduce_metrics(tiny_run)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def main(argv=None):\n    pass\n", True),
        ("def main():\n    pass\n", True),
        ("def main(argv):\n    pass\n", True),
        ("def main(spec, base, quick, description, argv=None):\n    pass\n", False),
        ("def main(*, argv):\n    pass\n", False),
        ("from x import main\n", False),
        ("def helper(argv=None):\n    pass\n", False),
    ],
)
def test_main_entry_detection(source, expected):
    assert cli._has_main_entry(source) is expected


def test_discovery_lists_experiment_modules():
    found = cli.discover_experiments()

    assert {"vertical_landing", "planar_landing", "rigid_body_landing"} <= set(found)
    assert "convex_guidance" in found
    # The shared driver and the helpers have no main(argv).
    assert "booster_landing" not in found
    assert "common" not in found
    assert "analytic policy gradients" in found["vertical_landing"]


def test_unknown_experiment_lists_known(capsys):
    assert cli.main(["train", "vertical_landings"]) == 2

    message = capsys.readouterr().err
    assert "unknown experiment 'vertical_landings'" in message
    assert "vertical_landing" in message
    assert "rigid_body_landing" in message


def test_bad_override_rejected_before_run(tmp_path, capsys):
    folder = tmp_path / "run"

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "vertical_landing", "--out", str(folder), "--set", "mlp.stepz=3"])

    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "there is no field mlp.stepz" in message
    assert "mlp.steps" in message
    assert not folder.exists()


@pytest.mark.parametrize("experiment", ["vertical_landing", "planar_landing"])
def test_train_errors_name_diffland_command(experiment, tmp_path, capsys):
    argv = ["train", experiment, "--out", str(tmp_path / "run"), "--set", "mlp.stepz=3"]

    with pytest.raises(SystemExit):
        cli.main(argv)

    message = capsys.readouterr().err
    assert f"diffland train {experiment}: error: --set mlp.stepz=3" in message
    assert f"usage: diffland train {experiment} " in message
    assert "python -m" not in message


def test_parse_errors_name_launcher(capsys):
    parser = common.experiment_parser("vertical_landing", "test")

    with pytest.raises(SystemExit):
        parser.parse_args(["--launcher", "diffland", "--seeds", "two"])
    diffland_message = capsys.readouterr().err
    with pytest.raises(SystemExit):
        common.experiment_parser("vertical_landing", "test").parse_args(["--seeds", "two"])
    python_message = capsys.readouterr().err

    assert "diffland train vertical_landing: error: argument --seeds" in diffland_message
    assert "python -m experiments.vertical_landing: error: argument --seeds" in python_message


def test_unknown_field_lists_only_settable():
    with pytest.raises(ValueError, match="there is no field stepz") as error_info:
        common.apply_overrides(VerticalLandingConfig(), ["stepz=3"])

    known = str(error_info.value).partition("Known fields: ")[2].rstrip(".").split(", ")
    assert "mlp.steps" in known
    assert "num_devices" in known
    assert "quick" not in known
    assert "seeds" not in known
    for name in known:
        # A value of the wrong type or range is fine here, but --set must accept the key.
        try:
            common.apply_overrides(VerticalLandingConfig(), [f"{name}=1"])
        except ValueError as error:
            assert "option instead" not in str(error), name
            assert "there is no field" not in str(error), name


@pytest.mark.parametrize("experiment", ["vertical_landing", "planar_landing", "convex_guidance"])
def test_bad_remat_rejected_before_run(experiment, tmp_path, capsys):
    folder = tmp_path / "run"

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", experiment, "--out", str(folder), "--set", "remat=fast"])

    assert exit_info.value.code == 2
    message = " ".join(capsys.readouterr().err.split())
    assert "remat = 'fast' is invalid: pass one of none, step, nested" in message
    assert not folder.exists()


def test_remat_reaches_sim_config():
    from experiments import vertical_landing
    from experiments.convex_guidance import ConvexGuidanceConfig
    from experiments.precision import PrecisionConfig

    vertical = common.apply_overrides(VerticalLandingConfig(), ["remat=step"])
    booster = common.apply_overrides(BoosterLandingConfig(), ["remat=nested"])
    convex = common.apply_overrides(ConvexGuidanceConfig(), ["remat=step"])

    assert vertical_landing.build_task(vertical).sim.remat == "step"
    assert booster.sim().remat == "nested"
    assert convex.sim().remat == "step"
    assert ConvexGuidanceConfig().sim().remat == "none"
    with pytest.raises(ValueError, match="remat = 'fast' is invalid"):
        PrecisionConfig(remat="fast").validate()


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("mlp.steps=x", "takes a value of type int"),
        ("mlp=3", "is a group of fields; set one of mlp.steps"),
        ("mlp.steps.more=3", "steps has no fields"),
        ("steps", "write KEY=VALUE"),
        ("seeds=2", "use the --seeds option"),
        ("horizon_seconds=fast", "type float"),
    ],
)
def test_override_errors(assignment, expected):
    with pytest.raises(ValueError, match=expected):
        common.apply_overrides(VerticalLandingConfig(), [assignment])


def test_overrides_convert_types():
    config = common.apply_overrides(
        VerticalLandingConfig(), ["mlp.steps=7", "control_dt=0.1", "neuro_pid.learning_rate=1e-4"]
    )

    assert config.mlp.steps == 7
    assert config.control_dt == 0.1
    assert config.neuro_pid.learning_rate == 1e-4
    assert config.pid == VerticalLandingConfig().pid


def test_overrides_parse_tuples():
    @common.dataclasses.dataclass(frozen=True)
    class Sweep:
        horizons: tuple[int, ...] = (32,)
        names: tuple[str, ...] = ("a",)

    config = common.apply_overrides(Sweep(), ["horizons=[32, 128]", "names=x,y"])

    assert config.horizons == (32, 128)
    assert config.names == ("x", "y")
    with pytest.raises(ValueError, match="a comma-separated list of int"):
        common.apply_overrides(Sweep(), ["horizons=1.5,2"])


def test_override_range_checked_before_run(tmp_path, capsys):
    folder = tmp_path / "run"

    with pytest.raises(SystemExit):
        cli.main(["train", "vertical_landing", "--out", str(folder), "--set", "pid.steps=0"])

    assert "pid: TrainConfig.steps = 0 must be an integer >= 1" in capsys.readouterr().err
    assert not folder.exists()


@pytest.mark.parametrize(
    ("assignments", "steps", "limit"),
    [
        (["horizon_seconds=1e9"], "2e+10", "1.07374e+08"),
        (["horizon_seconds=1e308"], "inf", "1.07374e+08"),
        (["control_dt=1e-310", "horizon_seconds=1"], "inf", "2.14748e-301"),
    ],
)
def test_overlong_horizon_rejected_before_run(assignments, steps, limit, tmp_path, capsys):
    folder = tmp_path / "run"
    argv = ["train", "vertical_landing", "--out", str(folder), "--set", *assignments]

    with pytest.raises(SystemExit):
        cli.main(argv)

    error = " ".join(capsys.readouterr().err.split())
    assert f"it makes {steps} control steps, more than the 2,147,483,647" in error
    assert f"Pass horizon_seconds <= {limit}." in error
    assert not folder.exists()


def test_train_help_states_units(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--help"])

    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Experiment module name" in text
    assert "Config changes as KEY=VALUE" in text
    assert "a few minutes on 2 CPU cores" in text


def test_config_round_trip():
    config = common.apply_overrides(VerticalLandingConfig(), ["mlp.steps=7"])
    values = json.loads(json.dumps(common.dataclasses.asdict(config)))

    assert common.config_from_dict(VerticalLandingConfig, values) == config


def test_config_round_trip_restores_tuples():
    # JSON stores tuples as lists, which ImitationConfig.fixed rejects.
    config = BoosterLandingConfig()
    values = json.loads(json.dumps(common.dataclasses.asdict(config)))

    restored = common.config_from_dict(BoosterLandingConfig, values)

    assert restored == config
    assert isinstance(restored.imitation.fixed, tuple)


def test_incompatible_config_rejected(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"quick": True, "warp_factor": 9}))

    with pytest.raises(common.RunFolderError, match=r"unknown fields \['warp_factor'\]"):
        common.read_run_config(tmp_path, VerticalLandingConfig)


def test_eval_missing_folder(tmp_path, capsys):
    assert cli.main(["eval", str(tmp_path / "absent")]) == 2
    assert "does not exist. Pass a folder written by diffland train" in capsys.readouterr().err


def test_eval_unfinished_run(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")

    assert cli.main(["eval", str(tmp_path)]) == 2
    assert "the run has not finished" in capsys.readouterr().err


def _write_results(folder, experiment, success, steps):
    folder.mkdir()
    entry = {key: None for key in common.CONTROLLER_METRICS}
    entry.update(n_eval=16, success_rate=success, train_seconds=1.0)
    config = {"quick": True, "mlp": {"steps": steps}}
    common.write_results(folder, experiment, config, {"total": 1.0}, {"mlp": entry})


def test_reproduction_reads_seedless_entry():
    # convex_guidance writes its fuel-optimal entry once, without per_seed.
    results = {
        "controllers": {
            "fuel_optimal": {"success_rate": 1.0},
            "mlp": {"per_seed": [{"success_rate": 0.5}, {"success_rate": 0.25}]},
        }
    }
    seed_entries = {"fuel_optimal": {"success_rate": 1.0}, "mlp": {"success_rate": 0.5}}

    rows = cli.check_reproduction(results, [seed_entries, seed_entries])

    matches = {(row["seed"], row["controller"]): row["matches"] for row in rows}
    assert matches == {
        (0, "fuel_optimal"): True,
        (0, "mlp"): True,
        (1, "fuel_optimal"): True,
        (1, "mlp"): False,
    }


def test_compare_side_by_side(tmp_path):
    _write_results(tmp_path / "a", "vertical_landing", 0.25, 10)
    _write_results(tmp_path / "b", "vertical_landing", 0.75, 20)

    table = cli.compare_table((tmp_path / "a", tmp_path / "b"))

    success_row = next(line for line in table.splitlines() if " success " in f" {line} ")
    assert "25.00%" in success_row
    assert "75.00%" in success_row
    assert success_row.index("25.00%") < success_row.index("75.00%")
    assert "mlp.steps: 10 | 20" in table


def test_compare_needs_two_runs(tmp_path):
    _write_results(tmp_path / "a", "vertical_landing", 0.25, 10)

    with pytest.raises(cli.CliError, match="at least two run folders"):
        cli.compare_table((tmp_path / "a",))


def test_bench_passes_options(monkeypatch, tmp_path):
    from experiments import throughput

    received = []
    monkeypatch.setattr(throughput, "main", lambda argv: received.append(argv) or 0)
    argv = ["bench", "--quick", "--out", str(tmp_path), "--figures", "throughput,anchors"]

    assert cli.main([*argv, "--no-anchors"]) == 0
    assert received == [
        ["--quick", "--out", str(tmp_path), "--figures", "throughput,anchors", "--no-anchors"]
    ]


def test_train_passes_num_devices(monkeypatch):
    from experiments import vertical_landing

    received = []
    monkeypatch.setattr(vertical_landing, "main", lambda argv: received.append(argv) or 0)

    assert cli.main(["train", "vertical_landing", "--num-devices", "2"]) == 0
    assert received == [["--log-level", "INFO", "--launcher", "diffland", "--num-devices", "2"]]


def test_train_keeps_every_set_option(monkeypatch):
    from experiments import vertical_landing

    received = []
    monkeypatch.setattr(vertical_landing, "main", lambda argv: received.append(argv) or 0)
    argv = ["train", "vertical_landing", "--set", "a=1", "b=2", "--set", "c=3"]

    assert cli.main(argv) == 0
    assert received[0][-4:] == ["--set", "a=1", "b=2", "c=3"]


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_train_interrupt_prints_diffland_resume(tmp_path, monkeypatch, capsys):
    from experiments import vertical_landing

    # Interrupted while drawing the held-out start states, before any training.
    monkeypatch.setattr(vertical_landing, "draw_held_out", interrupt)
    folder = tmp_path / "run"
    options = [
        "--quick",
        "--seeds",
        "2",
        "--num-devices",
        "1",
        "--set",
        "mlp.steps=3",
        "pid.steps=4",
    ]

    status = cli.main(["train", "vertical_landing", "--out", str(folder), *options])

    assert status == 130
    message = capsys.readouterr().err
    expected = f"diffland train vertical_landing --resume --out {folder} {' '.join(options)}"
    assert f"this command starts the run again in it: {expected}\n" in message
    assert "python -m" not in message
    assert (folder / "config.json").is_file()


def test_list_smoke(capsys):
    assert cli.main(["list"]) == 0

    text = capsys.readouterr().out
    for expected in ("vehicles:", "RigidBody", "diffland_planar", "NeuroPID", "vertical_landing"):
        assert expected in text


@pytest.mark.slow
def test_eval_reproduces_results(tiny_run, reproduced):
    results = json.loads((tiny_run / "results.json").read_text())

    rows = cli.check_reproduction(results, reproduced)

    controllers = {"pid_hand", "pid_tuned", "neuro_pid", "mlp", "fuel_optimal"}
    assert {row["controller"] for row in rows} == controllers
    assert len(rows) == 5 * 7
    for row in rows:
        assert row["matches"], row
    mlp = reproduced[0]["mlp"]
    reported = results["controllers"]["mlp"]["per_seed"][0]
    assert mlp["n_eval"] == 12
    assert mlp["success_rate"] == pytest.approx(reported["success_rate"], abs=1e-6)
    assert mlp["no_touchdown_rate"] == pytest.approx(reported["no_touchdown_rate"], abs=1e-6)


@pytest.mark.slow
def test_eval_flags_changed_results(tiny_run, reproduced):
    results = json.loads((tiny_run / "results.json").read_text())
    entry = results["controllers"]["pid_hand"]["per_seed"][0]
    entry["no_touchdown_rate"] = entry["no_touchdown_rate"] + 0.01

    rows = cli.check_reproduction(results, reproduced)

    differing = [(row["controller"], row["metric"]) for row in rows if not row["matches"]]
    assert differing == [("pid_hand", "no_touchdown_rate")]


@pytest.mark.slow
def test_eval_command_exit_status(tiny_run, reproduced, tmp_path, monkeypatch, capsys):
    # The rescoring itself is covered above; this checks the command's report and status.
    monkeypatch.setattr(cli, "reproduce_metrics", lambda run_dir: reproduced)
    changed = tmp_path / "changed"
    shutil.copytree(tiny_run, changed, ignore=shutil.ignore_patterns("checkpoints"))
    results = json.loads((changed / "results.json").read_text())
    results["controllers"]["mlp"]["per_seed"][0]["n_eval"] = 13
    (changed / "results.json").write_text(json.dumps(results))

    assert cli.main(["eval", str(tiny_run)]) == 0
    assert "all 35 metrics reproduce results.json" in capsys.readouterr().out
    assert cli.main(["eval", str(changed)]) == 1
    captured = capsys.readouterr()
    assert "DIFFERS" in captured.out
    assert "1 of 35 metrics differ from results.json" in captured.err


def _flip_array_bit(checkpoint):
    data = [path for path in checkpoint.glob("default/ocdbt.process_0/d/*") if path.is_file()]
    largest = max(data, key=lambda path: path.stat().st_size)
    content = bytearray(largest.read_bytes())
    content[len(content) // 2] ^= 0x01
    largest.write_bytes(bytes(content))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_eval_rejects_damaged_final_checkpoint(tiny_run, tmp_path, capsys):
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_run, damaged)
    mlp = damaged / "checkpoints" / "seed0" / "mlp"
    _flip_array_bit(mlp / "2")

    assert cli.main(["eval", str(damaged)]) == 2

    error = capsys.readouterr().err
    assert f"checkpoint {mlp / '2'} is unreadable (ChecksumMismatch" in error
    assert "An older checkpoint would give other results" in error
    assert sorted(path.name for path in mlp.iterdir()) == ["2"]


@pytest.mark.slow
def test_eval_rejects_unverifiable_final_checkpoint(tiny_run, tmp_path, capsys):
    unverified = tmp_path / "unverified"
    shutil.copytree(tiny_run, unverified)
    final = unverified / "checkpoints" / "seed0" / "pid_tuned" / "2"
    (final / "checksums.json").unlink()

    assert cli.main(["eval", str(unverified)]) == 2

    error = capsys.readouterr().err
    assert f"checkpoint {final} is unreadable (ChecksumMismatch: " in error
    assert "checksums.json is missing, so the values cannot be verified" in error


@pytest.mark.slow
def test_eval_rejects_missing_final_checkpoint(tiny_run, tmp_path, capsys):
    missing = tmp_path / "missing"
    shutil.copytree(tiny_run, missing)
    mlp = missing / "checkpoints" / "seed0" / "mlp"
    # A resumed training run sets a damaged newest checkpoint aside under this name.
    (mlp / "2").rename(mlp / "2.unreadable")

    assert cli.main(["eval", str(missing)]) == 2

    error = capsys.readouterr().err
    assert f"{mlp} has no checkpoint of the final step 2 (saved steps: [])" in error


@pytest.mark.slow
def test_eval_unreadable_checkpoint_exits_cleanly(tiny_run, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_run, damaged)
    final = damaged / "checkpoints" / "seed0" / "mlp" / "2"
    # Orbax then fails to read the tree's arrays, not only their checksums.
    for path in (final / "default" / "d").iterdir():
        path.write_bytes(b"not an OCDBT data file")

    finished = subprocess.run(
        [sys.executable, "-m", "diffland.cli", "eval", str(damaged)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "DIFFLAND_CHECKS": "0"},
    )

    assert finished.returncode == 2
    assert f"checkpoint {final} is unreadable" in finished.stderr
    assert "Event loop is closed" not in finished.stderr
    assert "Traceback" not in finished.stderr


@pytest.mark.slow
def test_render_smoke_writes_files(tiny_run):
    paths = cli.run_render(cli.Render(run_dir=tiny_run, landers=3, frames=4))

    names = {path.name for path in paths}
    assert names == {
        "phase_portrait.png",
        "controls.png",
        "training.png",
        "landing_mlp.gif",
        "replay.html",
    }
    for path in paths:
        assert path.stat().st_size > 0, path
    with Image.open(tiny_run / "render" / "landing_mlp.gif") as gif:
        assert gif.n_frames == 4


def test_benchmark_listed_apart(capsys):
    assert "throughput" not in cli.discover_experiments()
    assert "time_to_threshold" not in cli.discover_experiments()
    assert set(cli.discover_benchmarks()) == {"throughput"}

    assert cli.main(["list"]) == 0

    text = capsys.readouterr().out
    experiments = text.split("experiments:")[1].split("benchmarks")[0]
    benchmarks = text.split("benchmarks (run with diffland bench):")[1]
    assert "throughput" not in experiments
    assert "time_to_threshold" not in experiments
    assert "throughput" in benchmarks


@pytest.mark.parametrize("name", ["throughput", "time_to_threshold"])
def test_train_rejects_non_experiment(name, tmp_path, monkeypatch, capsys):
    from experiments import throughput

    def fail(argv):
        raise AssertionError(f"diffland train ran {name}")

    monkeypatch.setattr(throughput, "main", fail)
    folder = tmp_path / "run"

    assert cli.main(["train", name, "--out", str(folder)]) == 2

    message = capsys.readouterr().err
    if name == "throughput":
        assert "throughput is a benchmark, not a training experiment" in message
        assert "diffland bench" in message
    else:
        assert "unknown experiment 'time_to_threshold'" in message
    assert not folder.exists()


def _write_bench_results(folder, rates, devices=1):
    folder.mkdir()
    rows = [
        {
            "vehicle": "vertical",
            "configuration": "core",
            "controller": "fixed",
            "path": "batched",
            "devices": devices,
            "batch": batch,
            "steps_per_second": rate,
        }
        for batch, rate in rates.items()
    ]
    anchors = {
        "rows": [{"anchor": "CartPole-v1", "batch": 64, "devices": 1, "steps_per_second": 5e6}]
    }
    config = {"quick": True, "host_devices": devices}
    common.write_results(
        folder, "throughput", config, {"total": 1.0}, throughput=rows, anchors=anchors
    )


def test_compare_benchmark_runs(tmp_path):
    _write_bench_results(tmp_path / "a", {1: 1.5e5, 64: 2.5e6})
    _write_bench_results(tmp_path / "b", {1: 1.25e5, 64: 4.5e6}, devices=2)

    table = cli.compare_table((tmp_path / "a", tmp_path / "b"))

    row = next(line for line in table.splitlines() if line.startswith("vertical core fixed  64"))
    assert row.split()[-2:] == ["2.5e+06", "4.5e+06"]
    assert any(line.split()[-2:] == ["5e+06", "5e+06"] for line in table.splitlines())
    assert "host_devices: 1 | 2" in table


def test_compare_rejects_benchmark_and_training(tmp_path):
    _write_bench_results(tmp_path / "a", {1: 1.5e5})
    _write_results(tmp_path / "b", "vertical_landing", 0.75, 20)

    with pytest.raises(cli.CliError, match="cannot mix benchmark and training runs"):
        cli.compare_table((tmp_path / "a", tmp_path / "b"))


def test_plain_summary_strips_sphinx_roles():
    docstring = (
        "The stage of :func:`~diffland.dynamics.presets.falcon9_like` from\n"
        ":class:`LandingBurnScenario` and ``PLANAR_SCENARIO``.\n\nSecond paragraph."
    )

    summary = cli.plain_summary(docstring)

    assert summary == "The stage of falcon9_like from LandingBurnScenario and PLANAR_SCENARIO."


def test_list_prints_no_sphinx_roles(capsys):
    assert cli.main(["list"]) == 0

    output = capsys.readouterr().out
    assert ":func:" not in output
    assert ":class:" not in output
    assert "``" not in output


@pytest.mark.parametrize("arguments", [["list"], ["--help"], ["train", "--help"]])
def test_closed_output_pipe_exits_quietly(arguments):
    # The reader exits before diffland writes, as `diffland list | head -0` would.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        finished = subprocess.run(
            [sys.executable, "-m", "diffland.cli", *arguments],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    finally:
        os.close(write_end)

    assert "Traceback" not in finished.stderr
    assert "BrokenPipeError" not in finished.stderr
    assert finished.returncode == 1


def test_entry_point_exits_through_exit_process(monkeypatch):
    pyproject = tomllib.loads((pathlib.Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["diffland"] == "diffland.cli:entry_point"
    statuses = []
    monkeypatch.setattr(cli, "main", lambda: 143)
    monkeypatch.setattr(cli, "exit_process", statuses.append)

    cli.entry_point()

    assert statuses == [143]
