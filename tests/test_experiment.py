"""The vertical-landing experiment: a tiny end-to-end run and its results file. The run
folder and config checks that every experiment shares."""

import ast
import dataclasses
import json
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

from diffland import console
from diffland.training.interrupts import TrainingInterrupted
from diffland.training.memory import InsufficientMemoryError
from experiments import (
    booster_landing,
    common,
    planar_landing,
    precision,
    rigid_body_landing,
    robustness,
    throughput,
    vertical_landing,
)
from experiments.vertical_landing import ControllerSetting, VerticalLandingConfig

CONTROLLERS = ("pid_hand", "pid_tuned", "neuro_pid", "mlp", "fuel_optimal")
HELD_OUT = 16


def tiny_config():
    setting = ControllerSetting(steps=2, learning_rate=1e-3, batch_size=8)
    return VerticalLandingConfig(
        quick=True,
        seeds=1,
        control_dt=0.1,
        horizon_seconds=20.0,
        train_pool=32,
        validation_states=8,
        held_out_states=HELD_OUT,
        sampling_chunk=512,
        pid=setting,
        neuro_pid=setting,
        mlp=setting,
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Run the experiment once with the tiny config and return the config, the run folder
    and the results that ``run`` returns."""
    config = tiny_config()
    folder = common.prepare_run_folder(
        tmp_path_factory.mktemp("runs") / "tiny", False, "vertical_landing"
    )
    common.save_config(folder, config, resume=False)
    returned = vertical_landing.run(config, folder, resume=False)
    return config, folder, returned


@pytest.mark.slow
def test_experiment_smoke_results_schema(tiny_run):
    config, folder, _ = tiny_run

    results = json.loads((folder / "results.json").read_text())

    assert results["schema_version"] == 1
    assert results["experiment"] == "vertical_landing"
    assert results["config"] == json.loads(json.dumps(dataclasses.asdict(config)))
    assert set(results["timings"]) == {"compile", "train", "eval", "total"}
    for name, seconds in results["timings"].items():
        assert seconds >= 0.0, name
    assert results["timings"]["total"] >= results["timings"]["compile"]
    assert set(results["controllers"]) == set(CONTROLLERS)


@pytest.mark.slow
@pytest.mark.parametrize("name", CONTROLLERS)
def test_experiment_smoke_controller_entry(tiny_run, name):
    _, folder, _ = tiny_run
    entry = json.loads((folder / "results.json").read_text())["controllers"][name]

    assert set(entry) == {*common.CONTROLLER_METRICS, "per_seed"}
    assert entry["n_eval"] == HELD_OUT
    assert 0.0 <= entry["success_rate"] <= 1.0
    assert 0.0 <= entry["no_touchdown_rate"] <= 1.0
    assert len(entry["per_seed"]) == 1
    assert entry["per_seed"][0]["n_eval"] == HELD_OUT
    if entry["touchdown_speed_max"] is not None:
        assert entry["touchdown_speed_max"] >= entry["touchdown_speed_mean"] >= 0.0


@pytest.mark.slow
def test_experiment_smoke_fuel_optimal_entry(tiny_run):
    _, folder, _ = tiny_run
    entry = json.loads((folder / "results.json").read_text())["controllers"]["fuel_optimal"]

    # Every held-out state is drawn feasible, and the burn stops exactly at the ground.
    assert entry["success_rate"] == 1.0
    assert entry["propellant_ratio_to_optimal"] == 1.0
    assert entry["touchdown_speed_max"] == 0.0
    assert 1000.0 < entry["propellant_mean"] < 9000.0


@pytest.mark.slow
def test_experiment_smoke_run_folder_files(tiny_run):
    _, folder, _ = tiny_run

    assert (folder / "plots" / "landings_seed0.png").stat().st_size > 0
    assert (folder / "plots" / "training_seed0.png").stat().st_size > 0
    for name in ("pid_tuned", "neuro_pid", "mlp"):
        assert any((folder / "checkpoints" / "seed0" / name).iterdir()), name
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert {record["controller"] for record in records} == {"pid_tuned", "neuro_pid", "mlp"}
    assert json.loads((folder / "config.json").read_text())["held_out_states"] == HELD_OUT


@pytest.mark.slow
def test_resume_of_finished_run_keeps_timings(tiny_run, tmp_path):
    config, folder, _ = tiny_run
    copy = shutil.copytree(folder, tmp_path / "run")
    before = json.loads((copy / "results.json").read_text())

    common.save_config(copy, config, resume=True)
    vertical_landing.run(config, copy, resume=True)
    after = json.loads((copy / "results.json").read_text())

    assert before["timings"]["compile"] > 0.0
    assert after["timings"]["compile"] == pytest.approx(before["timings"]["compile"])
    assert after["timings"]["train"] == pytest.approx(before["timings"]["train"])
    for name in ("pid_tuned", "neuro_pid", "mlp"):
        for key in ("train_seconds", "compile_seconds", "success_rate", "propellant_mean"):
            assert after["controllers"][name][key] == before["controllers"][name][key], (name, key)


# -- run folder checks -------------------------------------------------------------------


def test_prepare_run_folder_rejects_nonempty(tmp_path):
    (tmp_path / "notes.txt").write_text("an earlier run\n")

    with pytest.raises(common.RunFolderError, match="already exists and is not empty"):
        common.prepare_run_folder(tmp_path, resume=False, experiment="vertical_landing")


def test_prepare_run_folder_accepts_empty(tmp_path):
    folder = common.prepare_run_folder(tmp_path / "new", resume=False, experiment="x")

    for sub in ("checkpoints", "plots", "tensorboard"):
        assert (folder / sub).is_dir(), sub


def test_resume_needs_config_json(tmp_path):
    with pytest.raises(common.RunFolderError, match="has no config.json"):
        common.prepare_run_folder(tmp_path, resume=True, experiment="vertical_landing")


def test_resume_names_missing_folder(tmp_path):
    with pytest.raises(common.RunFolderError, match="missing does not exist"):
        common.prepare_run_folder(tmp_path / "missing", resume=True, experiment="x")


def test_resume_rejects_changed_config(tmp_path):
    folder = common.prepare_run_folder(tmp_path / "run", resume=False, experiment="x")
    common.save_config(folder, tiny_config(), resume=False)
    changed = dataclasses.replace(tiny_config(), held_out_states=HELD_OUT + 1)

    with pytest.raises(common.RunFolderError, match="differs from this run's"):
        common.save_config(folder, changed, resume=True)


def test_main_rejects_nonempty_out(tmp_path, capsys):
    (tmp_path / "results.json").write_text("{}\n")

    with pytest.raises(SystemExit) as exit_info:
        vertical_landing.main(["--quick", "--out", str(tmp_path)])

    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "already exists and is not empty" in message
    assert str(tmp_path) in message
    assert not (tmp_path / "config.json").exists()


def test_main_rejects_zero_seeds(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        vertical_landing.main(["--seeds", "0", "--out", str(tmp_path / "run")])

    assert exit_info.value.code == 2
    assert "--seeds 0 is invalid: pass an integer >= 1" in capsys.readouterr().err


def test_resume_accepts_new_num_devices(tmp_path, caplog):
    folder = common.prepare_run_folder(tmp_path / "run", resume=False, experiment="x")
    common.save_config(folder, tiny_config(), resume=False)
    moved = dataclasses.replace(tiny_config(), num_devices=1)

    with caplog.at_level(logging.INFO, logger=common.__name__):
        values = common.save_config(folder, moved, resume=True)

    assert values["num_devices"] == 1
    assert json.loads((folder / "config.json").read_text())["num_devices"] == 1
    messages = [record.getMessage() for record in caplog.records]
    assert any("num_devices = 1, which was None" in message for message in messages)


def test_resume_accepts_config_without_remat(tmp_path):
    # A run written before remat was a config field has no remat in its config.json.
    folder = common.prepare_run_folder(tmp_path / "run", resume=False, experiment="x")
    common.save_config(folder, tiny_config(), resume=False)
    stored = json.loads((folder / "config.json").read_text())
    del stored["remat"]
    (folder / "config.json").write_text(json.dumps(stored))

    common.save_config(folder, tiny_config(), resume=True)
    with pytest.raises(common.RunFolderError, match="remat: stored 'none', requested 'step'"):
        common.save_config(folder, dataclasses.replace(tiny_config(), remat="step"), resume=True)


def test_resume_checks_fields_besides_num_devices(tmp_path):
    folder = common.prepare_run_folder(tmp_path / "run", resume=False, experiment="x")
    common.save_config(folder, tiny_config(), resume=False)
    changed = dataclasses.replace(tiny_config(), num_devices=1, held_out_states=HELD_OUT + 1)

    with pytest.raises(common.RunFolderError, match="differs from this run's") as error:
        common.save_config(folder, changed, resume=True)

    assert "held_out_states" in str(error.value)
    assert "num_devices" not in str(error.value)
    assert json.loads((folder / "config.json").read_text())["num_devices"] is None


def test_prepare_run_folder_creates_only_subfolders(tmp_path):
    folder = common.prepare_run_folder(
        tmp_path / "new", resume=False, experiment="x", subfolders=("plots",)
    )

    assert folder.is_dir()
    assert [path.name for path in folder.iterdir()] == ["plots"]


def test_nonempty_folder_message_without_resume(tmp_path):
    (tmp_path / "notes.txt").write_text("an earlier run\n")

    with pytest.raises(common.RunFolderError, match="already exists and is not empty") as error:
        common.prepare_run_folder(tmp_path, resume=False, experiment="x", resumable=False)

    assert "--resume" not in str(error.value)
    assert "x cannot resume a run, so choose another --out" in str(error.value)


def _fail_if_run(*args, **kwargs):
    raise AssertionError("the experiment ran although its config is invalid")


INVALID_SETTINGS = [
    (vertical_landing, "horizon_seconds=0.01", "horizon_seconds = 0.01 is invalid"),
    (planar_landing, "control_dt=0", "control_dt = 0.0 is invalid"),
    (planar_landing, "substeps=0", "substeps = 0 is invalid"),
    (planar_landing, "horizon_seconds=nan", "horizon_seconds = nan is invalid"),
    (planar_landing, "horizon_seconds=0.01", "horizon_seconds = 0.01 is invalid"),
    (planar_landing, "train_pool=0", "train_pool = 0 is invalid"),
    (planar_landing, "validation_states=0", "validation_states = 0 is invalid"),
    (planar_landing, "held_out_states=-1", "held_out_states = -1 is invalid"),
    (planar_landing, "sampling_chunk=0", "sampling_chunk = 0 is invalid"),
    (rigid_body_landing, "substeps=0", "substeps = 0 is invalid"),
    (robustness, "train_pool=0", "train_pool = 0 is invalid"),
    (precision, "vertical_steps=0", "vertical_steps = 0 is invalid"),
    (precision, "rigid_body_steps=0", "rigid_body_steps = 0 is invalid"),
    (precision, "batch_size=0", "batch_size = 0 is invalid"),
    (precision, "learning_rate=0", "learning_rate = 0.0 is invalid"),
    (precision, "train_pool=0", "train_pool = 0 is invalid"),
    (precision, "validation_states=0", "validation_states = 0 is invalid"),
    (precision, "held_out_states=0", "held_out_states = 0 is invalid"),
    (throughput, "ppo_num_envs=0", "ppo_num_envs = 0 is invalid"),
    (throughput, "ppo_num_envs=300", "ppo_num_envs = 300 is invalid"),
    (throughput, "ppo_unroll=0", "ppo_unroll = 0 is invalid"),
    (throughput, "ppo_eval_every_steps=0", "ppo_eval_every_steps = 0 is invalid"),
    (throughput, "ppo_hidden=0", r"ppo_hidden = (0,) is invalid"),
]


@pytest.mark.parametrize(
    ("module", "assignment", "expected"),
    INVALID_SETTINGS,
    ids=[f"{module.__name__.split('.')[-1]}-{text}" for module, text, _ in INVALID_SETTINGS],
)
def test_invalid_setting_leaves_no_folder(
    module, assignment, expected, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(module, "run", _fail_if_run, raising=False)
    monkeypatch.setattr(booster_landing, "run", _fail_if_run)
    if module is throughput:
        monkeypatch.setattr(throughput, "configure_host_devices", lambda count: 1)
    folder = tmp_path / "run"

    with pytest.raises(SystemExit) as exit_info:
        module.main(["--quick", "--out", str(folder), "--set", assignment])

    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err
    assert not folder.exists()


def _git(folder, *arguments):
    command = ["git", "-C", str(folder), "-c", "user.name=test", "-c", "user.email=test@test"]
    return subprocess.run([*command, *arguments], capture_output=True, text=True, check=True)


@pytest.fixture
def git_checkout(tmp_path, monkeypatch):
    """Return a git checkout with one commit, or skip where git is missing."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    # Stop git from finding a checkout above the temporary folder.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    folder = tmp_path / "checkout"
    folder.mkdir()
    _git(folder, "init", "-q")
    (folder / "module.py").write_text("VALUE = 1\n")
    _git(folder, "add", "module.py")
    _git(folder, "commit", "-q", "-m", "first")
    return folder


def test_source_revision_clean_checkout(git_checkout):
    head = _git(git_checkout, "rev-parse", "HEAD").stdout.strip()

    assert common.source_revision(git_checkout) == {"commit": head, "modified": False}


def test_source_revision_modified_checkout(git_checkout):
    (git_checkout / "module.py").write_text("VALUE = 2\n")
    head = _git(git_checkout, "rev-parse", "HEAD").stdout.strip()

    assert common.source_revision(git_checkout) == {"commit": head, "modified": True}


def test_source_revision_outside_git(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))

    assert common.source_revision(tmp_path) == {"commit": None, "modified": None}


