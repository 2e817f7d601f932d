"""Two-process training with ``jax.distributed.initialize`` on the CPU.

Two subprocesses on this machine form one JAX job: process 0 runs the coordinator on
127.0.0.1 at a free port, and each process has two CPU devices, so the trainer's mesh
spans four devices in two processes. jax 0.10.2 runs the cross-process collectives on
the CPU with gloo over TCP. The test process, with one device, trains the same
configuration as the reference.
"""

import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest
from training_scenarios import (
    distributed_settings,
    entries_under,
    flat_params,
    flat_state,
    make_trainer,
    start_pool,
    subprocess_environment,
)

from diffland.training import rollout_outcomes

SCRIPT = pathlib.Path(__file__).with_name("training_scenarios.py")
PROCESSES = 2
LOCAL_DEVICES = 2


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """Run the ``distributed`` scenario in two processes and return each one's arrays."""
    folder = tmp_path_factory.mktemp("distributed")
    env = subprocess_environment(tmp_path_factory.getbasetemp() / "jax-compilation-cache")
    env["JAX_PLATFORMS"] = "cpu"
    coordinator = f"127.0.0.1:{free_port()}"

    logs = [open(folder / f"log{index}.txt", "w") for index in range(PROCESSES)]  # noqa: SIM115
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                "distributed",
                str(folder),
                "--coordinator",
                coordinator,
                "--process-id",
                str(index),
                "--num-processes",
                str(PROCESSES),
                "--local-devices",
                str(LOCAL_DEVICES),
            ],
            env=env,
            stdout=logs[index],
            stderr=subprocess.STDOUT,
        )
        for index in range(PROCESSES)
    ]
    try:
        codes = [process.wait(timeout=600) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in logs:
            log.close()

    for index, code in enumerate(codes):
        output = (folder / f"log{index}.txt").read_text()[-4000:]
        assert code == 0, f"process {index} exited with {code}:\n{output}"

    runs = []
    for index in range(PROCESSES):
        with np.load(folder / f"process{index}.npz") as data:
            runs.append({name: data[name] for name in data.files})
    return folder, runs


@pytest.fixture(scope="module")
def one_process_run():
    """Train the same configuration in this process on one device."""
    trainer = make_trainer(num_devices=1, **distributed_settings())
    result = trainer.train()
    _, outcome = rollout_outcomes(
        trainer.task, trainer.controller, {"params": result.state.params}, start_pool()
    )
    return result, np.asarray(outcome.propellant_used)


@pytest.mark.slow
def test_two_processes_form_one_mesh(two_process_run):
    _, runs = two_process_run

    for index, arrays in enumerate(runs):
        assert int(arrays["process_count"]) == PROCESSES
        assert int(arrays["process_index"]) == index
        assert int(arrays["local_device_count"]) == LOCAL_DEVICES
        assert int(arrays["mesh_device_count"]) == PROCESSES * LOCAL_DEVICES
        assert int(arrays["param_devices"]) == PROCESSES * LOCAL_DEVICES
        # The compiled update sums the gradient across devices, so the batch is split.
        assert int(arrays["update_all_reduces"]) > 0


@pytest.mark.slow
def test_two_processes_match_one_process(two_process_run, one_process_run):
    _, runs = two_process_run
    result, _ = one_process_run
    single = flat_state(result.state)

    for arrays in runs:
        final = entries_under(arrays, "final")
        assert final.keys() == single.keys()
        for name in single:
            # The batch mean adds up in another order on four devices: float32 rounding.
            np.testing.assert_allclose(
                final[name], single[name], rtol=1e-5, atol=1e-6, err_msg=name
            )
    initial = flat_params(make_trainer(num_devices=1).init().params)
    final = entries_under(runs[0], "final")
    moved = max(float(np.max(np.abs(final[f"params{name}"] - initial[name]))) for name in initial)
    assert moved > 1e-3  # training moved the parameters, so the comparison means something


@pytest.mark.slow
def test_two_process_validation_matches(two_process_run, one_process_run):
    _, runs = two_process_run
    result, propellant = one_process_run
    best = flat_params(result.state.best_params)

    for arrays in runs:
        assert int(arrays["best_step"]) == int(result.state.best_step)
        for name, value in entries_under(arrays, "best").items():
            np.testing.assert_allclose(value, best[name], rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(arrays["outcome/propellant"], propellant, rtol=1e-5)


@pytest.mark.slow
def test_two_process_checkpoint_restores(two_process_run):
    folder, runs = two_process_run

    for arrays in runs:
        assert int(arrays["restored_step"]) == 8
        final = entries_under(arrays, "final")
        for name, value in entries_under(arrays, "restored").items():
            np.testing.assert_array_equal(value, final[f"params{name}"], err_msg=name)
    # The checkpoint written by both processes restores in this one-device process.
    state = make_trainer(folder / "checkpoints", num_devices=1, **distributed_settings()).restore()
    final = entries_under(runs[0], "final")
    for name, value in flat_params(state.params).items():
        np.testing.assert_array_equal(value, final[f"params{name}"], err_msg=name)
