"""Domain randomisation of the planar booster: per-episode vehicle parameters and sensors.

An :class:`Episode` is one start state together with the physical parameters of that
episode and the settings of its sensors. The trainer, the evaluation and behaviour
cloning accept a batch of episodes wherever they accept a batch of start states. The
physics of each episode then uses its own parameters, while the controller is handed
the task's nominal parameters (the model it was designed with), so it has to cope with
the difference.

What is drawn, per episode (:class:`RandomizationRanges`):

- relative factors on the dry mass, the maximum thrust, the specific impulse and the
  radius of gyration. A dry-mass change moves the start mass by the same amount, so the
  propellant on board is the one the scenario drew;
- an engine misalignment (a fixed offset of the thrust line, degrees);
- the time constant of the throttle build-up lag (needs ``throttle_lag=True``);
- the steady wind speed and the RMS gust speed;
- a factor on the sensor noise and a sensor latency in control steps.

Sensors (:class:`SensorModel`) act between the state and the controller, outside the
physics step. The controller receives a state with Gaussian noise added to chosen fields,
taken ``latency`` control steps ago. The buffer of past measurements and the noise key
live in the policy carry.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Range = tuple[float, float] | None
"""A closed interval ``(low, high)`` drawn uniformly, or None for the nominal value."""


@struct.dataclass
class Episode:
    """One start state with the parameters and sensor settings of its episode.

    For a batch every leaf has a leading axis, one entry per episode.
    """

    state: Any
    """Vehicle start state."""
    params: Any
    """Physical parameters of this episode (used by the physics, not shown to the
    controller)."""
    sensor_key: jax.Array
    """Raw ``uint32`` PRNG key data of the sensor noise, shape ``(2,)``."""
    noise_scale: jax.Array
    """Factor on the sensor model's noise standard deviations, shape ``()``."""
    latency: jax.Array
    """Sensor latency in control steps, ``int32`` of shape ``()``."""


