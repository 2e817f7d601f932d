"""Touchdown handling, control steps with physics sub-steps, and rollouts with ``lax.scan``.

Touchdown is an event: when the height crosses zero inside a physics step, the crossing
time is found from a quadratic fit of the height over the step (exact for constant
acceleration) and the state is interpolated to that time. The touchdown state is therefore
a differentiable function of the inputs. After touchdown the state is frozen by masking,
so a rollout is always a fixed-length scan.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from diffland.dynamics import components
from diffland.dynamics.base import (
    Params,
    State,
    Vehicle,
    check_state_dtypes,
    check_step_dtypes,
    is_concrete,
    leaf_dtype,
)
from diffland.dynamics.integrators import RK4, Integrator

DYNAMICS_MATMUL_PRECISION = "highest"
"""Precision of every dot product traced inside :func:`physics_step`, whatever the
caller's ``jax_default_matmul_precision``. On GPUs with TensorFloat-32 (NVIDIA Ampere and
later) XLA's default precision rounds float32 matrix-product inputs to 10 mantissa bits,
which would make the dynamics differ between GPU and CPU. Controller networks are traced
outside this setting and keep the caller's precision."""

REMAT_MODES = ("none", "step", "nested")
"""Values of :attr:`SimConfig.remat`."""

MAX_HORIZON = 2**31 - 1
"""Most control steps of a rollout: JAX counts the steps in 32-bit integers by default."""


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """Static settings of a simulation (hashable, so they can be jit-static)."""

    control_dt: float = 0.1
    """Time between controller updates, s; the action is held over this interval."""
    substeps: int = 2
    """Physics steps per control step; the physics step is ``control_dt / substeps``."""
    horizon: int = 300
    """Number of control steps in a rollout."""
    integrator: Integrator = dataclasses.field(default_factory=RK4)
    """Integration method for the physics steps."""
    truncation: int | None = None
    """Control steps between cuts of the gradient (truncated backpropagation through
    time). Every ``truncation`` steps the carried simulation and controller state pass
    through ``lax.stop_gradient``, so a gradient reaches back at most that many steps
    through the state. None lets gradients flow through the whole horizon. The forward
    rollout is the same either way."""
    remat: str = "none"
    """Rematerialisation (``jax.checkpoint``) of the rollout for the backward pass, which
    trades recomputation for memory without changing values or gradients:

    - ``"none"``: the backward pass keeps the inputs of every controller call and
      physics step and recomputes their intermediates, because every mode checkpoints
      each controller call (see :func:`_control_loop`) and each physics step (see
      :func:`control_step`). It keeps every intermediate of the cost.
    - ``"step"``: each control step is checkpointed, so only the carried state of every
      step is kept and the step's intermediates are recomputed during the backward pass.
    - ``"nested"``: the horizon is split into segments of ``remat_segment`` steps (a scan
      of scans). Only the carried state at segment boundaries is kept, and the backward
      pass recomputes one segment at a time, keeping that segment's intermediates.

    :func:`rollout` returns per-step states and actions, which the backward pass keeps in
    every mode, so its memory grows linearly with the horizon whatever the mode.
    :func:`reduce_rollout` folds the steps into a carried summary instead, so with
    ``"nested"`` the kept memory grows about like ``sqrt(horizon)``.

    In every mode the backward pass runs the controller again, so a callback inside it
    (``jax.debug.callback``) fires more than once per step. JAX (0.10.2) rejects an
    ``io_callback`` inside it when the rollout is differentiated."""
    remat_segment: int | None = None
    """Control steps per segment with ``remat="nested"``. None picks ``round(sqrt(horizon))``,
    which balances the boundary states against one segment's intermediates. A horizon that
    is not a multiple of the segment length ends with one shorter segment."""

    def __post_init__(self):
        dt = self.control_dt
        if not (isinstance(dt, numbers.Real) and math.isfinite(dt) and dt > 0):
            raise ValueError(
                f"control_dt = {dt!r} is invalid: it must be a finite positive number of seconds."
            )
        if not (isinstance(self.substeps, int) and self.substeps >= 1):
            raise ValueError(f"substeps = {self.substeps!r} must be an integer >= 1.")
        if not (isinstance(self.horizon, int) and self.horizon >= 1):
            raise ValueError(f"horizon = {self.horizon!r} must be an integer >= 1.")
        if self.horizon > MAX_HORIZON:
            raise ValueError(
                f"horizon = {self.horizon} control steps is more than {MAX_HORIZON:,}, the "
                "largest step index a 32-bit integer holds. Pass a shorter horizon."
            )
        cut = self.truncation
        if cut is not None and (isinstance(cut, bool) or not (isinstance(cut, int) and cut >= 1)):
            raise ValueError(
                f"truncation = {cut!r} is invalid: pass an integer >= 1 (control steps "
                "between gradient cuts) or None for the full horizon."
            )
        self._validate_remat()
        if not isinstance(self.integrator, Integrator):
            raise ValueError(
                f"integrator = {self.integrator!r} is not an Integrator; pass an instance "
                "such as RK4() or SemiImplicitEuler()."
            )
        try:
            hash(self.integrator)
        except TypeError as error:
            # jax.jit takes the configuration as a static argument, which must be hashable.
            raise ValueError(
                f"integrator = {self.integrator!r} is not hashable ({error}); declare its "
                "class with @dataclasses.dataclass(frozen=True), as RK4 is."
            ) from None

    def _validate_remat(self) -> None:
        if self.remat not in REMAT_MODES:
            choices = ", ".join(repr(mode) for mode in REMAT_MODES)
            raise ValueError(f"remat = {self.remat!r} is invalid: pass one of {choices}.")
        segment = self.remat_segment
        if segment is None:
            return
        if self.remat != "nested":
            raise ValueError(
                f"remat_segment = {segment!r} has no effect with remat = {self.remat!r}: pass "
                "remat='nested' to checkpoint segments, or leave remat_segment as None."
            )
        if isinstance(segment, bool) or not (isinstance(segment, int) and segment >= 1):
            raise ValueError(
                f"remat_segment = {segment!r} is invalid: pass an integer >= 1 (control steps "
                "per checkpointed segment) or None for round(sqrt(horizon))."
            )
        if segment > self.horizon:
            raise ValueError(
                f"remat_segment = {segment} is longer than the horizon of {self.horizon} "
                f"steps: pass at most {self.horizon}, or None for round(sqrt(horizon))."
            )

    @property
    def segment_length(self) -> int:
        """Control steps per checkpointed segment with ``remat="nested"``."""
        if self.remat_segment is not None:
            return self.remat_segment
        return max(1, round(math.sqrt(self.horizon)))

    @property
    def physics_dt(self) -> float:
        """Length of one physics step, s."""
        return self.control_dt / self.substeps

    @property
    def duration(self) -> float:
        """Simulated time of a full rollout, s."""
        return self.control_dt * self.horizon


