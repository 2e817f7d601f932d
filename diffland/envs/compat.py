"""Compatibility of brax's training code with the installed JAX.

brax 0.14.2 (the newest release) replicates its training state with
``jax.device_put_replicated``, which JAX 0.10 removed. ``brax.training.agents.ppo`` and
``apg`` therefore fail with an ``AttributeError`` on JAX 0.10 (an open brax bug report,
https://github.com/google/brax/issues/671).
:func:`install` adds a replacement built on ``jax.device_put`` with a sharding over the
devices, and only where JAX lacks the function.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

logger = logging.getLogger(__name__)


def device_put_replicated(tree, devices):
    """Return ``tree`` with a new leading axis of ``len(devices)`` copies, one per device.

    This is what the removed JAX function returned, and what ``jax.pmap`` over those
    devices expects as input.
    """
    devices = list(devices)
    mesh = Mesh(np.asarray(devices), ("devices",))
    sharding = NamedSharding(mesh, PartitionSpec("devices"))

    def replicate(leaf):
        leaf = jnp.asarray(leaf)
        copies = jnp.broadcast_to(leaf, (len(devices), *leaf.shape))
        return jax.device_put(copies, sharding)

    return jax.tree_util.tree_map(replicate, tree)


def install() -> None:
    """Give ``jax`` a ``device_put_replicated`` if it has none; idempotent."""
    if not hasattr(jax, "device_put_replicated"):
        jax.device_put_replicated = device_put_replicated
        logger.debug("added jax.device_put_replicated for brax's training code")