@dataclasses.dataclass(frozen=True)
class SensorModel:
    """Noise and latency between the vehicle state and the controller.

    At each control step the state is measured: every field named in ``noise_std`` gets
    Gaussian noise of standard deviation ``std * episode.noise_scale``. The measurement
    enters a buffer of the last ``max_latency + 1`` measurements, and the controller
    receives the one taken ``episode.latency`` steps ago. Before that many steps have
    passed it receives the start state without noise (the buffer starts filled with it).
    """

    noise_std: tuple[tuple[str, float], ...] = ()
    """``(state field, standard deviation)`` pairs, in the field's unit."""
    max_latency: int = 0
    """Maximum latency of an episode, control steps; sets the buffer length."""

    def __post_init__(self):
        latency = self.max_latency
        if isinstance(latency, bool) or not (isinstance(latency, int) and latency >= 0):
            raise ValueError(
                f"SensorModel.max_latency = {latency!r} is invalid: pass an integer >= 0 "
                "(control steps)."
            )
        entries = self.noise_std
        if not isinstance(entries, tuple | list) or not all(
            isinstance(pair, tuple | list) for pair in entries
        ):
            raise ValueError(
                f"SensorModel.noise_std = {entries!r} is invalid: pass a tuple of (field, "
                "standard deviation) pairs, such as (('x', 0.5),)."
            )
        pairs = tuple(tuple(pair) for pair in entries)
        for pair in pairs:
            valid = (
                len(pair) == 2
                and isinstance(pair[0], str)
                and isinstance(pair[1], numbers.Real)
                and not isinstance(pair[1], bool)
                and math.isfinite(pair[1])
                and pair[1] >= 0
            )
            if not valid:
                raise ValueError(
                    f"SensorModel.noise_std entry {pair!r} is invalid: pass (state field "
                    "name, standard deviation >= 0) pairs, such as ('x', 1.0)."
                )
        object.__setattr__(self, "noise_std", pairs)

    def check_state(self, state: Any) -> None:
        """Raise ``ValueError`` when a noisy field is not a field of ``state``."""
        names = {field.name for field in dataclasses.fields(state)}
        unknown = sorted(name for name, _ in self.noise_std if name not in names)
        if unknown:
            raise ValueError(
                f"SensorModel.noise_std names {unknown}, which {type(state).__name__} does "
                f"not have; its fields are {sorted(names)}."
            )

    def measure(self, state: Any, key: jax.Array, scale: jax.Array) -> Any:
        """Return ``state`` with the configured noise added (one lander)."""
        if not self.noise_std:
            return state
        keys = jax.random.split(key, len(self.noise_std))
        noisy = {}
        for (name, std), field_key in zip(self.noise_std, keys, strict=True):
            value = getattr(state, name)
            noise = jax.random.normal(field_key, jnp.shape(value), jnp.result_type(value))
            noisy[name] = value + std * scale * noise
        return state.replace(**noisy)

    def wrap(self, policy: Callable, inner_carry: Any, episode: Episode):
        """Return a policy that acts on measured, delayed states, and its initial carry.

        ``policy(state, params, carry) -> (action, carry)`` is the controller's policy;
        ``episode`` is one unbatched episode.
        """
        length = self.max_latency + 1
        buffer = jax.tree_util.tree_map(
            lambda x: jnp.broadcast_to(x, (length, *jnp.shape(x))), episode.state
        )
        carry = SensorCarry(
            inner=inner_carry,
            buffer=buffer,
            key=episode.sensor_key,
            noise_scale=episode.noise_scale,
            latency=jnp.clip(episode.latency, 0, self.max_latency),
        )

        def sensed_policy(state, params, carry: SensorCarry):
            key, measure_key = jax.random.split(carry.key)
            measured = self.measure(state, measure_key, carry.noise_scale)
            # Newest measurement first, so index d contains the one from d steps ago.
            buffer = jax.tree_util.tree_map(
                lambda past, now: jnp.concatenate([now[None], past[:-1]]), carry.buffer, measured
            )
            seen = jax.tree_util.tree_map(lambda past: past[carry.latency], buffer)
            action, inner = policy(seen, params, carry.inner)
            return action, carry.replace(inner=inner, buffer=buffer, key=key)

        return sensed_policy, carry


@struct.dataclass
class SensorCarry:
    """Policy carry of a controller behind a :class:`SensorModel`."""

    inner: Any
    """The controller's own carry."""
    buffer: Any
    """The last ``max_latency + 1`` measured states, newest first."""
    key: jax.Array
    """Raw ``uint32`` PRNG key data of the next measurement's noise. Raw data, not a
    typed key, so that ``jnp.where`` (gradient truncation) can act on every carry leaf."""
    noise_scale: jax.Array
    latency: jax.Array


PLANAR_SENSOR_NOISE = (
    ("x", 0.5),
    ("z", 0.1),
    ("vx", 0.05),
    ("vz", 0.05),
    ("pitch", 0.001),
    ("pitch_rate", 0.001),
)
"""Noise standard deviations of the planar booster's navigation solution at noise scale
1: horizontal position 0.5 m, height 0.1 m (a radar altimeter near the ground), velocity
0.05 m/s, pitch 1 mrad and pitch rate 1 mrad/s. These are assumed round figures, not
measured values. The cascaded PID's vertical reference ``sqrt(v_td^2 + 2 beta a h)``
is steep near the ground, so metre-level height noise alone makes it crash."""


