"""Land the Falcon-9-like booster as a planar (3-DOF) vehicle on a pad by analytic policy
gradients.

The landing burn starts at ignition 1.5-3 km up, descending at 200-300 m/s (feasible
states only, as in the vertical experiment). The booster starts up to 50 m beside the
pad, moving sideways at up to 5 m/s, tilted up to 3 degrees and pitching at up to
0.02 rad/s. A steady wind
of up to 5 m/s blows with 2 m/s RMS gusts; drag acts along and across the body. A landing
succeeds within 10 m of the pad centre at no more than 2 m/s down, 1 m/s sideways, 5
degrees of tilt and 0.1 rad/s, without tipping over and with propellant left.

Run ``python -m experiments.planar_landing [--quick] [--seeds N] [--out DIR] [--resume]``;
``--pad-radius`` and the other limit options change the success criteria, and
``--set KEY=VALUE ...`` any field of the config (``mlp.steps=300``).
"""

from __future__ import annotations

import pathlib

from diffland.dynamics import PlanarBooster, falcon9_like_planar
from diffland.scenarios import PLANAR_SCENARIO
from diffland.training.imitation import ImitationConfig
from experiments import booster_landing, common
from experiments.booster_landing import BoosterLandingConfig, BoosterSpec
from experiments.vertical_landing import ControllerSetting

SPEC = BoosterSpec(
    experiment="planar_landing",
    vehicle=PlanarBooster(drag=True),
    params=lambda: falcon9_like_planar(drag=True),
    scenario=PLANAR_SCENARIO,
)

CONFIG = BoosterLandingConfig()
"""Settings of the full run."""

QUICK = dict(
    train_pool=2048,
    pid=ControllerSetting(steps=15, learning_rate=1e-2),
    neuro_pid=ControllerSetting(steps=15, learning_rate=1e-3),
    mlp=ControllerSetting(steps=15, learning_rate=1e-3),
    imitation=ImitationConfig(steps=3000, batch_size=4096, learning_rate=3e-3),
    imitation_states=512,
)
"""Changes for ``--quick``."""


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the experiment and print its results table."""
    return booster_landing.main(SPEC, CONFIG, QUICK, __doc__.split("\n\n")[0], argv)


def load_run(run_folder: pathlib.Path):
    """Rebuild a finished run's held-out set and controllers (for ``diffland eval``)."""
    return booster_landing.load_run(SPEC, run_folder)


if __name__ == "__main__":
    common.run_entry_point(main)