@struct.dataclass
class SimState:
    """A vehicle state with its touchdown bookkeeping; all extra fields have shape ``()``."""

    vehicle: Any
    """The vehicle's own state pytree."""
    time: jax.Array
    """Simulated time since the start, s."""
    touched_down: jax.Array
    """True once the vehicle has reached the ground; the state is frozen from then on."""
    touchdown_time: jax.Array
    """Time of touchdown, s (the end of the rollout if it has not touched down)."""


def initial_sim_state(state: State) -> SimState:
    """Wrap a vehicle state at time zero, not touched down.

    Raises ``ValueError`` (while tracing, before anything is compiled) unless every leaf
    of ``state`` is float32, or every leaf float64.
    """
    check_state_dtypes(state)
    dtype = leaf_dtype(jax.tree_util.tree_leaves(state)[0])
    zero = jnp.zeros((), dtype)
    return SimState(vehicle=state, time=zero, touched_down=jnp.array(False), touchdown_time=zero)


def crossing_fraction(h0, h1, rate0):
    """Return the fraction of a step at which the height reaches zero.

    The height over the step is modelled by the quadratic ``q(s) = h0 + b s + c s^2`` with
    ``b = rate0`` (the height rate at the start times the step length) and
    ``c = h1 - h0 - b``, exact for constant acceleration. With ``h0 > 0 >= h1`` it has one
    root in ``(0, 1]``, the first crossing, given by the cancellation-free form
    ``2 h0 / (-b + sqrt(b^2 - 4 c h0))``. The result is clipped to ``[0, 1]``; outside a
    crossing it is not used, and safe placeholders keep its gradient finite.
    """
    c = h1 - h0 - rate0
    discriminant = jnp.maximum(rate0**2 - 4.0 * c * h0, 0.0)
    denominator = -rate0 + jnp.sqrt(discriminant + 1e-12)
    valid = denominator > 1e-9
    fraction = 2.0 * h0 / jnp.where(valid, denominator, 1.0)
    linear = h0 / jnp.where(h0 - h1 > 1e-9, h0 - h1, 1.0)
    return jnp.clip(jnp.where(valid, fraction, linear), 0.0, 1.0)


def _dips_below_ground(h0, h1, rate0):
    """Return True where the quadratic height fit reaches zero inside the step although
    both ends are above the ground: a slow touchdown that the thrust reverses within the
    step. Without this test such a lander would fly off without touching down."""
    c = h1 - h0 - rate0
    curving_up = c > 0.0
    vertex = -rate0 / jnp.where(curving_up, 2.0 * c, 1.0)
    lowest = h0 - rate0**2 / jnp.where(curving_up, 4.0 * c, 1.0)
    return curving_up & (vertex > 0.0) & (vertex < 1.0) & (lowest <= 0.0)


def _quadratic_interpolation(start, end, start_rate, dt, fraction):
    """Interpolate every state leaf with the quadratic used for the crossing time.

    ``x(s) = x0 + s b + s^2 (x1 - x0 - b)`` with ``b = dt * dx/dt(x0)``, which matches
    both ends and the start slope. For a height that depends linearly on the state, the
    interpolated height at the crossing fraction is zero up to rounding.
    """

    def interpolate(x0, x1, rate0):
        slope = dt * rate0
        return x0 + fraction * slope + fraction**2 * (x1 - x0 - slope)

    return jax.tree_util.tree_map(interpolate, start, end, start_rate)