@dataclasses.dataclass(frozen=True)
class RandomizationRanges:
    """Per-episode ranges of the planar booster's parameters, each drawn uniformly.

    Every field is a closed interval ``(low, high)`` or None, which keeps the nominal
    value. The ``*_scale`` fields are factors on the nominal parameter (relative); the
    others are absolute values in the unit of their name. A zero-width range fixes the
    value, and the factor range ``(1, 1)`` reproduces the nominal model exactly.
    """

    dry_mass_scale: Range = None
    """Factor on the dry mass; the start mass moves by the same number of kg."""
    max_thrust_scale: Range = None
    """Factor on the thrust at full throttle."""
    isp_scale: Range = None
    """Factor on the specific impulse."""
    radius_of_gyration_scale: Range = None
    """Factor on the pitch radius of gyration (the inertia scales with its square)."""
    engine_misalignment_deg: Range = None
    """Offset of the thrust line from the commanded gimbal direction, degrees (signed)."""
    throttle_time_constant: Range = None
    """Time constant of the throttle build-up lag, s; needs ``throttle_lag=True``."""
    steady_wind: Range = None
    """Steady wind speed, m/s, blowing towards +x or -x with equal chance."""
    gust_rms: Range = None
    """Root-mean-square gust speed, m/s."""
    noise_scale: Range = None
    """Factor on the sensor model's noise (None: 1)."""
    latency_steps: tuple[int, int] | None = None
    """Sensor latency, whole control steps, both ends included (None: 0)."""

    def __post_init__(self):
        for field in dataclasses.fields(self):
            bounds = getattr(self, field.name)
            if bounds is None:
                continue
            valid = (
                isinstance(bounds, tuple | list)
                and len(bounds) == 2
                and all(
                    isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                    for v in bounds
                )
            )
            if not valid:
                raise ValueError(
                    f"RandomizationRanges.{field.name} = {bounds!r} is invalid: pass a pair "
                    "of finite numbers (low, high), or None for the nominal value."
                )
            # Plain Python numbers, so the ranges can be written to JSON.
            low, high = (v.item() if hasattr(v, "item") else v for v in bounds)
            if low > high:
                raise ValueError(
                    f"RandomizationRanges.{field.name} = {bounds!r} is invalid: low {low} is "
                    f"above high {high}; pass the bounds in the order (low, high)."
                )
            object.__setattr__(self, field.name, (low, high))
            self._check_domain(field.name, low, high)

    def _check_domain(self, name: str, low: float, high: float) -> None:
        if name.endswith("_scale") and low <= 0 and name != "noise_scale":
            raise ValueError(
                f"RandomizationRanges.{name} = {(low, high)} is invalid: a factor on a "
                "physical parameter must be positive; pass a low end above 0, such as 0.9."
            )
        if name in ("noise_scale", "steady_wind", "gust_rms") and low < 0:
            raise ValueError(
                f"RandomizationRanges.{name} = {(low, high)} is invalid: it must be >= 0."
            )
        if name == "throttle_time_constant" and low <= 0:
            raise ValueError(
                f"RandomizationRanges.throttle_time_constant = {(low, high)} s is invalid: a "
                "time constant must be positive; pass a low end above 0, such as 0.05."
            )
        if name == "engine_misalignment_deg" and max(abs(low), abs(high)) >= 90:
            raise ValueError(
                f"RandomizationRanges.engine_misalignment_deg = {(low, high)} is invalid: "
                "the offset must lie within (-90, 90) degrees."
            )
        if name == "latency_steps":
            if low < 0 or low != int(low) or high != int(high):
                raise ValueError(
                    f"RandomizationRanges.latency_steps = {(low, high)} is invalid: pass "
                    "whole numbers of control steps >= 0."
                )
            object.__setattr__(self, name, (int(low), int(high)))

    def contains(self, draws: dict[str, np.ndarray]) -> np.ndarray:
        """Return True for each draw whose every value lies within these ranges.

        ``draws`` maps field names to arrays of drawn values. A field that is None here
        counts as containing any value.
        """
        inside = None
        for name, values in draws.items():
            bounds = getattr(self, name)
            values = np.asarray(values)
            within = np.ones(values.shape, bool)
            if bounds is not None:
                within = (values >= bounds[0]) & (values <= bounds[1])
            inside = within if inside is None else inside & within
        return inside