def test_results_file_records_source(tmp_path):
    path = common.write_results(tmp_path, "vertical_landing", {}, {"total": 1.0})

    recorded = json.loads(path.read_text())["source"]

    assert recorded == common.source_revision()


def test_interrupted_status_per_signal():
    assert common.interrupted_status(TrainingInterrupted(signal.SIGTERM)) == 143
    assert common.interrupted_status(TrainingInterrupted(signal.SIGINT)) == 130
    assert common.interrupted_status(KeyboardInterrupt()) == 130


def main_blocks() -> dict[str, list[str]]:
    """Return the statements of each experiment module's ``if __name__ == "__main__":``
    block, by module name."""
    blocks = {}
    for path in sorted(pathlib.Path(common.__file__).parent.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.If) and ast.unparse(node.test) == "__name__ == '__main__'":
                blocks[path.stem] = [ast.unparse(statement) for statement in node.body]
    return blocks


def test_entry_points_use_shared_runner():
    blocks = main_blocks()

    assert "vertical_landing" in blocks
    helpers = {"booster_landing", "time_to_threshold"}
    for name, statements in blocks.items():
        if name in helpers:
            assert len(statements) == 1, name
            assert statements[0].startswith("common.reject_entry_point("), name
        else:
            assert statements == ["common.run_entry_point(main)"], name
    # Every module that python -m can run either runs or rejects, so that a signal
    # recorded during its imports is acted on.
    modules = {path.stem for path in pathlib.Path(common.__file__).parent.glob("*.py")}
    assert modules - set(blocks) == {"__init__", "common", "startup"}


