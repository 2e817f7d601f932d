"""Fixed-step integrators written once for any :class:`~diffland.dynamics.base.Vehicle`."""

from __future__ import annotations

import abc
import dataclasses

import jax

from diffland.dynamics.base import Action, Params, State, Vehicle


def _axpy(alpha, x, y):
    """Return ``y + alpha * x`` leaf by leaf."""
    return jax.tree_util.tree_map(lambda xi, yi: yi + alpha * xi, x, y)


class Integrator(abc.ABC):
    """One step of length ``dt`` with the action held constant over the step.

    Subclasses must be hashable, because compiled rollouts take the integrator as a static
    argument: declare them with ``@dataclasses.dataclass(frozen=True)``.
    """

    order: int
    """Order of the global error in ``dt``."""

    @abc.abstractmethod
    def step(
        self, vehicle: Vehicle, state: State, action: Action, params: Params, dt: float
    ) -> State:
        """Advance ``state`` by ``dt`` seconds.

        Inside :func:`~diffland.dynamics.simulate.physics_step`, ``vehicle`` is a
        stand-in that exposes the vehicle's attributes and methods but is not a
        :class:`Vehicle` instance. Its ``derivative`` called with ``state``, ``action``
        and ``params`` themselves (the same objects, not copies) returns the rate that
        the step has already computed at the start, so a method that needs that rate
        should pass them unchanged.
        """


@dataclasses.dataclass(frozen=True)
class SemiImplicitEuler(Integrator):
    """Symplectic (semi-implicit) Euler, first order.

    Rates (velocities, mass) are updated first with the derivative at the start of the
    step. The vehicle's ``kinematic_fields`` (positions, attitude) are then updated with
    the derivative evaluated at the updated rates, which is what makes the method
    symplectic for mechanical systems.
    """

    order: int = 1

    def step(self, vehicle, state, action, params, dt):
        start_rates = vehicle.derivative(state, action, params)
        updated = _axpy(dt, start_rates, state)
        kinematic = set(vehicle.kinematic_fields)
        # Keep the kinematic fields at their start values, then move them with the new rates.
        partial = state.replace(
            **{
                name: getattr(updated, name)
                for name in _field_names(state)
                if name not in kinematic
            }
        )
        end_rates = vehicle.derivative(partial, action, params)
        return partial.replace(
            **{
                name: _axpy(dt, getattr(end_rates, name), getattr(state, name))
                for name in kinematic
            }
        )


@dataclasses.dataclass(frozen=True)
class RK4(Integrator):
    """The classical fourth-order Runge-Kutta method."""

    order: int = 4

    def step(self, vehicle, state, action, params, dt):
        k1 = vehicle.derivative(state, action, params)
        k2 = vehicle.derivative(_axpy(0.5 * dt, k1, state), action, params)
        k3 = vehicle.derivative(_axpy(0.5 * dt, k2, state), action, params)
        k4 = vehicle.derivative(_axpy(dt, k3, state), action, params)
        increment = jax.tree_util.tree_map(
            lambda a, b, c, d: (a + 2.0 * b + 2.0 * c + d) / 6.0, k1, k2, k3, k4
        )
        return _axpy(dt, increment, state)


def _field_names(state: State) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(state))