def physics_step(
    vehicle: Vehicle,
    integrator: Integrator,
    sim: SimState,
    action: jax.Array,
    params: Params,
    dt: float,
) -> SimState:
    """Advance one physics step with touchdown detection, interpolation and freezing.

    The integrator's call of the vehicle's derivative at ``sim.vehicle`` with this
    ``action`` and ``params`` returns the rate that the step computes for its touchdown
    check (see :meth:`Integrator.step`). Dot products in the step use
    :data:`DYNAMICS_MATMUL_PRECISION`.
    """
    with jax.default_matmul_precision(DYNAMICS_MATMUL_PRECISION):
        return _physics_step(vehicle, integrator, sim, action, params, dt)


def _materialize(vehicle: Vehicle, state: State) -> State:
    """Pass ``state`` through :func:`components.shared`, its constant fields excepted."""
    return _restore(vehicle, components.shared(_strip(vehicle, state)), state)


def _strip(vehicle: Vehicle, state: State) -> State:
    return state.replace(**{name: None for name in vehicle.constant_fields})


def _restore(vehicle: Vehicle, state: State, like: State) -> State:
    return state.replace(**{name: getattr(like, name) for name in vehicle.constant_fields})


class _StepDerivative:
    """The wrapped vehicle as one physics step shows it to the integrator.

    :meth:`derivative` passes its output through :func:`_materialize`. Called with the
    step's own start state, action and parameters (the same objects), it returns the
    rate that the step has already computed, so that a backward pass differentiates
    that derivative once, with the cotangents of both uses summed. XLA merges the two
    in a forward pass, but not their transposes. Other attributes are the vehicle's.
    """

    def __init__(
        self,
        vehicle: Vehicle,
        start: State,
        action: jax.Array,
        params: Params,
        start_rate: State,
    ):
        self.vehicle = vehicle
        self.start = start
        self.action = action
        self.params = params
        self.start_rate = start_rate

    def __getattr__(self, name: str) -> Any:
        return getattr(self.vehicle, name)

    def derivative(self, state: State, action: jax.Array, params: Params) -> State:
        if state is self.start and action is self.action and params is self.params:
            return self.start_rate
        return _materialize(self.vehicle, self.vehicle.derivative(state, action, params))


def _physics_step(vehicle, integrator, sim, action, params, dt):
    """Return the simulation state after one physics step, as :func:`physics_step` does
    but without setting the matmul precision.

    The values that several later expressions use pass through
    :func:`components.shared`, which only matters inside
    :func:`components.materializing`.
    """
    start = sim.vehicle
    check_step_dtypes(start, action, params)
    # The rate at the start of the step, from the vehicle's own derivative.
    start_rate = _materialize(vehicle, vehicle.derivative(start, action, params))
    stepper = _StepDerivative(vehicle, start, action, params, start_rate)
    end = _materialize(vehicle, integrator.step(stepper, start, action, params, dt))
    end = _materialize(vehicle, vehicle.project(end, params))
    h0 = vehicle.height(start, params)
    h1 = vehicle.height(end, params)
    rate = jax.jvp(lambda s: vehicle.height(s, params), (start,), (start_rate,))[1]
    h0, h1, rate = components.shared((h0, h1, rate))
    crossed = (h0 > 0.0) & ((h1 <= 0.0) | _dips_below_ground(h0, h1, rate * dt))
    crossed = crossed & ~sim.touched_down
    fraction = crossing_fraction(h0, h1, rate * dt)
    crossed, fraction = components.shared((crossed, fraction))
    at_touchdown = vehicle.project(
        _quadratic_interpolation(start, end, start_rate, dt, fraction), params
    )

    landed_now = jax.tree_util.tree_map(lambda a, b: jnp.where(crossed, a, b), at_touchdown, end)
    new_vehicle = jax.tree_util.tree_map(
        lambda frozen, moved: jnp.where(sim.touched_down, frozen, moved), start, landed_now
    )
    if vehicle.constant_fields:
        # Integrating and interpolating a zero rate returns these fields unchanged, so they
        # are carried over and XLA drops the work on them.
        new_vehicle = new_vehicle.replace(
            **{name: getattr(start, name) for name in vehicle.constant_fields}
        )
    touchdown_time = jnp.where(
        sim.touched_down, sim.touchdown_time, sim.time + jnp.where(crossed, fraction, 1.0) * dt
    )
    return SimState(
        vehicle=new_vehicle,
        time=sim.time + dt,
        touched_down=sim.touched_down | crossed,
        touchdown_time=touchdown_time,
    )


def control_step(
    vehicle: Vehicle, config: SimConfig, sim: SimState, action: jax.Array, params: Params
) -> SimState:
    """Hold ``action`` over ``config.substeps`` physics steps.

    Several sub-steps run as an inner ``lax.scan``, so the compiled program contains one
    physics step whatever their number. Unrolled sub-steps made compile time grow faster
    than linearly with their number.

    Each physics step is checkpointed (``jax.checkpoint``): a backward pass keeps only
    the step's inputs and recomputes its intermediates, which changes no value or
    gradient. Without it, the compiled gradient of the 6-DOF booster (RK4, drag and
    wind) kept 427 per-lander intermediates per physics step, counted in its HLO. With
    it, the backward-pass memory of 128 control steps of 2 sub-steps fell from 157 MiB
    to 28 MiB at 256 landers. At 4,096 landers the loss with its gradient ran 1.2 times
    faster (both compiled in one process, jax 0.10.2, 2-core AVX-512 Xeon under load).
    """

    # The jax.checkpoint documentation (jax 0.10.2) calls its protection against
    # common-subexpression elimination unnecessary inside lax.scan. Called outside a
    # scan, XLA may merge the recomputation with the forward step, which keeps the
    # values and gives up only the memory saving.
    @functools.partial(jax.checkpoint, prevent_cse=False)
    def step(current: SimState) -> SimState:
        return physics_step(vehicle, config.integrator, current, action, params, config.physics_dt)

    if config.substeps == 1:
        return step(sim)
    sim, _ = jax.lax.scan(lambda current, _: (step(current), None), sim, None, config.substeps)
    return sim