@pytest.mark.parametrize("module", ["booster_landing", "time_to_threshold"])
def test_helper_modules_reject_running(module):
    completed = subprocess.run(
        [sys.executable, "-m", f"experiments.{module}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=pathlib.Path(common.__file__).parents[1],
    )

    assert completed.returncode == 2
    assert completed.stderr.startswith(f"error: experiments.{module} is ")
    assert "Run python -m experiments." in completed.stderr


SIGNAL_PENDING_AT_EXIT = """
import os, signal
from experiments import startup
startup.record_stop_signals()
os.kill(os.getpid(), signal.SIGTERM)
# The module ends here without restore_stop_signals, as one without an entry point does.
"""


def test_recorded_signal_delivered_at_exit():
    completed = subprocess.run(
        [sys.executable, "-c", SIGNAL_PENDING_AT_EXIT],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=pathlib.Path(common.__file__).parents[1],
    )

    assert completed.returncode == -signal.SIGTERM


def test_entry_point_closed_pipe_exits_quietly(monkeypatch):
    # The reader has exited before the results table is written, as `| head -0` does.
    read_end, write_end = os.pipe()
    os.close(read_end)
    closed_output = os.fdopen(write_end, "w")
    monkeypatch.setattr(sys, "stdout", closed_output)

    def main(argv):
        print("controller  success")
        return 0

    try:
        with pytest.raises(SystemExit) as exited:
            common.run_entry_point(main)
    finally:
        closed_output.close()

    assert exited.value.code == 1


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_early_interrupt_prints_resume_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(vertical_landing, "draw_held_out", interrupt)
    folder = tmp_path / "run"

    status = vertical_landing.main(["--quick", "--out", str(folder), "--set", "mlp.steps=3"])

    assert status == 130
    message = capsys.readouterr().err
    assert "interrupted by SIGINT before the first checkpoint was saved" in message
    expected = f"python -m experiments.vertical_landing --resume --out {folder} --quick"
    assert f"{expected} --set mlp.steps=3\n" in message


def test_memory_shortage_reported_without_traceback(tmp_path, monkeypatch, capsys):
    def too_large(*args, **kwargs):
        raise InsufficientMemoryError("recording 9 rollouts needs about 2.0 GiB.")

    monkeypatch.setattr(vertical_landing, "draw_held_out", too_large)
    folder = tmp_path / "run"

    status = vertical_landing.main(["--quick", "--out", str(folder)])

    assert status == 1
    message = capsys.readouterr().err
    assert message.startswith("\nerror: recording 9 rollouts needs about 2.0 GiB. The run")
    assert f"pass a new --out folder, because {folder} keeps the settings" in message


def test_memory_error_names_set_fields(tmp_path, monkeypatch, capsys):
    def too_large(*args, **kwargs):
        raise InsufficientMemoryError("one training update needs about 9.0 GiB.")

    monkeypatch.setattr(vertical_landing, "draw_held_out", too_large)

    assert vertical_landing.main(["--quick", "--out", str(tmp_path / "run")]) == 1
    message = capsys.readouterr().err
    assert "With --set, remat=step or remat=nested sets SimConfig.remat" in message
    assert "NAME.batch_size=N the batch size of controller NAME" in message


def test_interrupt_after_checkpoint_says_continue(tmp_path, capsys):
    checkpoint = tmp_path / "checkpoints" / "seed0" / "mlp" / "3"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state").write_text("saved")

    status = common.report_interrupt(TrainingInterrupted(signal.SIGTERM), tmp_path, "COMMAND")

    assert status == 143
    assert capsys.readouterr().err == "\ninterrupted by SIGTERM; continue with: COMMAND\n"


def test_resume_command_forms():
    parser = common.experiment_parser("vertical_landing", "test")
    options = ["--quick", "--seeds", "2", "--num-devices", "1", "--set", "a=1", "b=(1, 2)"]
    folder = pathlib.Path("runs/my run")

    python_form = common.resume_command("vertical_landing", parser.parse_args(options), folder)
    diffland_args = parser.parse_args([*options, "--launcher", "diffland"])
    diffland_form = common.resume_command("vertical_landing", diffland_args, folder)

    rest = "--resume --out 'runs/my run' --quick --seeds 2 --num-devices 1 --set a=1 'b=(1, 2)'"
    assert python_form == f"python -m experiments.vertical_landing {rest}"
    assert diffland_form == f"diffland train vertical_landing {rest}"


def test_resume_command_keeps_log_level():
    parser = common.experiment_parser("vertical_landing", "test")
    args = parser.parse_args(["--log-level", "warning", "--launcher", "diffland"])

    command = common.resume_command("vertical_landing", args, pathlib.Path("runs/a"))

    assert command == "diffland train vertical_landing --resume --out runs/a --log-level WARNING"


SIGTERM_BEFORE_TRAINING = """
import os, signal, sys, time
from experiments import vertical_landing

def draw_held_out(config, task):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)

vertical_landing.draw_held_out = draw_held_out
sys.exit(vertical_landing.main(["--quick", "--out", sys.argv[1]]))
"""


def test_sigterm_before_training_prints_resume(tmp_path):
    folder = tmp_path / "run"

    finished = subprocess.run(
        [sys.executable, "-c", SIGTERM_BEFORE_TRAINING, str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=pathlib.Path(common.__file__).parents[1],
    )

    assert finished.returncode == 143
    assert "interrupted by SIGTERM before the first checkpoint was saved" in finished.stderr
    assert f"python -m experiments.vertical_landing --resume --out {folder}" in finished.stderr


INTERRUPT_DURING_COMPILE = """
import pathlib, sys
import jax, jax.numpy as jnp
from diffland.training.interrupts import StopSignals
from experiments import common

def slow_to_compile(x):
    # An estimated 7 s of XLA compile time on 2 CPU cores, long enough to interrupt.
    for offset in range(600):
        x = jnp.sin(x @ x) + offset
    return x

def main(argv):
    try:
        with StopSignals():
            print("compiling", flush=True)
            jax.jit(slow_to_compile).lower(jnp.ones((3, 3))).compile()
    except KeyboardInterrupt as interrupt:
        return common.report_interrupt(interrupt, pathlib.Path(sys.argv[1]), "COMMAND")
    return 0

common.run_entry_point(main)
"""


def child_environment() -> dict[str, str]:
    """Return the environment for an experiment subprocess that compiles afresh on the CPU."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_ENABLE_COMPILATION_CACHE="false")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    return env


@pytest.fixture
def sigint_not_ignored():
    """Let subprocesses started in the test receive SIGINT.

    Tests run in the background of a non-interactive shell ignore SIGINT, and their
    subprocesses would inherit that. A Python handler is reset to the default at exec.
    """
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_interrupt_during_compile_exits_cleanly(tmp_path):
    # Interpreter finalization would destroy the JAX client while XLA still compiles on
    # its threads, which ended 5 of 6 such runs with a segmentation fault (jaxlib 0.10.2,
    # 2 CPU cores). Three runs make a miss unlikely.
    # NOTE: on a machine that compiles the function in under 0.5 s, this cannot catch it.
    for attempt in range(3):
        process = subprocess.Popen(
            [sys.executable, "-c", INTERRUPT_DURING_COMPILE, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_environment(),
            cwd=pathlib.Path(common.__file__).parents[1],
        )
        assert process.stdout.readline() == "compiling\n"
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=300)

        assert process.returncode == 143, (attempt, stderr)
        assert "interrupted by SIGTERM before the first checkpoint was saved" in stderr


def wait_for_jax_import(process: subprocess.Popen) -> None:
    """Return once ``process`` has loaded jaxlib's shared library, early in ``import jax``."""
    maps = pathlib.Path(f"/proc/{process.pid}/maps")
    deadline = time.monotonic() + 60
    while "jaxlib" not in maps.read_text():
        assert process.poll() is None, "the experiment exited before importing JAX"
        assert time.monotonic() < deadline, "the experiment did not import JAX in 60 s"
        time.sleep(0.005)


@pytest.mark.skipif(not pathlib.Path("/proc/self/maps").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_imports_stops_run(tmp_path, signal_number, sigint_not_ignored):
    folder = tmp_path / "run"
    # Tiny settings, so that a run that ignores the signal still ends soon.
    tiny = [
        "control_dt=0.1",
        "train_pool=32",
        "validation_states=8",
        "held_out_states=12",
        "mlp.steps=2",
        "pid.steps=2",
        "neuro_pid.steps=2",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "experiments.vertical_landing", "--quick", "--out", str(folder)]
        + ["--set", *tiny],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_environment(),
        cwd=pathlib.Path(common.__file__).parents[1],
    )
    wait_for_jax_import(process)
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=300)

    name = signal.Signals(signal_number).name
    assert process.returncode == 128 + signal_number, stderr
    assert f"interrupted by {name} while starting, before the run folder was created" in stderr
    assert not folder.exists()


EXIT_AFTER_INTERRUPT = """
import logging.handlers, sys
from diffland.console import exit_process

# Both hold their output until flushed: a buffered log handler and stdout into a pipe.
logger = logging.getLogger("run")
logger.propagate = False
logger.addHandler(logging.handlers.MemoryHandler(100, target=logging.StreamHandler()))
logger.warning("buffered record")
sys.stdout.write("buffered output")
exit_process(int(sys.argv[1]))
"""


@pytest.mark.parametrize("status", [130, 143])
def test_exit_process_flushes_output(status):
    finished = subprocess.run(
        [sys.executable, "-c", EXIT_AFTER_INTERRUPT, str(status)],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert finished.returncode == status
    assert finished.stdout == "buffered output"
    assert finished.stderr == "buffered record\n"


def test_exit_process_other_status_raises():
    with pytest.raises(SystemExit) as exited:
        console.exit_process(1)

    assert exited.value.code == 1