PLANAR_TRAINING_RANGES = RandomizationRanges(
    dry_mass_scale=(0.95, 1.05),
    max_thrust_scale=(0.95, 1.05),
    isp_scale=(0.97, 1.03),
    radius_of_gyration_scale=(0.9, 1.1),
    engine_misalignment_deg=(-0.5, 0.5),
    throttle_time_constant=(0.05, 0.2),
    steady_wind=(0.0, 5.0),
    gust_rms=(0.0, 2.0),
    noise_scale=(0.0, 1.0),
    latency_steps=(0, 1),
)
"""Training ranges of the robustness experiment on the planar booster. Dry mass and
thrust vary by 5 %, Isp by 3 % and the radius of gyration by 10 %. The thrust line is
off by up to 0.5 degrees and the throttle lags by 0.05-0.2 s. The steady wind reaches up
to 5 m/s with gusts up to 2 m/s RMS. The sensor noise runs from none to
:data:`PLANAR_SENSOR_NOISE`, and the sensors lag by 0 or 1 control steps."""

PLANAR_OUT_OF_DISTRIBUTION_RANGES = RandomizationRanges(
    dry_mass_scale=(0.9, 1.1),
    max_thrust_scale=(0.9, 1.1),
    isp_scale=(0.94, 1.06),
    radius_of_gyration_scale=(0.8, 1.2),
    engine_misalignment_deg=(-1.0, 1.0),
    throttle_time_constant=(0.05, 0.4),
    steady_wind=(0.0, 8.0),
    gust_rms=(0.0, 3.0),
    noise_scale=(0.0, 2.0),
    latency_steps=(0, 2),
)
"""Wider ranges for the out-of-distribution test: each range about doubles, and draws
inside :data:`PLANAR_TRAINING_RANGES` are rejected (see :func:`sample_episodes`)."""

_PARAM_SCALES = {
    "dry_mass_scale": "dry_mass",
    "max_thrust_scale": "max_thrust",
    "isp_scale": "isp",
    "radius_of_gyration_scale": "radius_of_gyration",
}


def draw_ranges(key: jax.Array, count: int, ranges: RandomizationRanges, dtype) -> dict:
    """Return ``count`` uniform draws of every set field of ``ranges`` (numpy arrays)."""
    draws = {}
    fields = [field.name for field in dataclasses.fields(ranges)]
    for index, name in enumerate(fields):
        bounds = getattr(ranges, name)
        if bounds is None:
            continue
        field_key = jax.random.fold_in(key, index)
        if name == "latency_steps":
            values = jax.random.randint(field_key, (count,), bounds[0], bounds[1] + 1)
        else:
            values = jax.random.uniform(field_key, (count,), dtype, bounds[0], bounds[1])
        draws[name] = np.asarray(values)
    return draws


def draw_ranges_outside(
    key: jax.Array,
    count: int,
    ranges: RandomizationRanges,
    excluded: RandomizationRanges,
    dtype,
    max_draws: int = 100,
) -> dict:
    """Return ``count`` draws of ``ranges`` that do not lie inside ``excluded``.

    A draw is kept when at least one of its values falls outside the ``excluded`` range
    of that field (rejection sampling). Raises ``ValueError`` when ``max_draws`` rounds
    of ``count`` candidates do not give enough.
    """
    kept: list[dict] = []
    total = 0
    for round_index in range(max_draws):
        draws = draw_ranges(jax.random.fold_in(key, round_index), count, ranges, dtype)
        outside = ~excluded.contains(draws)
        kept.append({name: values[outside] for name, values in draws.items()})
        total += int(outside.sum())
        if total >= count:
            return {name: np.concatenate([part[name] for part in kept])[:count] for name in draws}
    raise ValueError(
        f"only {total} of {max_draws * count} draws of {ranges} fall outside {excluded}; "
        "widen the ranges beyond the excluded ones."
    )