def _unrolled_control_step(vehicle, config, sim, action, params):
    """:func:`control_step` for a forward pass: up to :data:`_UNROLLED_SUBSTEPS` sub-steps
    are written out in line and none is checkpointed; the values are the same."""

    def step(current):
        with jax.default_matmul_precision(DYNAMICS_MATMUL_PRECISION):
            return _physics_step(
                vehicle, config.integrator, current, action, params, config.physics_dt
            )

    if config.substeps <= _UNROLLED_SUBSTEPS:
        for _ in range(config.substeps):
            sim = step(sim)
        return sim
    sim, _ = jax.lax.scan(lambda current, _: (step(current), None), sim, None, config.substeps)
    return sim


@struct.dataclass
class Trajectory:
    """A rollout. Per-step fields have a leading axis of length ``horizon``."""

    states: Any
    """Vehicle state at the start of each control step."""
    actions: jax.Array
    """Action applied over each control step, shape ``(horizon, action_size)``."""
    active: jax.Array
    """True for control steps that began before touchdown, shape ``(horizon,)``."""
    final: SimState
    """Simulation state after the last control step."""
    initial: Any
    """Vehicle state at time zero."""


Policy = Callable[[Any, Params, Any], tuple[jax.Array, Any]]
"""``policy(vehicle_state, params, carry) -> (action, carry)``."""


def rollout(
    vehicle: Vehicle,
    config: SimConfig,
    policy: Policy,
    initial_state: State,
    params: Params,
    policy_carry: Any,
) -> Trajectory:
    """Simulate one vehicle for ``config.horizon`` control steps under ``policy``.

    The policy carry (for example a PID integral) is threaded through the scan. Batch with
    ``jax.vmap`` over ``initial_state`` (and ``params`` if they are randomised).
    """

    def record(summary, step, state, action, active):
        del step
        return summary, (state, action, active)

    final, _, (states, actions, active) = _scan_control_steps(
        vehicle, config, policy, initial_state, params, policy_carry, record, None
    )
    return Trajectory(
        states=states, actions=actions, active=active, final=final, initial=initial_state
    )


Accumulator = Callable[[Any, jax.Array, Any, jax.Array, jax.Array], Any]
"""``accumulate(summary, step, vehicle_state, action, active) -> summary``."""


def reduce_rollout(
    vehicle: Vehicle,
    config: SimConfig,
    policy: Policy,
    initial_state: State,
    params: Params,
    policy_carry: Any,
    accumulate: Accumulator,
    summary: Any,
) -> tuple[SimState, Any]:
    """Simulate like :func:`rollout`, but fold each control step into ``summary`` instead
    of recording it, and return the final simulation state with the last summary.

    ``accumulate(summary, step, vehicle_state, action, active)`` is called once per
    control step with the step index, the vehicle state at the start of the step, the
    action applied over it and whether the step began before touchdown (the entries of
    :class:`Trajectory` at that step). It returns the next summary, a pytree of the
    structure, shapes and dtypes of ``summary``.

    The summary is part of the scan carry, so with ``remat="nested"`` the backward pass
    keeps it only at segment boundaries, and no per-step output grows with the horizon.
    Truncation cuts the gradient through the simulation state and the policy carry but
    not through the summary (see :func:`_scan_control_steps`). Batch with ``jax.vmap``.
    """

    def fold(summary, step, state, action, active):
        return accumulate(summary, step, state, action, active), None

    final, summary, _ = _scan_control_steps(
        vehicle, config, policy, initial_state, params, policy_carry, fold, summary
    )
    return final, summary


