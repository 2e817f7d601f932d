"""Memory checks that run before a rollout or a training update is compiled."""

import jax
import pytest
from jax import monitoring
from test_training import landing_task, start_pool, train_config

from diffland.controllers import VerticalPID
from diffland.dynamics import SimConfig
from diffland.training import Trainer, memory
from diffland.training.evaluation import rollout_outcomes
from diffland.training.task import init_controller

GIB = 2**30


@pytest.fixture
def backend_compiles():
    """Record every backend compilation that happens while the test runs."""
    names = []

    def listener(name, duration, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            names.append(name)

    monitoring.register_event_duration_secs_listener(listener)
    yield names
    monitoring.unregister_event_duration_listener(listener)


def test_meminfo_available_line(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   2048 kB\n")

    assert memory.meminfo_available_bytes(meminfo) == 2048 * 1024


def test_meminfo_without_available_line(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\n")

    assert memory.meminfo_available_bytes(meminfo) is None
    assert memory.meminfo_available_bytes(tmp_path / "absent") is None


def _write_files(folder, files):
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_cgroup_v2_limit(tmp_path):
    _write_files(
        tmp_path,
        {
            "memory.max": "1000000\n",
            "memory.current": "700000\n",
            "memory.stat": "anon 500000\ninactive_file 100000\nactive_file 50000\n",
        },
    )

    # 1,000,000 limit - (700,000 used - 100,000 reclaimable page cache)
    assert memory.cgroup_available_bytes(tmp_path, tmp_path / "absent") == 400_000


def test_cgroup_v1_limit(tmp_path):
    _write_files(
        tmp_path,
        {
            "memory/memory.limit_in_bytes": "1000000\n",
            "memory/memory.usage_in_bytes": "900000\n",
            "memory/memory.stat": "cache 300000\ntotal_inactive_file 200000\n",
        },
    )

    assert memory.cgroup_available_bytes(tmp_path, tmp_path / "absent") == 300_000


@pytest.mark.parametrize(
    "files",
    [
        {"memory.max": "max\n", "memory.current": "700000\n"},
        {
            "memory/memory.limit_in_bytes": "9223372036854771712\n",
            "memory/memory.usage_in_bytes": "900000\n",
        },
        {},
    ],
    ids=["v2-max", "v1-unlimited", "no-cgroup"],
)
def test_cgroup_without_limit(tmp_path, files):
    _write_files(tmp_path, files)

    assert memory.cgroup_available_bytes(tmp_path, tmp_path / "absent") is None


@pytest.mark.parametrize(
    ("parent_limit", "expected"),
    [("max", 150_000), ("1200000", 150_000), ("1000000", 100_000)],
)
def test_cgroup_limit_of_own_and_parent_group(tmp_path, parent_limit, expected):
    # The process sits in job/step; the tightest room counts, whichever group sets it.
    _write_files(
        tmp_path,
        {
            "membership": "0::/job/step\n",
            "job/memory.max": f"{parent_limit}\n",
            "job/memory.current": "900000\n",
            "job/step/memory.max": "500000\n",
            "job/step/memory.current": "350000\n",
        },
    )

    assert memory.cgroup_available_bytes(tmp_path, tmp_path / "membership") == expected


def test_cgroup_v1_membership(tmp_path):
    _write_files(
        tmp_path,
        {
            "membership": "9:cpu,cpuacct:/other\n4:memory:/slurm/job_7\n0::/\n",
            "memory/slurm/job_7/memory.limit_in_bytes": "800000\n",
            "memory/slurm/job_7/memory.usage_in_bytes": "200000\n",
        },
    )

    assert memory.cgroup_available_bytes(tmp_path, tmp_path / "membership") == 600_000


def test_address_space_limit(tmp_path, monkeypatch):
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmSize:\t    1000 kB\n")
    monkeypatch.setattr(
        memory.resource, "getrlimit", lambda kind: (5000 * 1024, memory.resource.RLIM_INFINITY)
    )

    assert memory.address_space_left_bytes(status) == 4000 * 1024


def test_address_space_without_limit(tmp_path, monkeypatch):
    status = tmp_path / "status"
    status.write_text("VmSize:\t    1000 kB\n")
    unlimited = memory.resource.RLIM_INFINITY
    monkeypatch.setattr(memory.resource, "getrlimit", lambda kind: (unlimited, unlimited))

    assert memory.address_space_left_bytes(status) is None


def test_host_memory_is_smallest_limit(monkeypatch):
    monkeypatch.setattr(memory, "meminfo_available_bytes", lambda: 9000)
    monkeypatch.setattr(memory, "address_space_left_bytes", lambda: 4000)
    monkeypatch.setattr(memory, "cgroup_available_bytes", lambda: None)

    assert memory.host_available_bytes() == 4000

    monkeypatch.setattr(memory, "cgroup_available_bytes", lambda: 3000)
    assert memory.host_available_bytes() == 3000

    for name in ("meminfo_available_bytes", "address_space_left_bytes", "cgroup_available_bytes"):
        monkeypatch.setattr(memory, name, lambda: None)
    assert memory.host_available_bytes() is None


def test_cpu_devices_share_host_memory(monkeypatch):
    monkeypatch.setattr(memory, "host_available_bytes", lambda: 3000)
    devices = jax.devices()

    assert memory.available_bytes(devices) == 3000 // len(devices)
    assert memory.available_bytes(devices[:1]) == 3000


def test_check_fits_message(monkeypatch):
    monkeypatch.setattr(memory, "host_available_bytes", lambda: GIB // 2)

    with pytest.raises(memory.InsufficientMemoryError) as error:
        memory.check_fits(GIB, jax.devices()[:1], "the sweep", "Lower the batch.")

    assert str(error.value) == (
        "the sweep needs about 1.0 GiB per device, but only 0.5 GiB is free on each of "
        "1 cpu device(s). Lower the batch."
    )
    memory.check_fits(GIB // 2, jax.devices()[:1], "the sweep", "Lower the batch.")


def test_check_fits_skips_unknown(monkeypatch):
    monkeypatch.setattr(memory, "host_available_bytes", lambda: None)
    memory.check_fits(GIB, jax.devices()[:1], "the sweep", "")

    monkeypatch.setattr(memory, "host_available_bytes", lambda: 1)
    memory.check_fits(None, jax.devices()[:1], "the sweep", "")


def _pid_and_variables(task, states):
    pid = VerticalPID(task.vehicle, task.sim.control_dt)
    first = jax.tree_util.tree_map(lambda x: x[0], states)
    return pid, init_controller(task, pid, jax.random.PRNGKey(0), first)


def test_recorded_rollouts_rejected_before_compiling(monkeypatch, backend_compiles):
    task = landing_task()
    states = start_pool(8)
    pid, variables = _pid_and_variables(task, states)
    # 8 landers x 60 steps record several kB: 1 kB is too little.
    monkeypatch.setattr(memory, "host_available_bytes", lambda: 1024 * len(jax.devices()))
    backend_compiles.clear()

    with pytest.raises(memory.InsufficientMemoryError, match="recording 8 rollouts of 60 control"):
        rollout_outcomes(task, pid, variables, states, num_devices=1)

    assert backend_compiles == []


def test_recorded_rollouts_within_memory(monkeypatch):
    task = landing_task()
    states = start_pool(8)
    pid, variables = _pid_and_variables(task, states)
    monkeypatch.setattr(memory, "host_available_bytes", lambda: GIB)

    trajectory, _ = rollout_outcomes(task, pid, variables, states, num_devices=1)

    assert trajectory.actions.shape[:2] == (8, 60)


def test_training_update_rejected_before_first_step(monkeypatch, tmp_path):
    task = landing_task()
    pid = VerticalPID(task.vehicle, task.sim.control_dt)
    trainer = Trainer(
        task,
        pid,
        train_config(num_devices=1),
        start_pool(16),
        checkpoint_dir=tmp_path / "checkpoints",
    )
    monkeypatch.setattr(memory, "host_available_bytes", lambda: 1024)

    with pytest.raises(memory.InsufficientMemoryError) as error:
        trainer.train()

    message = str(error.value)
    assert "one training update (batch 4, horizon 60, remat 'none')" in message
    assert 'set SimConfig.remat to "step" or "nested"' in message
    assert trainer.store.steps() == []


def test_horizon_beyond_step_counter():
    with pytest.raises(ValueError, match="horizon = 2147483648 control steps is more than"):
        SimConfig(control_dt=0.1, horizon=2**31)

    assert SimConfig(control_dt=0.1, horizon=2**31 - 1).horizon == 2**31 - 1
