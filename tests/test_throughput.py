"""The throughput benchmark: timing rule, compiler figures, CPU peak arithmetic, the
results file of a tiny run, the time-to-threshold record and sharded rollouts."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest

from diffland import benchmarking
from diffland.dynamics import make_vertical_state
from diffland.training import TrainingInterrupted
from experiments import common, throughput, time_to_threshold

FAKE_CPUINFO = textwrap.dedent(
    """\
    processor\t: 0
    model name\t: Example(R) CPU X-1234 @ 2.50GHz
    cpu MHz\t\t: 1800.000
    flags\t\t: fpu sse2 avx avx2 fma avx512f
    processor\t: 1
    model name\t: Example(R) CPU X-1234 @ 2.50GHz
    cpu MHz\t\t: 1800.000
    flags\t\t: fpu sse2 avx avx2 fma avx512f
    """
)

# The tiny run measures the 1-D lander only, because it compiles in seconds. The 6-DOF
# gradient took over a minute to compile on a loaded 2-core machine. Its start states
# are fixed ones (fixed_starts), because the scenario's fuel-optimal filter takes longer
# to compile than the figures.
TINY = dict(
    batch_sizes=(2,),
    horizon=5,
    start_pool=4,
    vehicles=("vertical",),
    controllers=("mlp",),
    anchor_names=("CartPole-v1",),
    gradient_vehicle="vertical",
    gradient_batch=2,
    gradient_horizons=(4,),
    memory_batch=2,
    memory_horizons=(4,),
    compile_batch=2,
    compile_controllers=("pid",),
)


def test_cpu_peak_from_model_name_clock():
    info = benchmarking.parse_cpuinfo(FAKE_CPUINFO)

    peak = benchmarking.cpu_peak_flops(info, fma_units=2)

    assert info["logical_cpus"] == 2
    assert info["model_name_ghz"] == 2.5
    assert peak["fp32_lanes"] == 16
    assert peak["flops_per_cycle_per_core"] == 64
    assert peak["peak_flops"] == pytest.approx(2 * 2.5e9 * 64)
    assert len(peak["assumptions"]) == 4


def test_cpu_peak_from_cpu_mhz_and_avx2():
    text = FAKE_CPUINFO.replace(" @ 2.50GHz", "").replace(" avx512f", "")
    info = benchmarking.parse_cpuinfo(text)

    peak = benchmarking.cpu_peak_flops(info, cores=1, fma_units=1)

    assert peak["clock_source"] == "cpu MHz"
    assert peak["vector_extension"] == "avx2"
    assert peak["peak_flops"] == pytest.approx(1.8e9 * 8 * 2)


def test_time_call_blocks_every_call():
    blocked = []
    ticks = iter(range(100))

    result = benchmarking.time_call(
        lambda x: x + 1,
        1,
        repeats=5,
        warmup=1,
        block=blocked.append,
        clock=lambda: float(next(ticks)),
    )

    assert blocked == [2] * 6
    assert result["seconds"] == [1.0] * 5
    assert result["median_seconds"] == 1.0


def test_time_call_rejects_few_repeats():
    with pytest.raises(ValueError, match="at least 5"):
        benchmarking.time_call(lambda: None, repeats=3)


def test_compiled_figures_of_small_function():
    x = jnp.ones((64,), jnp.float32)
    compiled = jax.jit(lambda a: a * a + a).lower(x).compile()

    memory = benchmarking.memory_figures(compiled)
    flops = benchmarking.compiled_flops(compiled)

    assert memory["argument_size_in_bytes"] == 256
    assert memory["output_size_in_bytes"] == 256
    assert flops is not None and flops >= 64


def test_time_to_threshold_record_reached():
    apg = benchmarking.time_to_threshold_record(100.0, 5_000, 0.995, 0.99)
    ppo = benchmarking.time_to_threshold_record(400.0, 9_000, 0.991, 0.99, cap_seconds=600)

    ratio = benchmarking.compare_time_to_threshold(apg, ppo)

    assert apg["reached"] and ppo["reached"]
    assert set(apg) == {"seconds", "env_steps", "success_rate", "reached", "threshold"}
    assert ppo["cap_seconds"] == 600.0
    assert ratio["ratio"] == pytest.approx(4.0)
    assert ratio["bound"] == "equal"


def test_time_to_threshold_record_not_reached():
    apg = benchmarking.time_to_threshold_record(100.0, 5_000, 0.995, 0.99)
    ppo = benchmarking.time_to_threshold_record(3600.0, 10**8, 0.42, 0.99, cap_seconds=3600)

    ratio = benchmarking.compare_time_to_threshold(apg, ppo)

    assert not ppo["reached"]
    assert ppo["success_rate"] == 0.42
    assert ratio["bound"] == "more than"
    assert ratio["text"] == "more than 36x"


def test_time_to_threshold_without_apg_success():
    apg = benchmarking.time_to_threshold_record(100.0, 5_000, None, 0.99)
    ppo = benchmarking.time_to_threshold_record(50.0, 5_000, 0.999, 0.99)

    assert not apg["reached"]
    assert benchmarking.compare_time_to_threshold(apg, ppo)["ratio"] is None


def test_config_rejects_unknown_figure():
    config = throughput.ThroughputConfig.create(True, figures=("throughput", "speed"))

    with pytest.raises(ValueError, match="--figures throughput,speed is invalid"):
        config.validate()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"fma_units": 0}, "fma_units = 0 is invalid"),
        ({"vehicles": ()}, r"vehicles = \(\) is invalid"),
        ({"compile_controllers": ("pid", "xyz")}, "compile_controllers"),
        ({"anchor_names": ("Foo-v1",)}, "anchor_names"),
        ({"threshold_eval_every": 0}, "threshold_eval_every = 0"),
        ({"max_call_seconds": -1.0}, "max_call_seconds = -1.0 is invalid"),
        ({"ppo_minibatches": 0}, "ppo_minibatches = 0 is invalid"),
        ({"ppo_hidden": (64, 0)}, r"ppo_hidden = \(64, 0\) is invalid"),
        ({"ppo_num_envs": 384}, "must be a multiple of it"),
    ],
)
def test_config_rejects_bad_values(change, expected):
    config = throughput.ThroughputConfig.create(True, **change)

    with pytest.raises(ValueError, match=expected):
        config.validate()


def fixed_starts(setup, pool, batch):
    """Return ``batch`` 1-D lander states 150-250 m up at 40-60 m/s down."""
    del setup, pool
    fraction = jnp.linspace(0.0, 1.0, batch)
    mass = jnp.full(batch, 30_000.0)
    return make_vertical_state(150.0 + 100.0 * fraction, -40.0 - 20.0 * fraction, mass)


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    """Every default figure at a batch of 2 and a few control steps, on one device."""
    folder = common.prepare_run_folder(
        tmp_path_factory.mktemp("bench") / "run", False, throughput.EXPERIMENT
    )
    config = throughput.ThroughputConfig.create(True, **TINY)
    config.validate()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(throughput, "draw_starts", fixed_starts)
        throughput.run(config, folder)
    return json.loads((folder / "results.json").read_text()), folder


def test_tiny_run_writes_documented_keys(tiny_results):
    results, folder = tiny_results

    for key in ("date", "device_count", "hardware", "versions", "throughput", "anchors"):
        assert key in results
    for key in ("gradient", "memory", "compile", "hardware_limit", "timings", "config"):
        assert key in results
    assert results["complete"] is True
    assert set(benchmarking.LIBRARIES) <= set(results["versions"])
    assert results["hardware"]["jax_devices"]
    assert (folder / "plots" / "throughput.png").is_file()


def stopped_run_results(folder, monkeypatch, measure, **changes):
    """Run the tiny benchmark with ``measure`` in place of ``measure_rollout`` until it
    raises ``KeyboardInterrupt``, and return the results.json left in ``folder``."""
    folder = common.prepare_run_folder(folder, False, throughput.EXPERIMENT)
    config = throughput.ThroughputConfig.create(True, **dict(TINY, **changes))
    config.validate()
    monkeypatch.setattr(throughput, "draw_starts", fixed_starts)
    monkeypatch.setattr(throughput, "measure_rollout", measure)
    with pytest.raises(KeyboardInterrupt):
        throughput.run(config, folder)
    return json.loads((folder / "results.json").read_text())


def test_stopped_run_keeps_finished_rows(tmp_path, monkeypatch):
    measure = throughput.measure_rollout
    calls = []

    def stop_at_second_batch(setup, kind, states, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return measure(setup, kind, states, *args, **kwargs)

    results = stopped_run_results(
        tmp_path / "run",
        monkeypatch,
        stop_at_second_batch,
        batch_sizes=(2, 4),
        figures=("throughput", "gradient"),
    )

    assert results["complete"] is False
    assert [row["batch"] for row in results["throughput"]] == [2]
    assert "gradient" not in results


def test_tiny_run_throughput_rows(tiny_results):
    results, _ = tiny_results
    rows = results["throughput"]

    cases = {(row["configuration"], row["controller"], row["batch"]) for row in rows}
    assert cases == {
        (configuration, controller, batch)
        for configuration in ("core", "full")
        for controller in ("mlp",)
        for batch in (2,)
    }
    for row in rows:
        assert row["horizon"] == 5
        assert row["steps_per_second"] > 0
        assert row["physics_steps_per_second"] == row["steps_per_second"] * row["substeps"]


def test_tiny_run_anchor_ratios(tiny_results):
    pytest.importorskip("gymnax", reason="the CartPole anchor is a gymnax environment")
    results, _ = tiny_results
    names = {row["anchor"] for row in results["anchors"]["rows"]}

    assert names == {"CartPole-v1"}
    assert all(row["ratio_to_cartpole"] is not None for row in results["throughput"])


def test_tiny_run_other_figures(tiny_results):
    results, _ = tiny_results

    assert {row["remat"] for row in results["gradient"]} == {"none", "step"}
    assert all(row["gradient_over_loss"] > 0 for row in results["gradient"])
    assert {row["remat"] for row in results["memory"]} == {"none", "step", "nested"}
    assert all(row["temp_bytes_per_step"] is not None for row in results["memory"])
    assert results["compile"][0]["controller"] == "VerticalPID"
    assert results["hardware_limit"]["peak"]["peak_flops"] > 0
    limit_rows = results["hardware_limit"]["rows"]
    assert len(limit_rows) == 2
    assert all(row["flops_per_step"] > 0 for row in limit_rows)


def test_step_cost_counts_one_control_step():
    core = throughput.step_cost(throughput.vehicle_setup("rigid_body", "core", 5), "fixed", 1)
    longer = throughput.step_cost(throughput.vehicle_setup("rigid_body", "core", 50), "fixed", 1)
    full = throughput.step_cost(throughput.vehicle_setup("rigid_body", "full", 5), "fixed", 1)

    # The count is per control step, whatever the horizon of the timed scan.
    assert longer["flops_per_step"] == core["flops_per_step"]
    # Two RK4 sub-steps with drag and wind do several times the work of one Euler step.
    assert full["flops_per_step"] > 4 * core["flops_per_step"]
    # The component layout with its barriers repeats less work than jax.vmap.
    assert core["flops_per_step"] < core["vmap_flops_per_step"]
    assert core["bytes_per_step"] > 0


SHARDING_SCRIPT = textwrap.dedent(
    """\
    import sys
    import jax
    import numpy as np
    from diffland.dynamics import make_vertical_state
    from experiments import throughput

    assert jax.device_count() == 2, jax.devices()
    setup = throughput.vehicle_setup("vertical", "core", 6)
    states = make_vertical_state(
        np.linspace(150.0, 250.0, 4), np.linspace(-40.0, -60.0, 4), np.full(4, 3.0e4)
    )
    example = jax.tree_util.tree_map(lambda x: x[0], states)
    make_policy, variables, carry = throughput._controller(setup, "mlp", example)
    run = jax.jit(throughput.rollout_function(setup, make_policy, carry))
    finals = {}
    for devices in (1, 2):
        placed, used = throughput._place(states, devices)
        assert used == devices
        result = run(variables, placed)
        assert len(jax.tree_util.tree_leaves(result)[0].sharding.device_set) == devices
        finals[devices] = jax.tree_util.tree_leaves(result)
    for one, two in zip(finals[1], finals[2], strict=True):
        np.testing.assert_allclose(np.asarray(one), np.asarray(two), rtol=1e-6, atol=1e-6)
    print("same final states")
    """
)


def test_sharded_rollout_matches_one_device():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    env["JAX_PLATFORMS"] = "cpu"
    root = pathlib.Path(__file__).resolve().parents[1]

    completed = subprocess.run(
        [sys.executable, "-c", SHARDING_SCRIPT],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "same final states" in completed.stdout


class FakeTrainer:
    """Counts updates; the "parameters" are the update count."""

    def step(self, state):
        return FakeState(state.params + 1), {}


class FakeState:
    def __init__(self, params):
        self.params = params


def test_apg_stage_stops_at_threshold():
    clock = time_to_threshold._Clock()
    successes = {2: 0.5, 4: 0.995}

    state, updates, success, reached = time_to_threshold._apg_stage(
        FakeTrainer(), FakeState(0), 10, clock, successes.get, 0.99, 2, 1e6
    )

    assert reached
    assert updates == 4
    assert state.params == 4
    assert success == 0.995


def test_apg_stage_stops_at_cap():
    clock = time_to_threshold._Clock()

    _, updates, success, reached = time_to_threshold._apg_stage(
        FakeTrainer(), FakeState(0), 10, clock, lambda params: 0.1 * params, 0.99, 3, -1.0
    )

    assert not reached
    assert updates == 3
    assert success == pytest.approx(0.3)


def test_apg_stage_keeps_best_success():
    clock = time_to_threshold._Clock()
    successes = {1: 0.6, 2: 0.4, 3: 0.5}

    _, updates, success, reached = time_to_threshold._apg_stage(
        FakeTrainer(), FakeState(0), 3, clock, successes.get, 0.99, 1, 1e6
    )

    assert not reached
    assert updates == 3
    assert success == 0.6


# Takes about 5 minutes on a loaded 2-core machine (it compiles the planar trainer twice
# and brax's PPO), so it runs only on request.
@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("DIFFLAND_BENCH_SLOW") != "1",
    reason="set DIFFLAND_BENCH_SLOW=1 to train APG and PPO briefly on the planar booster",
)
def test_time_to_threshold_tiny():
    config = throughput.ThroughputConfig.create(
        True,
        threshold=0.99,
        threshold_pool=8,
        threshold_held_out=8,
        threshold_eval_every=1,
        apg_batch=4,
        apg_pid_steps=2,
        apg_mlp_steps=2,
        imitation_steps=5,
        imitation_states=2,
        ppo_num_envs=4,
        ppo_batch_size=4,
        ppo_minibatches=2,
        ppo_unroll=5,
        ppo_updates_per_batch=1,
        ppo_eval_every_steps=40,
        ppo_hidden=(8,),
        ppo_cap_seconds=0.0,
        apg_cap_seconds=1e6,
    )

    entry = time_to_threshold.time_to_threshold_figure(config)

    for name in ("apg", "ppo"):
        record = entry[name]
        for key in ("seconds", "env_steps", "success_rate", "reached"):
            assert key in record, (name, key)
        assert record["seconds"] >= 0
    assert entry["apg"]["env_steps"] > 0
    # A zero cap stops PPO at its first held-out evaluation after one round of updates.
    assert entry["ppo"]["env_steps"] > 0
    assert entry["ppo"]["held_out_evaluations"] == 2
    assert entry["ppo"]["reached"] is (entry["ppo"]["success_rate"] >= 0.99)
    assert "text" in entry["ppo_over_apg"]


def test_main_creates_no_unused_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(throughput, "configure_host_devices", lambda count: 1)
    monkeypatch.setattr(throughput, "run", lambda config, run_folder: {})
    folder = tmp_path / "run"

    assert throughput.main(["--quick", "--out", str(folder), "--figures", "compile"]) == 0

    assert sorted(path.name for path in folder.iterdir()) == ["config.json"]


@pytest.mark.parametrize(("number", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stopped_main_reports_kept_results(tmp_path, monkeypatch, capsys, number, status):
    def stopped(config, run_folder):
        raise TrainingInterrupted(number)

    monkeypatch.setattr(throughput, "configure_host_devices", lambda count: 1)
    monkeypatch.setattr(throughput, "run", stopped)
    folder = tmp_path / "run"

    assert throughput.main(["--quick", "--out", str(folder), "--figures", "compile"]) == status
    message = capsys.readouterr().err
    assert f"interrupted by {signal.Signals(number).name}" in message
    assert '"complete": false' in message


def test_run_stopped_at_first_call_leaves_results(tmp_path, monkeypatch):
    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    results = stopped_run_results(tmp_path / "run", monkeypatch, stop, figures=("throughput",))

    assert results["complete"] is False
    assert "throughput" not in results
    assert results["device_count"] >= 1


def test_nonempty_out_message_without_resume(tmp_path, capsys):
    (tmp_path / "results.json").write_text("{}\n")

    with pytest.raises(SystemExit) as exit_info:
        throughput.main(["--quick", "--out", str(tmp_path)])

    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "already exists and is not empty" in message
    assert "Pass --resume" not in message
    assert "throughput cannot resume a run" in message


def test_help_does_not_offer_resume(capsys):
    with pytest.raises(SystemExit):
        throughput.main(["--help"])

    assert "--resume" not in capsys.readouterr().out


# The packages that the lent GPU machine lacks (it has jax, flax, optax, chex and
# orbax-checkpoint only). The script makes importing any of them fail, then runs the
# harness as scripts/gpu_bench.sh does.
WITHOUT_OPTIONAL_PACKAGES = textwrap.dedent(
    """\
    import importlib.abc, runpy, sys

    MISSING = {"brax", "mujoco", "gymnax", "tensorboardX", "tqdm", "tyro", "matplotlib"}

    class Missing(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in MISSING:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Missing())
    try:
        import tyro
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("the import blocker does not work")
    sys.argv = ["experiments.throughput", *sys.argv[1:]]
    runpy.run_module("experiments.throughput", run_name="__main__", alter_sys=True)
    """
)


@pytest.mark.slow
def test_harness_runs_without_optional_packages(tmp_path):
    folder = tmp_path / "run"
    options = ["--figures", "throughput", "--no-anchors", "--vehicles", "vertical"]
    options += ["--batch-sizes", "2", "--set", "horizon=5", "start_pool=4", "controllers=fixed"]
    command = [sys.executable, "-c", WITHOUT_OPTIONAL_PACKAGES, *options, "--out", str(folder)]

    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)

    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = json.loads((folder / "results.json").read_text())["throughput"]
    assert {(row["configuration"], row["batch"]) for row in rows} == {("core", 2), ("full", 2)}