def reduce_rollout_batch(
    vehicle: Vehicle,
    config: SimConfig,
    policy: Policy,
    initial_states: State,
    params: Params,
    policy_carry: Any,
    accumulate: Accumulator,
    summaries: Any,
) -> tuple[SimState, Any]:
    """Run :func:`reduce_rollout` for a batch of landers, with a faster gradient above all.

    ``initial_states`` and ``summaries`` have the batch on the first axis of every leaf.
    ``params`` and ``policy_carry`` are those of one lander and shared by the batch, so
    each lander's carry starts from ``policy_carry``. ``policy`` and ``accumulate`` are
    written for one lander, as for :func:`reduce_rollout`, and are vmapped. Returns the
    batch of final simulation states and of summaries, batch first, equal to
    ``jax.vmap`` of :func:`reduce_rollout` up to float rounding, with the same remat
    and truncation.

    Traced inside :func:`components.materializing` with ``vehicle.component_tuples``
    true, the physics runs in the component layout of :func:`final_state_batch` (one
    array of shape ``(batch,)`` per state component), with the physics steps
    checkpointed as in :func:`control_step`. Compile such a trace with
    :func:`component_compiler_options`, as
    :func:`~diffland.training.lower_training_function` does on a CPU: without them XLA
    removes the barriers and the program runs far slower (below). Outside
    :func:`components.materializing`, or for other vehicles, this is ``jax.vmap`` of
    :func:`reduce_rollout`.

    Measured on a 2-core AVX-512 Xeon (jax 0.10.2, one device), each variant compiled in
    one process. With a fixed action (batch 2,048, 64 control steps of the 6-DOF booster
    with RK4, drag and wind), the gradient of the final states took 166 ms in the
    component layout and 270 ms through ``jax.vmap``. The latter builds the cotangent of
    each ``(batch, 3)`` array from one padded array per component. The loss
    of its PID with the gradient (batch 1,024) took 0.108 s against 0.197 s. Without
    the barriers that :func:`components.materializing` inserts, the same component
    layout took 135 s per call against 0.53 s through ``jax.vmap``, because XLA's
    fusion then computes shared values again in each of their users.
    """
    batch = _batch_size(initial_states)
    _check_summary_batch(summaries, batch)
    if not (vehicle.component_tuples and components.is_materializing()):
        return jax.vmap(
            lambda state, summary: reduce_rollout(
                vehicle, config, policy, state, params, policy_carry, accumulate, summary
            )
        )(initial_states, summaries)
    start, memory = _component_start(vehicle, initial_states, policy_carry)
    batched_policy = _batch_last_policy(policy)
    batched_accumulate = jax.vmap(accumulate, in_axes=(-1, None, -1, -1, -1), out_axes=-1)

    def fold(summary, step, state, action, active):
        return batched_accumulate(summary, step, _stacked(state), action, active), None

    summaries = jax.tree_util.tree_map(lambda x: jnp.moveaxis(x, 0, -1), summaries)
    final, summaries, _ = _control_loop(
        vehicle, config, batched_policy, start, params, memory, fold, summaries
    )
    summaries = jax.tree_util.tree_map(lambda x: jnp.moveaxis(x, -1, 0), summaries)
    return _batch_first(final, batch), summaries


def _check_summary_batch(summaries: Any, batch: int) -> None:
    """Raise ``ValueError`` unless every leaf of ``summaries`` has ``batch`` entries first."""
    sizes = {
        jnp.shape(leaf)[0] if jnp.ndim(leaf) else None
        for leaf in jax.tree_util.tree_leaves(summaries)
    }
    if sizes - {batch}:
        found = " and ".join(
            sorted("scalar leaves" if size is None else f"first axis {size}" for size in sizes)
        )
        raise ValueError(
            f"summaries has {found}, but initial_states contains {batch} landers; build one "
            "summary per lander and stack them on a first axis, for example with jax.vmap "
            "of the function that makes one."
        )


def _scan_control_steps(
    vehicle, config, policy, initial_state, params, policy_carry, observe, summary
):
    """Scan ``config.horizon`` control steps of one lander and return the final simulation
    state, the last summary and the stacked per-step records (see :func:`_control_loop`)."""
    return _control_loop(
        vehicle,
        config,
        policy,
        initial_sim_state(initial_state),
        params,
        policy_carry,
        observe,
        summary,
    )


def _control_loop(vehicle, config, policy, start, params, policy_carry, observe, summary):
    """Scan ``config.horizon`` control steps from the simulation state ``start`` and
    return the final simulation state, the last summary and the stacked per-step records.

    ``observe(summary, step, vehicle_state, action, active) -> (summary, record)`` is
    called once per control step.

    Truncation passes the simulation state and the policy carry through
    ``lax.stop_gradient`` but leaves the summary alone. Every value folded into the
    summary is computed from the state after the cut, so its gradient already reaches
    back at most ``truncation`` steps through the state, as for a recorded trajectory.
    Cutting the summary as well would drop the gradient of every step before the last
    cut, and the gradient would differ from that of the same cost computed from a
    :class:`Trajectory`.

    Each controller call is checkpointed (``jax.checkpoint``) in every remat mode: the
    backward pass keeps its inputs and recomputes its intermediates. Values and
    gradients are the same up to float rounding, and storing the intermediates of every
    step took longer than computing them again. Measured on a 2-core AVX-512 Xeon (jax
    0.10.2), loss with gradient as the trainer compiles it, ``remat="none"``, horizon 64
    or 128, both versions compiled in one process: 6-DOF booster with its PID 1.19 times
    faster (4,096 landers, 2 devices), with the MLP 1.22 times; planar booster 1.19
    times (PID) and 1.56 times (MLP); 1-D lander 1.05 times (PID) and 1.84 times (MLP).
    The backward pass's temporary memory fell to between 0.06 (1-D lander, MLP) and 0.63
    (1-D lander, PID) of what it was.
    """

    # prevent_cse=False is safe because the call runs inside lax.scan (see control_step).
    checkpointed_policy = jax.checkpoint(
        lambda state, memory: policy(state, params, memory), prevent_cse=False
    )

    def body(carry, _):
        sim, memory, summary, step = carry
        if config.truncation is not None:
            cut = (step > 0) & (step % config.truncation == 0)
            sim, memory = jax.tree_util.tree_map(
                lambda x: jnp.where(cut, jax.lax.stop_gradient(x), x), (sim, memory)
            )
        action, memory = checkpointed_policy(sim.vehicle, memory)
        summary, record = observe(summary, step, sim.vehicle, action, ~sim.touched_down)
        next_sim = control_step(vehicle, config, sim, action, params)
        return (next_sim, memory, summary, step + 1), record

    # The step index is carried rather than scanned over, so that the backward pass keeps
    # no array of length horizon.
    step = jnp.zeros((), jnp.int32)
    carry = (start, policy_carry, summary, step)
    if config.remat == "nested":
        carry, records = _nested_scan(body, carry, config.horizon, config.segment_length)
    else:
        if config.remat == "step":
            # The jax.checkpoint documentation (jax 0.10.2) states that its protection
            # against common-subexpression elimination is unnecessary inside lax.scan.
            body = jax.checkpoint(body, prevent_cse=False)
        carry, records = jax.lax.scan(body, carry, None, length=config.horizon)
    final, _, summary, _ = carry
    return final, summary, records


