"""Data-parallel placement of training arrays on a one-axis device mesh.

The landers of a batch are split over the ``batch`` axis of a :class:`jax.sharding.Mesh`,
and everything else (parameters, optimiser state, the pool of start states) is
replicated on every device. Inside a jitted update the batch is constrained to that
sharding, so XLA runs each device's share of the rollouts and sums the gradient across
devices itself. The mean over the batch then adds up in another order than on one device,
so results agree with a one-device run within float rounding, not bit for bit.

With several processes (after ``jax.distributed.initialize``), ``jax.devices()`` lists
the devices of every host and the mesh spans all of them. Each process must then build
the same pool of start states and the same configuration, because arrays are placed from
each process's host copy, and checkpoints need a folder that every host can write.
The tests run two processes on one machine, each with two CPU devices (jax 0.10.2, gloo
collectives), and get the parameters of a one-process run within float32 rounding.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

logger = logging.getLogger(__name__)

BATCH_AXIS = "batch"
"""Name of the mesh axis that the landers of a batch are split over."""


def select_devices(num_devices: int | None) -> list[jax.Device]:
    """Return the devices to train on: all of them for None, else the first ``num_devices``.

    Raises ``ValueError`` when more devices are requested than ``jax.devices()`` lists, or when a
    multi-process run requests fewer than all devices (every process must take part in
    each update).
    """
    devices = jax.devices()
    if num_devices is None:
        return devices
    if num_devices > len(devices):
        raise ValueError(
            f"TrainConfig.num_devices = {num_devices} but JAX lists only {len(devices)} "
            f"{devices[0].platform} device(s). Lower num_devices, or leave it None to use "
            "every device."
        )
    if jax.process_count() > 1 and num_devices != len(devices):
        raise ValueError(
            f"TrainConfig.num_devices = {num_devices} but this multi-process run has "
            f"{len(devices)} devices over {jax.process_count()} processes, and every process "
            "must take part in each update. Leave num_devices None to use them all."
        )
    return devices[:num_devices]


def _place(tree: Any, sharding: NamedSharding) -> Any:
    """Return ``tree`` with every leaf laid out as ``sharding``, built from host values.

    ``make_array_from_callback`` works in single- and multi-process runs alike: each
    process fills the shards of its own devices from its host copy of the whole value.
    """

    def place(leaf):
        if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
            return leaf
        value = np.asarray(leaf)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree_util.tree_map(place, tree)


@dataclasses.dataclass(frozen=True)
class DataParallel:
    """A one-axis mesh over the training devices and the two layouts the trainer uses."""

    mesh: Mesh

    @classmethod
    def create(cls, num_devices: int | None = None) -> DataParallel:
        """Build the mesh over :func:`select_devices` (``num_devices``)."""
        devices = select_devices(num_devices)
        return cls(Mesh(np.asarray(devices), (BATCH_AXIS,)))

    @property
    def device_count(self) -> int:
        return self.mesh.size

    @property
    def replicated(self) -> NamedSharding:
        """A full copy on every device."""
        return NamedSharding(self.mesh, PartitionSpec())

    @property
    def batch_sharded(self) -> NamedSharding:
        """The leading axis split evenly over the devices, the other axes whole."""
        return NamedSharding(self.mesh, PartitionSpec(BATCH_AXIS))

    def check_divides(self, size: int, name: str) -> None:
        """Raise ``ValueError`` unless ``size`` landers split evenly over the devices."""
        if size % self.device_count:
            raise ValueError(
                f"{name} = {size} cannot be split evenly over {self.device_count} devices. "
                f"Use a multiple of {self.device_count}, or set TrainConfig.num_devices to "
                "a device count that divides it (1 trains on one device)."
            )

    def divides(self, size: int) -> bool:
        return size % self.device_count == 0

    def replicate(self, tree: Any) -> Any:
        """Place a copy of every leaf on every device."""
        return _place(tree, self.replicated)

    def shard_batch(self, tree: Any) -> Any:
        """Split the leading (lander) axis of every leaf over the devices."""
        return _place(tree, self.batch_sharded)

    def constrain_batch(self, tree: Any) -> Any:
        """Inside ``jit``: require the leading axis of every leaf to be split over the devices."""
        return jax.lax.with_sharding_constraint(tree, self.batch_sharded)

    def describe(self) -> str:
        """Return the device count, platform and process count, for the log."""
        platforms = "/".join(sorted({device.platform for device in self.mesh.devices.flat}))
        processes = jax.process_count()
        return f"{self.device_count} {platforms} device(s) in {processes} process(es)"
