"""The README's Python examples run as written, on a small problem."""

import pathlib
import re

import jax.numpy as jnp
import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_brax_example_builds_the_environment():
    pytest.importorskip("brax", reason="the example builds a brax environment")
    blocks = [block for block in python_blocks() if "brax.envs" in block]
    assert len(blocks) == 1

    namespace: dict = {}
    exec(blocks[0].replace("pool_size=256", "pool_size=8"), namespace)  # noqa: S102

    assert namespace["env"].observation_size == 12
    assert namespace["env"].action_size == 2


@pytest.mark.slow
def test_readme_examples_smoke():
    blocks = [block for block in python_blocks() if "brax.envs" not in block]
    assert len(blocks) == 3

    namespace: dict = {}
    exec(blocks[0], namespace)  # noqa: S102 - the README's own example code
    rng = np.random.default_rng(0)

    def hopper_states(count):
        return namespace["HopperState"](
            altitude=jnp.asarray(rng.uniform(30.0, 60.0, count), jnp.float32),
            velocity=jnp.asarray(rng.uniform(-8.0, -4.0, count), jnp.float32),
            mass=jnp.asarray(rng.uniform(48.0, 52.0, count), jnp.float32),
        )

    namespace["params"] = namespace["HopperParams"](
        gravity=jnp.float32(9.81),
        max_thrust=jnp.float32(1000.0),
        exhaust_velocity=jnp.float32(2000.0),
        dry_mass=jnp.float32(40.0),
        damping=jnp.float32(1.0),
    )
    namespace["start_states"] = hopper_states(64)
    namespace["validation_states"] = hopper_states(16)
    namespace["held_out_states"] = hopper_states(32)

    # Shorter training than the README's 500 steps, same code otherwise.
    for block in blocks[1:]:
        exec(block.replace("500", "3"), namespace)  # noqa: S102

    assert int(namespace["result"].state.step) == 3
    summary = namespace["summarize_outcomes"](namespace["outcome"])
    assert summary["n_eval"] == 32
    assert 0.0 <= summary["success_rate"] <= 1.0