def final_state(
    vehicle: Vehicle,
    config: SimConfig,
    policy: Policy,
    initial_state: State,
    params: Params,
    policy_carry: Any,
) -> SimState:
    """Simulate like :func:`rollout` but keep only the simulation state after the last step.

    Nothing is recorded per step, so this is the forward pass to use where only the end
    state matters (evaluation, throughput measurements). Batch with ``jax.vmap``.
    """

    def body(carry, _):
        sim, memory = carry
        action, memory = policy(sim.vehicle, params, memory)
        return (control_step(vehicle, config, sim, action, params), memory), None

    (final, _), _ = jax.lax.scan(
        body, (initial_sim_state(initial_state), policy_carry), None, length=config.horizon
    )
    return final


def final_state_batch(
    vehicle: Vehicle,
    config: SimConfig,
    policy: Policy,
    initial_states: State,
    params: Params,
    policy_carry: Any,
    *,
    devices: Sequence[jax.Device] | None = None,
    validate: bool = True,
) -> SimState:
    """Simulate a batch like ``jax.vmap`` of :func:`final_state`, faster, on several devices.

    ``initial_states`` has the batch on the first axis of every leaf (as returned by the
    samplers); ``params`` and ``policy_carry`` are those of one lander and shared by the
    batch (each lander's carry starts from ``policy_carry``). The result is the batch of
    final simulation states, batch first, equal to
    ``jax.vmap(lambda s: final_state(vehicle, config, policy, s, params, policy_carry))``
    up to float rounding.

    The batch is split evenly over ``devices`` (default: every local device), so its size
    must be a multiple of their number. On a CPU, XLA runs one device's rollout on about
    one core, so use all cores by starting the process with
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (set before jax is imported).
    When ``vehicle.component_tuples`` is true, each device holds every state component
    of its landers as one contiguous array, which lets XLA compile the step into flat
    vectorised loops; ``policy`` is still written for one lander and is vmapped.

    Called with concrete arrays, the function is compiled once per ``(vehicle, config,
    policy, devices)`` and input shapes, so pass the same ``policy`` object on every
    call. Called inside ``jax.jit`` or a gradient it gives the same values, but XLA then
    compiles the step without the options that make it fast (the caller's ``jit`` sets
    those), so time it as a top-level call. NOTE: the component layout without those
    options made the gradient of a 6-DOF loss about 250 times slower than through
    ``jax.vmap`` (see :func:`reduce_rollout_batch`); for a gradient, use
    :func:`reduce_rollout_batch` compiled by
    :func:`~diffland.training.lower_training_function`.

    Concrete ``initial_states`` and ``params`` are checked with ``vehicle.validate``
    before anything is compiled, which raises ``ValueError`` for a non-finite value or
    an invalid parameter. The check reads the whole batch on the host (a copy from an
    accelerator) on every call, so a timing loop checks its inputs once and then passes
    ``validate=False``. Traced inputs are not checked.
    """
    run, devices, inputs = _batch_program(
        vehicle, initial_states, params, policy_carry, devices, validate
    )
    return run(vehicle, config, policy, devices, *inputs)


def lower_final_state_batch(
    vehicle: Vehicle,
    config: SimConfig,
    policy: Policy,
    initial_states: State,
    params: Params,
    policy_carry: Any,
    *,
    devices: Sequence[jax.Device] | None = None,
) -> jax.stages.Lowered:
    """Return the program that :func:`final_state_batch` runs for these arguments,
    lowered but not compiled or run.

    Compile it (``.compile()``) to read XLA's cost and memory analysis or its HLO. The
    program is that of one device, with the batch size over ``len(devices)`` landers.
    XLA's cost analysis counts the body of a loop once, so to count one control step
    pass ``config`` with ``horizon=1`` and at most 4,096 landers per device (larger
    shards loop over chunks of that size). Concrete ``initial_states`` and ``params``
    are checked with ``vehicle.validate`` first, as in :func:`final_state_batch`.
    """
    run, devices, inputs = _batch_program(
        vehicle, initial_states, params, policy_carry, devices, validate=True
    )
    return run.lower(vehicle, config, policy, devices, *inputs)


