"""Data-parallel training on several devices, forced on the CPU in a subprocess.

XLA fixes the CPU device count when JAX starts, so the four-device runs happen in a
subprocess started with ``--xla_force_host_platform_device_count=4``. The test process
keeps its one device and restores the checkpoint written there.
"""

import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from training_scenarios import entries_under, flat_params, make_trainer, subprocess_environment

from diffland.training import TrainConfig

SCRIPT = pathlib.Path(__file__).with_name("training_scenarios.py")
FORCED_DEVICES = 4


def run_scenario(*args, env, timeout=600):
    """Run the scenario script and return the completed process (output captured)."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def four_device_run(tmp_path_factory):
    """Run the ``devices`` scenario on four CPU devices; return its folder and arrays."""
    folder = tmp_path_factory.mktemp("devices")
    cache = tmp_path_factory.getbasetemp() / "jax-compilation-cache"
    env = subprocess_environment(cache, devices=FORCED_DEVICES)
    completed = run_scenario("devices", folder, env=env)
    assert completed.returncode == 0, completed.stderr[-4000:]
    with np.load(folder / "devices.npz") as data:
        arrays = {name: data[name] for name in data.files}
    return folder, arrays


@pytest.mark.slow
def test_four_devices_split_the_batch(four_device_run):
    _, arrays = four_device_run

    assert int(arrays["device_count"]) == FORCED_DEVICES
    assert int(arrays["parallel_param_devices"]) == FORCED_DEVICES
    assert int(arrays["update_all_reduces"]) > 0


@pytest.mark.slow
def test_four_devices_match_one_device(four_device_run):
    _, arrays = four_device_run
    parallel = entries_under(arrays, "parallel")
    single = entries_under(arrays, "single")

    assert parallel.keys() == single.keys()
    assert parallel
    for name in parallel:
        # The batch mean adds up in another order on four devices: float32 rounding only.
        np.testing.assert_allclose(parallel[name], single[name], rtol=1e-5, atol=1e-6, err_msg=name)
    initial = flat_params(make_trainer(num_devices=1).init().params)
    moved = max(float(np.max(np.abs(parallel[name] - initial[name]))) for name in parallel)
    assert moved > 1e-3  # training moved the parameters, so the comparison means something


@pytest.mark.slow
def test_four_device_checkpoint_restores_on_two(four_device_run):
    _, arrays = four_device_run
    parallel = entries_under(arrays, "parallel")
    restored = entries_under(arrays, "restored_on_two")

    assert int(arrays["restored_step"]) == 8
    assert int(arrays["restored_devices"]) == 2
    for name in parallel:
        np.testing.assert_array_equal(restored[name], parallel[name], err_msg=name)


@pytest.mark.slow
def test_four_device_checkpoint_restores_on_one(four_device_run):
    folder, arrays = four_device_run
    parallel = entries_under(arrays, "parallel")

    state = make_trainer(folder / "checkpoints", num_devices=1).restore()

    assert int(state.step) == 8
    restored = flat_params(state.params)
    for name in parallel:
        np.testing.assert_array_equal(restored[name], parallel[name], err_msg=name)
    leaf = jax.tree_util.tree_leaves(state.params)[0]
    assert len(leaf.sharding.device_set) == 1


@pytest.mark.slow
def test_rollout_outcomes_split_over_devices(four_device_run):
    _, arrays = four_device_run

    assert int(arrays["outcome_on_all/devices"]) == FORCED_DEVICES
    assert int(arrays["outcome_on_1/devices"]) == 1
    # Each lander is rolled out on its own, so the split changes no value beyond rounding.
    np.testing.assert_allclose(
        arrays["outcome_on_all/propellant"], arrays["outcome_on_1/propellant"], rtol=1e-6
    )


@pytest.mark.slow
def test_indivisible_batch_rejected(four_device_run):
    _, arrays = four_device_run

    message = str(arrays["indivisible_batch_error"])
    assert "TrainConfig.batch_size = 6 cannot be split evenly over 4 devices" in message
    assert "Use a multiple of 4" in message


def test_more_devices_than_present_rejected():
    count = len(jax.devices())
    with pytest.raises(ValueError, match=f"num_devices = {count + 1} but JAX lists only {count}"):
        make_trainer(num_devices=count + 1)


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_train_config_rejects_bad_num_devices(value):
    with pytest.raises(ValueError, match=r"TrainConfig\.num_devices = .* must be an integer >= 1"):
        TrainConfig(num_devices=value)
