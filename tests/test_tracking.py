"""The Weights & Biases callback: the calls it makes, and a real run in offline mode."""

import math
import sys
import types

import pytest

from diffland.training import WandbWriter


class FakeRun:
    def __init__(self):
        self.logged = []
        self.finished = False

    def log(self, values, step):
        self.logged.append((step, values))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    module = types.ModuleType("wandb")
    module.init_calls = []

    def init(**settings):
        module.init_calls.append(settings)
        module.run = FakeRun()
        return module.run

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def test_wandb_writer_logs_namespaced_metrics(fake_wandb, tmp_path):
    writer = WandbWriter(
        project="landing", directory=tmp_path / "wandb", config={"seed": 1}, mode="offline"
    )
    writer(10, {"train/loss": 2.5, "eval/success_rate": math.nan, "train/grad_norm": 0.5})
    writer(20, {"eval/success_rate": math.inf})
    writer.close()

    assert fake_wandb.init_calls == [
        {
            "project": "landing",
            "name": None,
            "config": {"seed": 1},
            "dir": str(tmp_path / "wandb"),
            "mode": "offline",
        }
    ]
    # Non-finite values are left out, and a call with none left logs nothing.
    assert fake_wandb.run.logged == [(10, {"train/loss": 2.5, "train/grad_norm": 0.5})]
    assert fake_wandb.run.finished


def test_wandb_writer_prefix(fake_wandb):
    writer = WandbWriter(prefix="seed0/mlp/")
    writer(1, {"train/loss": 1.0})

    assert fake_wandb.run.logged == [(1, {"seed0/mlp/train/loss": 1.0})]


def test_wandb_writer_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)

    with pytest.raises(ImportError, match=r"pip install 'diffland\[wandb\]'"):
        WandbWriter()


def test_wandb_offline_run_smoke(tmp_path, monkeypatch):
    wandb = pytest.importorskip(
        "wandb", reason="wandb is not installed (pip install 'diffland[wandb]')"
    )
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")

    writer = WandbWriter(project="diffland-test", directory=tmp_path, name="smoke")
    writer(1, {"train/loss": 2.0, "eval/success_rate": math.nan})
    writer(2, {"train/loss": 1.0})
    writer.close()
    # finish() can return before the wandb service has written the whole file; teardown
    # waits for the service to stop.
    wandb.teardown()

    files = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1
    data = files[0].read_bytes()
    assert b"train/loss" in data
    assert b"eval/success_rate" not in data