def _batch_program(vehicle, initial_states, params, policy_carry, devices, validate):
    """Check the batch against the devices (and, with ``validate``, its values) and
    return the jitted program of :func:`final_state_batch`, the devices as a tuple and
    the program's inputs."""
    if isinstance(devices, jax.Device):
        raise ValueError(
            f"devices = {devices} is one device; pass a sequence such as [device], or None "
            "for every local device."
        )
    devices = tuple(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices is empty; pass at least one device, or None for all.")
    batch = _batch_size(initial_states)
    if batch % len(devices):
        landers = "1 lander" if batch == 1 else f"{batch} landers"
        raise ValueError(
            f"a batch of {landers} does not split evenly over {len(devices)} devices; "
            f"pass a multiple of {len(devices)} landers or fewer devices."
        )
    check_state_dtypes(initial_states, "initial_states")
    if validate:
        # vehicle.validate skips traced values. Under jax.jit, concrete ones (params closed
        # over) are still checked, because compile-time evaluation keeps them concrete.
        with jax.ensure_compile_time_eval():
            vehicle.validate(initial_states, params)
    inputs = (initial_states, params, policy_carry)
    # jax.jit takes compiler options only where it is not traced inside another
    # transformation; nested, the step keeps its values but loses the barriers' effect.
    # NOTE: with one or two landers per device the compiler options above made XLA 0.10.2
    # abort on the 1-D lander with semi-implicit Euler in a failed buffer check, while 3 to
    # 32 landers compiled. So shards below _MIN_FAST_SHARD_LANDERS compile without them.
    fast = is_concrete(inputs) and batch >= _MIN_FAST_SHARD_LANDERS * len(devices)
    run = _final_state_batch if fast else _final_state_batch_nested
    return run, devices, inputs


def _batch_size(states: State) -> int:
    leaves = jax.tree_util.tree_leaves(states)
    if not leaves or any(jnp.ndim(leaf) == 0 for leaf in leaves):
        raise ValueError(
            "initial_states needs a batch axis first on every leaf; for one lander use final_state."
        )
    sizes = {jnp.shape(leaf)[0] for leaf in leaves}
    if len(sizes) > 1:
        raise ValueError(
            f"the leaves of initial_states have batch sizes {sorted(sizes)}; pass the same "
            "number of landers on the first axis of every leaf."
        )
    (size,) = sizes
    if size == 0:
        raise ValueError("initial_states contains no lander; pass a batch of at least one.")
    return size


_COMPONENT_COMPILER_OPTIONS = {
    # Keep lax.optimization_barrier until fusion, where it bounds XLA's recomputation.
    "xla_disable_hlo_passes": "cse_barrier_expander",
    # Vectorise with the full 512-bit registers on CPUs that have them.
    "xla_cpu_prefer_vector_width": 512,
}
"""XLA options of the program compiled by :func:`final_state_batch`. Other modules read
them through :func:`component_compiler_options`."""


def component_compiler_options() -> dict[str, Any]:
    """Return a copy of the XLA options under which :func:`components.shared` takes effect.

    Pass them as ``jax.jit(..., compiler_options=...)`` to a function traced inside
    :func:`components.materializing`. They keep the optimization barriers until fusion
    and prefer 512-bit vectors. :func:`final_state_batch` and the trainer's update compile
    with them.
    """
    return dict(_COMPONENT_COMPILER_OPTIONS)


_MIN_FAST_SHARD_LANDERS = 4
"""Minimum number of landers per device that :func:`final_state_batch` compiles with
:data:`_COMPONENT_COMPILER_OPTIONS`. Smaller shards compile with XLA's defaults."""

_UNROLLED_SUBSTEPS = 4
"""Largest number of physics sub-steps that :func:`final_state_batch` writes out in
line rather than as an inner scan."""

_CHUNK = 4096
"""Maximum number of landers that one device steps at a time in :func:`final_state_batch`.
Larger shards run as several chunks in turn, so that the intermediates of a step stay
in the processor's cache."""


def _sharded_final_state(vehicle, config, policy, devices, initial_states, params, policy_carry):
    mesh = jax.sharding.Mesh(np.asarray(devices), ("batch",))
    batched = jax.sharding.PartitionSpec("batch")
    shared = jax.sharding.PartitionSpec()

    def local(states, params, carry):
        if vehicle.component_tuples:
            return _final_state_chunked(vehicle, config, policy, states, params, carry)
        return jax.vmap(lambda s: final_state(vehicle, config, policy, s, params, carry))(states)

    run = jax.shard_map(
        local, mesh=mesh, in_specs=(batched, shared, shared), out_specs=batched, check_vma=False
    )
    return run(initial_states, params, policy_carry)


_final_state_batch = jax.jit(
    _sharded_final_state,
    static_argnums=(0, 1, 2, 3),
    compiler_options=_COMPONENT_COMPILER_OPTIONS,
)
_final_state_batch_nested = jax.jit(_sharded_final_state, static_argnums=(0, 1, 2, 3))


def _final_state_chunked(vehicle, config, policy, states, params, policy_carry):
    """Run :func:`_final_state_batch_last` on chunks of at most :data:`_CHUNK` landers,
    one after the other, when the batch splits evenly into them."""
    batch = _batch_size(states)
    chunks = -(-batch // _CHUNK)
    if chunks == 1 or batch % chunks:
        return _final_state_batch_last(vehicle, config, policy, states, params, policy_carry)
    split = jax.tree_util.tree_map(
        lambda x: x.reshape(chunks, batch // chunks, *x.shape[1:]), states
    )
    finals = jax.lax.map(
        lambda chunk: _final_state_batch_last(vehicle, config, policy, chunk, params, policy_carry),
        split,
    )
    return jax.tree_util.tree_map(lambda x: x.reshape(batch, *x.shape[2:]), finals)


def _final_state_batch_last(vehicle, config, policy, states, params, policy_carry):
    """Run :func:`final_state` for a batch-first ``states`` in the component layout of
    :func:`_component_start`. The policy receives arrays with the batch last."""
    batch = _batch_size(states)
    start, memory = _component_start(vehicle, states, policy_carry)
    batched_policy = _batch_last_policy(policy)

    def body(carry, _):
        sim, memory = carry
        action, memory = batched_policy(sim.vehicle, params, memory)
        return (_unrolled_control_step(vehicle, config, sim, action, params), memory), None

    with components.materializing():
        (final, _), _ = jax.lax.scan(body, (start, memory), None, length=config.horizon)
    return _batch_first(final, batch)


def _component_start(vehicle: Vehicle, states: State, policy_carry: Any) -> tuple[SimState, Any]:
    """Return the start simulation state of a batch-first ``states`` in the component
    layout, and ``policy_carry`` repeated for each lander with the batch last.

    Every state field that changes along the rollout becomes one array of shape
    ``(batch,)`` per component (a tuple for a vector field); the constant fields keep
    their arrays with the batch moved last.
    """
    batch = _batch_size(states)
    constant = set(vehicle.constant_fields)
    fields = {
        field.name: _to_components(getattr(states, field.name), field.name in constant)
        for field in dataclasses.fields(states)
    }
    start = initial_sim_state(states.replace(**fields))
    start = start.replace(
        touched_down=jnp.zeros((batch,), bool),
        touchdown_time=jnp.broadcast_to(start.touchdown_time, (batch,)),
    )
    memory = jax.tree_util.tree_map(
        lambda x: jnp.broadcast_to(jnp.expand_dims(x, -1), jnp.shape(x) + (batch,)), policy_carry
    )
    return start, memory


def _batch_last_policy(policy: Policy) -> Policy:
    """Return ``policy`` (written for one lander) for a component-layout state, with the
    batch last in its carry and action."""
    batched = jax.vmap(policy, in_axes=(-1, None, -1), out_axes=-1)
    return lambda state, params, memory: batched(_stacked(state), params, memory)


def _stacked(state: State) -> State:
    """Return a component-layout state with each tuple stacked into one batch-last array."""
    return jax.tree_util.tree_map(_stack_tuple, state, is_leaf=_is_tuple)


def _batch_first(final: SimState, batch: int) -> SimState:
    """Return a component-layout simulation state batch first, as ``jax.vmap`` gives it."""
    return SimState(
        vehicle=jax.tree_util.tree_map(lambda x: jnp.moveaxis(x, -1, 0), _stacked(final.vehicle)),
        time=jnp.broadcast_to(final.time, (batch,)),
        touched_down=final.touched_down,
        touchdown_time=final.touchdown_time,
    )


def _to_components(field: Any, constant: bool) -> Any:
    """Return a batch-first field with the batch moved last, as one tuple entry per
    component for a ``(batch, k)`` array of a field that changes along the rollout."""

    def convert(x):
        if not constant and jnp.ndim(x) == 2:
            return tuple(x[:, i] for i in range(x.shape[1]))
        return jnp.moveaxis(x, 0, -1)

    return jax.tree_util.tree_map(convert, field)


def _is_tuple(x: Any) -> bool:
    return isinstance(x, tuple)


def _stack_tuple(x: Any) -> Any:
    return jnp.stack(x) if isinstance(x, tuple) else x


def _nested_scan(body, carry, length: int, segment: int):
    """Run ``lax.scan(body, carry, None, length=length)`` as a scan over checkpointed
    segments.

    The outer scan keeps only the carry at each segment boundary for the backward pass,
    which then recomputes the segment's inner scan. ``length % segment`` leftover steps
    run as one more, shorter checkpointed segment. Outputs are concatenated back into one
    leading axis of length ``length``.
    """

    def run_segment(carry, steps):
        @functools.partial(jax.checkpoint, prevent_cse=False)
        def run(carry):
            return jax.lax.scan(body, carry, None, length=steps)

        return run(carry)

    count = length // segment
    full = count * segment
    carry, outputs = jax.lax.scan(
        lambda carry, _: run_segment(carry, segment), carry, None, length=count
    )
    outputs = jax.tree_util.tree_map(lambda x: x.reshape(full, *x.shape[2:]), outputs)
    if full == length:
        return carry, outputs
    carry, tail = run_segment(carry, length - full)
    outputs = jax.tree_util.tree_map(
        lambda head, rest: jnp.concatenate([head, rest]), outputs, tail
    )
    return carry, outputs


def open_loop_policy(actions: jax.Array) -> Policy:
    """Return a policy that replays ``actions`` (shape ``(steps, action_size)``) in order.

    Its carry is the integer step index; start it at ``jnp.array(0)``. The last action is
    held once the sequence is used up.
    """

    def policy(state, params, step):
        del state, params
        index = jnp.minimum(step, actions.shape[0] - 1)
        return actions[index], step + 1

    return policy
