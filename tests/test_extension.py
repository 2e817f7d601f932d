"""A vehicle defined outside the package trains with the unchanged Trainer.

The test vehicle is a small 1-D drone-like lander with a state layout of its own
(height, climb rate and propellant instead of total mass) and a linear drag force
``-damping * climb_rate``, integrated with semi-implicit Euler.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from jax.experimental import checkify

from diffland.controllers import MLPPolicy
from diffland.dynamics import SemiImplicitEuler, SimConfig, Vehicle, rollout
from diffland.training import LandingCost, LandingTask, TrainConfig, Trainer


@struct.dataclass
class DroneState:
    height: jax.Array
    """Height above the ground, m."""
    climb_rate: jax.Array
    """Vertical velocity, m/s (positive up)."""
    propellant: jax.Array
    """Propellant on board, kg."""


@struct.dataclass
class DroneParams:
    gravity: jax.Array
    """m/s^2."""
    empty_mass: jax.Array
    """Mass without propellant, kg."""
    max_thrust: jax.Array
    """N."""
    exhaust_velocity: jax.Array
    """Effective exhaust velocity, m/s. The mass flow is thrust / exhaust_velocity."""
    damping: jax.Array
    """Linear drag coefficient, N s/m."""
    throttle_min: jax.Array
    throttle_max: jax.Array


@dataclasses.dataclass(frozen=True)
class LinearDragLander(Vehicle):
    """Vertical lander with linear drag. The action is the throttle, shape ``(1,)``."""

    kinematic_fields = ("height",)
    action_size = 1

    def thrust(self, state, action, params):
        throttle = jnp.clip(action[0], params.throttle_min, params.throttle_max)
        return jnp.where(state.propellant > 0.0, throttle * params.max_thrust, 0.0)

    def derivative(self, state, action, params):
        thrust = self.thrust(state, action, params)
        mass = params.empty_mass + state.propellant
        force = thrust - params.damping * state.climb_rate
        return DroneState(
            height=state.climb_rate,
            climb_rate=force / mass - params.gravity,
            propellant=-thrust / params.exhaust_velocity,
        )

    def project(self, state, params):
        return state.replace(propellant=jnp.maximum(state.propellant, 0.0))

    def height(self, state, params):
        return state.height

    def action_bounds(self, params):
        return jnp.reshape(params.throttle_min, (1,)), jnp.reshape(params.throttle_max, (1,))

    def observation(self, state, params):
        return jnp.stack([state.height / 50.0, state.climb_rate / 10.0, state.propellant])

    def touchdown_speed(self, state, params):
        return jnp.abs(state.climb_rate)

    def propellant_mass(self, state, params):
        return jnp.maximum(state.propellant, 0.0)


VEHICLE = LinearDragLander()


def drone_params():
    values = dict(
        gravity=9.81,
        empty_mass=10.0,
        max_thrust=300.0,
        exhaust_velocity=1000.0,
        damping=2.0,
        throttle_min=0.1,
        throttle_max=1.0,
    )
    return DroneParams(**{name: jnp.float32(value) for name, value in values.items()})


def start_pool(count, seed):
    rng = np.random.default_rng(seed)
    return DroneState(
        height=jnp.asarray(rng.uniform(20.0, 40.0, count), jnp.float32),
        climb_rate=jnp.asarray(-rng.uniform(4.0, 8.0, count), jnp.float32),
        propellant=jnp.asarray(rng.uniform(1.5, 2.5, count), jnp.float32),
    )


def drone_task():
    sim = SimConfig(control_dt=0.1, substeps=2, horizon=60, integrator=SemiImplicitEuler())
    # Propellant limits in kg sized for a vehicle that carries about 2 kg.
    cost = LandingCost(exhaustion_tolerance=0.05, exhaustion_reserve=0.5, propellant_scale=1.0)
    return LandingTask(VEHICLE, drone_params(), sim, cost)


def test_custom_vehicle_linear_drag_fall():
    # Zero propellant cuts the thrust, so the only forces are gravity and linear drag.
    params = drone_params()
    start = DroneState(
        height=jnp.float32(40.0), climb_rate=jnp.float32(0.0), propellant=jnp.float32(0.0)
    )
    sim = SimConfig(control_dt=0.1, substeps=2, horizon=10)

    def policy(state, params, carry):
        return jnp.ones((1,), jnp.float32), carry

    trajectory = rollout(VEHICLE, sim, policy, start, params, ())

    # Terminal-velocity solution of m dv/dt = -k v - m g: v(t) = -(m g / k)(1 - exp(-k t / m)).
    terminal = 10.0 * 9.81 / 2.0
    expected = -terminal * (1.0 - np.exp(-2.0 * 1.0 / 10.0))
    assert float(trajectory.final.vehicle.climb_rate) == pytest.approx(expected, rel=1e-4)
    assert float(trajectory.final.vehicle.propellant) == 0.0


@pytest.mark.slow
def test_mlp_trains_on_custom_vehicle():
    pool = start_pool(64, seed=0)
    config = TrainConfig(
        steps=40, batch_size=16, learning_rate=3e-2, warmup_steps=5, seed=0, eval_every=1000
    )
    trainer = Trainer(drone_task(), MLPPolicy(VEHICLE, hidden=(16, 16)), config, pool)

    # With runtime checks on, the loss contains checkify checks and must be checkified to
    # be jitted, as the trainer's own update is.
    checked_loss = jax.jit(checkify.checkify(trainer.loss, errors=checkify.user_checks))

    def score(params):
        error, (loss, metrics) = checked_loss(params, pool)
        error.throw()
        return loss, metrics

    initial_loss, initial_metrics = score(trainer.init().params)
    result = trainer.train()
    final_loss, final_metrics = score(result.state.params)

    assert np.isfinite(float(final_loss))
    assert float(final_loss) < 0.5 * float(initial_loss)
    initial_success = float(initial_metrics["train/success_rate"])
    final_success = float(final_metrics["train/success_rate"])
    assert final_success > initial_success + 0.3
    assert trainer.trace_count == 1