def episodes_from_draws(
    states: Any, params: Any, draws: dict, key: jax.Array, throttle_lag: bool = False
) -> Episode:
    """Build a batch of episodes from start states, nominal parameters and draws.

    ``states`` is a batch of planar start states with the nominal dry mass; ``draws``
    comes from :func:`draw_ranges` with one entry per state. With ``throttle_lag`` each
    start state gets a ``throttle`` at ``throttle_min``: the engine is lit at ignition
    at its lowest setting.
    """
    count = jax.tree_util.tree_leaves(states)[0].shape[0]
    dtype = states.mass.dtype

    def batched(value):
        return jnp.broadcast_to(jnp.asarray(value, dtype), (count,))

    values = {
        field.name: batched(getattr(params, field.name)) for field in dataclasses.fields(params)
    }
    for name, param in _PARAM_SCALES.items():
        if name in draws:
            values[param] = values[param] * jnp.asarray(draws[name], dtype)
    if "engine_misalignment_deg" in draws:
        values["engine_misalignment"] = jnp.deg2rad(
            jnp.asarray(draws["engine_misalignment_deg"], dtype)
        )
    if "throttle_time_constant" in draws:
        if not throttle_lag:
            raise ValueError(
                "RandomizationRanges.throttle_time_constant is set but the booster has "
                "throttle_lag=False, so the lag would not act; build the booster with "
                "PlanarBooster(throttle_lag=True) or set the range to None."
            )
        values["throttle_time_constant"] = jnp.asarray(draws["throttle_time_constant"], dtype)
    episode_params = type(params)(**values)

    # The propellant on board stays as drawn, so the start mass follows the dry mass.
    mass = states.mass + (episode_params.dry_mass - batched(params.dry_mass))
    states = states.replace(mass=mass)
    states = _apply_wind(states, draws, jax.random.fold_in(key, 1), dtype)
    if throttle_lag:
        states = states.replace(throttle=batched(params.throttle_min))

    noise_scale = draws.get("noise_scale", np.ones(count))
    latency = draws.get("latency_steps", np.zeros(count, np.int32))
    return Episode(
        state=states,
        params=episode_params,
        sensor_key=jax.random.key_data(jax.random.split(jax.random.fold_in(key, 2), count)),
        noise_scale=jnp.asarray(noise_scale, dtype),
        latency=jnp.asarray(latency, jnp.int32),
    )


def _apply_wind(states: Any, draws: dict, key: jax.Array, dtype) -> Any:
    """Replace the steady wind speed and the gust amplitude of each state with the drawn
    ones, keeping the gust wavelengths and phases the scenario drew."""
    wind = states.wind
    if "steady_wind" in draws:
        count = wind.steady.shape[0]
        sign = jnp.where(jax.random.bernoulli(key, 0.5, (count, 1)), 1.0, -1.0).astype(dtype)
        wind = wind.replace(steady=sign * jnp.asarray(draws["steady_wind"], dtype)[:, None])
    if "gust_rms" in draws:
        modes = wind.gust_amplitude.shape[1]
        amplitude = jnp.asarray(draws["gust_rms"], dtype) * math.sqrt(2.0 / modes)
        wind = wind.replace(
            gust_amplitude=jnp.broadcast_to(amplitude[:, None, None], wind.gust_amplitude.shape)
        )
    return states.replace(wind=wind)


def sample_episodes(
    key: jax.Array,
    states: Any,
    params: Any,
    ranges: RandomizationRanges,
    excluded: RandomizationRanges | None = None,
    throttle_lag: bool = False,
) -> Episode:
    """Draw the parameters and sensor settings of one episode per start state.

    ``states`` is a batch of planar start states drawn with the nominal ``params`` (for
    example by :func:`~diffland.scenarios.sample_booster_states`). With ``excluded``,
    every episode has at least one value outside those ranges (for out-of-distribution
    tests).
    """
    count = jax.tree_util.tree_leaves(states)[0].shape[0]
    dtype = states.mass.dtype
    draw_key, episode_key = jax.random.split(key)
    if excluded is None:
        draws = draw_ranges(draw_key, count, ranges, dtype)
    else:
        draws = draw_ranges_outside(draw_key, count, ranges, excluded, dtype)
    return episodes_from_draws(states, params, draws, episode_key, throttle_lag)
