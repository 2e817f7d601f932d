"""Command line, run folder and results file shared by every experiment."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import math
import pathlib
import shlex
import signal
import subprocess
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

SCHEMA_VERSION = 1

CONTROLLER_METRICS = (
    "n_eval",
    "success_rate",
    "no_touchdown_rate",
    "touchdown_speed_mean",
    "touchdown_speed_max",
    "propellant_mean",
    "propellant_ratio_to_optimal",
    "train_seconds",
    "compile_seconds",
)
"""Keys of each entry of ``controllers`` in ``results.json``."""


class RunFolderError(ValueError):
    """The requested run folder cannot be used."""


QUICK_HELP = "train less (a few minutes on 2 CPU cores); evaluation uses the same held-out set"
"""Help of ``--quick`` for the experiments that train controllers on the full held-out set."""

TRAINING_SUBFOLDERS = ("checkpoints", "plots", "tensorboard")
"""Subfolders that :func:`prepare_run_folder` creates for an experiment that trains
controllers with checkpoints and TensorBoard logs."""

RESUME_CHANGEABLE_FIELDS = ("num_devices",)
"""Config fields that a resumed run may change: checkpoints restore on any device count."""


def quick_help(full_held_out: int, quick_held_out: int) -> str:
    """Return the help of ``--quick`` for an experiment whose held-out set has
    ``full_held_out`` start states in a full run and ``quick_held_out`` with ``--quick``."""
    if quick_held_out == full_held_out:
        return QUICK_HELP
    return (
        f"train less and score a smaller held-out set ({quick_held_out} start states "
        f"instead of {full_held_out}), so the rates are coarser than a full run's"
    )


def add_common_arguments(
    parser: argparse.ArgumentParser, quick_help: str = QUICK_HELP, resumable: bool = True
) -> None:
    """Add the options every experiment accepts; ``quick_help`` describes ``--quick``.

    Without ``resumable``, ``--resume`` is still parsed (so that the experiment can reject
    it with a clear message) but hidden from the help.
    """
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=None,
        help="run folder (default: a new time-stamped folder under runs/)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoints"
        if resumable
        else argparse.SUPPRESS,
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="logging level (default INFO)",
    )
    # diffland train passes --launcher diffland, so that the resume command printed after
    # an interrupt and the parser's error messages have the form that the user ran (see
    # resume_command and _LauncherAction).
    parser.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        default="python",
        action=_LauncherAction,
        help=argparse.SUPPRESS,
    )


LAUNCHERS = ("python", "diffland")
"""Values of the hidden option ``--launcher``: the command that started the experiment,
``python -m experiments.NAME`` or ``diffland train NAME``."""


def launcher_words(launcher: str, experiment: str) -> list[str]:
    """Return the words of the command that runs ``experiment`` with ``launcher`` (one of
    :data:`LAUNCHERS`)."""
    if launcher == "diffland":
        return ["diffland", "train", experiment]
    return ["python", "-m", f"experiments.{experiment}"]


class _LauncherAction(argparse.Action):
    """Store ``--launcher`` and rename the parser's ``prog`` to the command it names.

    Errors that argparse reports after this option, and ``parser.error`` calls after
    parsing, then start with that command (``diffland train NAME: error: ...``).
    ``diffland train`` passes the option before every other option except ``--log-level``,
    whose value its own parser has already checked. A parser whose ``prog`` is not
    ``python -m experiments.NAME`` keeps its ``prog``.
    """

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        experiment = parser.prog.rpartition(".")[2]
        if parser.prog == shlex.join(launcher_words("python", experiment)):
            parser.prog = shlex.join(launcher_words(values, experiment))


NUM_DEVICES_HELP = (
    "devices that each training batch is split over, recorded as num_devices in "
    "config.json (default: each controller's batch over every local device when its size "
    "divides by their count, else over 1). A CPU is one JAX device unless Python starts with "
    "XLA_FLAGS=--xla_force_host_platform_device_count=N in the environment, which splits "
    "it into N devices"
)
"""Help of ``--num-devices`` for the experiments that train controllers."""


def add_num_devices_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--num-devices N``, which sets the config field ``num_devices``."""
    parser.add_argument("--num-devices", type=int, default=None, metavar="N", help=NUM_DEVICES_HELP)


def check_num_devices(num_devices: Any, batch_sizes: Mapping[str, int]) -> None:
    """Raise ``ValueError`` unless ``num_devices`` is None or a local device count that
    splits every batch of ``batch_sizes`` (config field name to landers per update)."""
    if num_devices is None:
        return
    if isinstance(num_devices, bool) or not (isinstance(num_devices, int) and num_devices >= 1):
        raise ValueError(
            f"num_devices = {num_devices!r} is invalid: pass an integer >= 1, or leave it "
            "unset to use every local device."
        )
    import jax

    available = jax.local_device_count()
    if num_devices > available:
        platform = jax.local_devices()[0].platform
        fix = f"Pass at most {available}"
        if platform == "cpu":
            fix += (
                f", or start Python with XLA_FLAGS=--xla_force_host_platform_device_count="
                f"{num_devices} in the environment to split the CPU into {num_devices} devices"
            )
        raise ValueError(
            f"num_devices = {num_devices} is invalid: JAX lists only {available} local "
            f"{platform} device(s). {fix}."
        )
    for name, size in batch_sizes.items():
        if size % num_devices:
            raise ValueError(
                f"num_devices = {num_devices} is invalid: {name} = {size} does not split "
                f"evenly over {num_devices} devices. Pass a num_devices that divides it, or "
                f"a {name} that is a multiple of {num_devices} (--set {name}=...)."
            )


def check_integers(config: Any, names: Sequence[str], minimum: int = 1) -> None:
    """Raise ``ValueError`` naming the first field of ``names`` in ``config`` that is not
    an integer >= ``minimum``."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not (isinstance(value, int) and value >= minimum):
            raise ValueError(f"{name} = {value!r} is invalid: pass an integer >= {minimum}.")


def check_positive_numbers(config: Any, names: Sequence[str], unit: str = "") -> None:
    """Raise ``ValueError`` naming the first field of ``names`` in ``config`` that is not
    a finite number > 0; ``unit`` (for example "seconds") goes into the message."""
    for name in names:
        value = getattr(config, name)
        valid = isinstance(value, int | float) and not isinstance(value, bool)
        if not (valid and math.isfinite(value) and value > 0):
            expected = f"a positive number of {unit}" if unit else "a positive finite number"
            raise ValueError(f"{name} = {value!r} is invalid: pass {expected}.")


def check_rollout_time(control_dt: float, horizon_seconds: float) -> None:
    """Raise ``ValueError`` unless both are positive times in s and the horizon
    ``round(horizon_seconds / control_dt)`` that the experiments pass to ``SimConfig`` is
    at least one control step and at most
    :data:`~diffland.dynamics.simulate.MAX_HORIZON`."""
    for name, value in (("control_dt", control_dt), ("horizon_seconds", horizon_seconds)):
        valid = isinstance(value, int | float) and not isinstance(value, bool)
        if not (valid and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} = {value!r} is invalid: pass a positive number of seconds.")
    from diffland.dynamics.simulate import MAX_HORIZON

    ratio = horizon_seconds / control_dt
    if not math.isfinite(ratio) or ratio > MAX_HORIZON:
        raise ValueError(
            f"horizon_seconds = {horizon_seconds!r} is invalid: with control_dt = "
            f"{control_dt!r} s it makes {ratio:.4g} control steps, more than the "
            f"{MAX_HORIZON:,} that a rollout can count. Pass horizon_seconds <= "
            f"{MAX_HORIZON * control_dt:g}."
        )
    steps = round(ratio)
    if steps < 1:
        raise ValueError(
            f"horizon_seconds = {horizon_seconds!r} is invalid: it is less than one control "
            f"step of control_dt = {control_dt!r} s. Pass horizon_seconds >= control_dt."
        )


def check_remat(remat: Any) -> None:
    """Raise ``ValueError`` unless ``remat`` is one of the modes of
    :attr:`~diffland.dynamics.SimConfig.remat`, the config field ``remat`` of the
    training experiments."""
    from diffland.dynamics.simulate import REMAT_MODES

    if not isinstance(remat, str) or remat not in REMAT_MODES:
        raise ValueError(
            f"remat = {remat!r} is invalid: pass one of {', '.join(REMAT_MODES)} (for "
            "example --set remat=step)."
        )


def resolve_num_devices(num_devices: int | None, batch_size: int) -> int:
    """Return the number of devices to split a batch of ``batch_size`` landers over.

    That is ``num_devices`` when set. Otherwise it is every local device when
    ``batch_size`` divides by their count, else 1.
    """
    if num_devices is not None:
        return num_devices
    import jax

    available = jax.local_device_count()
    if batch_size % available:
        logging.getLogger(__name__).info(
            "a batch of %d does not split evenly over %d local devices, so it trains on one",
            batch_size,
            available,
        )
        return 1
    return available


OPTION_FIELDS = ("quick", "seeds")
"""Config fields that only their own options (``--quick``, ``--seeds``) set, so
``--set`` rejects them."""


def add_override_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--set KEY=VALUE ...``, which changes fields of the experiment's config.

    An experiment that adds it must pass ``args.set`` to :func:`apply_overrides`.
    """
    parser.add_argument(
        "--set",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="change config fields, for example --set mlp.steps=50 control_dt=0.1 in a "
        "training experiment (the fields of its config.json, nested ones joined by dots)",
    )


def _field_types(cls: type) -> dict[str, Any]:
    """Return the resolved type of each field of the dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    return {field.name: hints[field.name] for field in dataclasses.fields(cls)}


def _field_names(cls: type, prefix: str = "") -> list[str]:
    """Return the dotted names of every leaf field of the dataclass ``cls``."""
    names = []
    for name, kind in _field_types(cls).items():
        if dataclasses.is_dataclass(kind):
            names.extend(_field_names(kind, f"{prefix}{name}."))
        else:
            names.append(prefix + name)
    return names


def _fixed_length(args: tuple) -> int | None:
    """Return the item count of ``tuple[T1, T2, ...]`` from its type arguments, or None for
    ``tuple[T, ...]`` (any length)."""
    if not args or args[-1] is Ellipsis:
        return None
    return len(args)


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) is tuple:
        args = typing.get_args(kind)
        element = (args or (str,))[0]
        name = getattr(element, "__name__", element)
        count = _fixed_length(args)
        if count is not None:
            return f"exactly {count} comma-separated values of type {name}"
        return f"a comma-separated list of {name}"
    return f"a value of type {getattr(kind, '__name__', kind)}"


def _parse_tuple(text: str, args: tuple) -> tuple | None:
    """Return the comma-separated ``text`` (brackets optional) as a tuple of the element
    type of ``tuple[T, ...]`` (or ``tuple[T, T]``, which also needs the right count), or
    None when an item does not convert or the count is wrong."""
    element = args[0] if args else str
    if element not in (int, float, str):
        return None
    inner = text.strip().removeprefix("[").removeprefix("(")
    inner = inner.removesuffix("]").removesuffix(")")
    try:
        items = tuple(element(item.strip()) for item in inner.split(",") if item.strip())
    except ValueError:
        return None
    count = _fixed_length(args)
    if count is not None and len(items) != count:
        return None
    return items


def _parse_value(key: str, text: str, kind: Any) -> Any:
    """Convert the text of ``--set key=text`` to the field type ``kind``."""
    allowed = (
        typing.get_args(kind)
        if typing.get_origin(kind) in (typing.Union, type(int | None))
        else (kind,)
    )
    if type(None) in allowed and text.lower() in ("none", "null"):
        return None
    for option in allowed:
        if option is bool:
            lowered = text.lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
        elif option in (int, float, str):
            try:
                return option(text)
            except ValueError:
                continue
        elif typing.get_origin(option) is tuple:
            items = _parse_tuple(text, typing.get_args(option))
            if items is not None:
                return items
    names = " or ".join(_type_name(option) for option in allowed)
    raise ValueError(f"--set {key}={text} is invalid: {key} takes {names}.")


def apply_overrides(config: Any, assignments: Sequence[str]) -> Any:
    """Return ``config`` (a dataclass) with each ``KEY=VALUE`` of ``assignments`` applied.

    Keys name fields, with dots for nested dataclasses (``mlp.steps``). Values are
    converted to the field's type. Raises ``ValueError`` naming the assignment and the
    accepted keys for an unknown key, a malformed assignment or a value of the wrong type.
    The keys of :data:`OPTION_FIELDS` (``quick``, ``seeds``) are rejected because their
    own options set them.
    """
    for assignment in assignments:
        key, separator, text = assignment.partition("=")
        key = key.strip()
        if not separator or not key:
            raise ValueError(
                f"--set {assignment} is invalid: write KEY=VALUE, for example --set mlp.steps=50."
            )
        if key in OPTION_FIELDS:
            raise ValueError(f"--set {assignment} is invalid: use the --{key} option instead.")
        known = ", ".join(name for name in _field_names(type(config)) if name not in OPTION_FIELDS)
        config = _replace_path(config, key.split("."), key, text.strip(), known)
    return config


def _replace_path(config: Any, path: list[str], key: str, text: str, known: str) -> Any:
    types = _field_types(type(config))
    name = path[0]
    if name not in types:
        raise ValueError(
            f"--set {key}={text} is invalid: there is no field {key}. Known fields: {known}."
        )
    kind = types[name]
    if dataclasses.is_dataclass(kind):
        if len(path) == 1:
            fields = ", ".join(_field_names(kind, f"{key}."))
            raise ValueError(
                f"--set {key}={text} is invalid: {key} is a group of fields; set one of {fields}."
            )
        value = _replace_path(getattr(config, name), path[1:], key, text, known)
    elif len(path) > 1:
        raise ValueError(f"--set {key}={text} is invalid: {name} has no fields.")
    else:
        value = _parse_value(key, text, kind)
    try:
        return dataclasses.replace(config, **{name: value})
    except (ValueError, TypeError) as error:
        raise ValueError(f"--set {key}={text} is invalid: {error}") from None


def config_from_dict(cls: type, values: Mapping[str, Any], source: str = "config.json") -> Any:
    """Rebuild the dataclass ``cls`` (nested ones included) from its ``asdict`` form.

    Raises :class:`RunFolderError` when ``values`` lacks a field or has one that ``cls``
    does not, which means the run was written by another version of the experiment.
    """
    types = _field_types(cls)
    unknown = sorted(set(values) - set(types))
    missing = sorted(
        field.name
        for field in dataclasses.fields(cls)
        if field.name not in values
        and field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    )
    if unknown or missing:
        raise RunFolderError(
            f"{source} does not match {cls.__name__} (unknown fields {unknown}, missing "
            f"fields {missing}): the run was written by another version of the experiment. "
            "Evaluate it with that version, or train a new run."
        )
    arguments = {}
    for name, value in values.items():
        kind = types[name]
        if dataclasses.is_dataclass(kind) and isinstance(value, Mapping):
            value = config_from_dict(kind, value, f"{source} field {name}")
        elif kind is float and isinstance(value, int):
            value = float(value)
        elif typing.get_origin(kind) is tuple and isinstance(value, list):
            # JSON has no tuples, and configs such as ImitationConfig reject a list.
            value = tuple(value)
        arguments[name] = value
    return cls(**arguments)


def read_run_config(run_folder: pathlib.Path, cls: type) -> Any:
    """Read ``config.json`` of a finished or interrupted run into the dataclass ``cls``."""
    path = pathlib.Path(run_folder) / "config.json"
    if not path.is_file():
        raise RunFolderError(
            f"{path} does not exist, so {run_folder} is not a run folder. Pass the folder "
            "that a training run wrote (the --out of diffland train)."
        )
    return config_from_dict(cls, json.loads(path.read_text()), str(path))


@dataclasses.dataclass
class LoadedRun:
    """A run folder's task, held-out set and trained controllers, rebuilt for scoring."""

    experiment: str
    config: Any
    task: Any
    """The :class:`~diffland.training.LandingTask` the run trained on."""
    held_out: Any
    """The held-out start states (batched), drawn again from their fixed seed."""
    controllers: list[dict[str, tuple[Any, Any]]]
    """Per training seed: controller name to ``(module, variables)``."""
    optimal_propellant: Any | None = None
    """Fuel-optimal propellant from each held-out state, kg, where the experiment has it."""
    fixed_entries: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """Results entries that no controller produces (the fuel-optimal burn), per name."""
    extra_metrics: Callable[[Any], dict[str, Any]] | None = None
    """Returns more results-entry fields from a batched landing outcome."""
    score: Callable[[Any, Any], dict[str, Any]] | None = None
    """Returns a controller's results entry, given its module and variables, from
    rollouts on ``held_out``. It replaces the default scoring (the landing outcome's
    summary plus ``extra_metrics``) for an experiment that judges success differently."""


def restore_selected_params(
    task: Any,
    controller: Any,
    train_config: Any,
    checkpoint_dir: pathlib.Path,
    example_states: Any,
) -> Any:
    """Return the parameters a finished training run selected, read from its final
    checkpoint (step ``train_config.steps``).

    These are the best-validation parameters when ``train_config.select_best`` is on (the
    experiments always pass validation states), otherwise the last ones. Nothing in the
    folder changes, and no older checkpoint replaces the final one, because its
    parameters would not be the ones the run reported. Raises :class:`RunFolderError`
    when the final checkpoint is missing, unreadable or damaged, or does not fit
    ``controller``.
    """
    from diffland.training import Trainer
    from diffland.training.checkpoint import CheckpointUnreadable

    if not checkpoint_dir.is_dir() or not any(checkpoint_dir.iterdir()):
        raise RunFolderError(
            f"no checkpoint in {checkpoint_dir}: the run did not finish training this "
            "controller, or its checkpoints were removed. Resume it (diffland train "
            "EXPERIMENT --resume --out RUN_DIR), or train it again."
        )
    trainer = Trainer(task, controller, train_config, example_states, checkpoint_dir=checkpoint_dir)
    final = train_config.steps
    try:
        saved = trainer.store.steps()
        if final not in saved:
            raise RunFolderError(
                f"{checkpoint_dir} has no checkpoint of the final step {final} (saved steps: "
                f"{saved}), so the controller this run reported cannot be reloaded. Resume "
                "the run (diffland train EXPERIMENT --resume --out RUN_DIR) if it stopped "
                "early, or train it again."
            )
        state = trainer.store.restore_step(final, trainer.init())
    except CheckpointUnreadable as error:
        raise RunFolderError(
            f"{error}, so the controller this run reported cannot be reloaded. An older "
            "checkpoint would give other results, so none is used. Train the run again."
        ) from None
    finally:
        trainer.store.close()
    return state.best_params if train_config.select_best else state.params


def run_entry_point(main: Callable[[list[str] | None], int]) -> NoReturn:
    """Run an experiment's ``main`` on the process arguments and exit with its status.

    Every ``if __name__ == "__main__":`` block of the experiments calls this. When the
    reader of stdout exits early (``python -m experiments.NAME | head``), the process
    exits with status 1 and no ``BrokenPipeError`` traceback, as ``diffland`` does.

    A SIGINT or SIGTERM recorded by :mod:`experiments.startup` while the modules
    were imported ends the process here with 130 or 143 and a message, before ``main``
    creates the run folder. After :func:`report_interrupt`, the process exits without
    interpreter finalization (see :func:`diffland.console.exit_process`).
    """
    from diffland.console import exit_process, run_quiet_on_closed_pipe
    from experiments import startup

    received = startup.restore_stop_signals()
    if received is not None:
        name = signal.Signals(received).name
        print(
            f"interrupted by {name} while starting, before the run folder was created, so "
            "nothing was written",
            file=sys.stderr,
        )
        sys.exit(128 + received)
    exit_process(run_quiet_on_closed_pipe(lambda: main(None)))


def reject_entry_point(message: str) -> NoReturn:
    """Exit with status 2 and ``message`` on stderr: the ``__main__`` block of an
    experiments module that is not an experiment."""
    from experiments import startup

    received = startup.restore_stop_signals()
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2 if received is None else 128 + received)


def configure_logging(level: str) -> None:
    # force=True: importing orbax already installs a root handler, which would make a plain
    # basicConfig call do nothing.
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    # Backend probing and checkpoint internals are noisy at INFO.
    for name in ("jax._src.xla_bridge", "absl", "orbax"):
        logging.getLogger(name).setLevel(logging.WARNING)


def prepare_run_folder(
    out: pathlib.Path | None,
    resume: bool,
    experiment: str,
    subfolders: Sequence[str] = TRAINING_SUBFOLDERS,
    resumable: bool = True,
) -> pathlib.Path:
    """Create (or, with ``resume``, reopen) the run folder and its ``subfolders``.

    An experiment passes the subfolders it writes to, so none is left empty. Raises
    :class:`RunFolderError` when ``out`` exists and is not empty without ``resume``, or
    when ``resume`` is given without an existing run folder. ``resumable`` False (an
    experiment without ``--resume``) drops the advice to pass ``--resume`` from the error.
    """
    if out is None:
        if resume:
            raise RunFolderError("--resume needs --out DIR naming the run folder to continue.")
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = pathlib.Path("runs") / f"{experiment}-{stamp}"
    out = out.absolute()
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file, not a folder; choose a folder path.")
    if resume and not out.exists():
        raise RunFolderError(
            f"cannot resume: {out} does not exist. Check the path, or start a new run "
            "without --resume."
        )
    if resume and not (out / "config.json").is_file():
        raise RunFolderError(
            f"cannot resume: {out} has no config.json, so it is not a run folder of this "
            "experiment. Check the path, or start a new run without --resume."
        )
    if not resume and out.exists() and any(out.iterdir()):
        if resumable:
            advice = "Pass --resume to continue it, or choose another --out."
        else:
            advice = (
                f"{experiment} cannot resume a run, so choose another --out (a new or "
                "empty folder)."
            )
        raise RunFolderError(f"run folder {out} already exists and is not empty. {advice}")
    for folder in (out, *(out / sub for sub in subfolders)):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunFolderError(
                f"cannot create the run folder {out}: {error}. Choose an --out path whose "
                "parent folders exist or can be created."
            ) from error
    return out


def save_config(run_folder: pathlib.Path, config: Any, resume: bool) -> dict[str, Any]:
    """Write ``config.json``; on resume, check the stored config matches this one.

    A resumed run may change the fields in :data:`RESUME_CHANGEABLE_FIELDS`
    (``num_devices``). The change is logged, and ``config.json`` is rewritten with the
    new value, so it records the setting that the run continues with.
    """
    values = dataclasses.asdict(config)
    path = run_folder / "config.json"
    if not resume:
        path.write_text(json.dumps(values, indent=2) + "\n")
        return values
    stored = json.loads(path.read_text())
    requested = json.loads(json.dumps(values))
    # A field added to the experiment after the run was written (such as remat) is
    # missing from the stored config.json, and counts as stored with its default value.
    for field in dataclasses.fields(config):
        if field.name not in stored and field.default is not dataclasses.MISSING:
            default = field.default
            if dataclasses.is_dataclass(default):
                default = dataclasses.asdict(default)
            stored[field.name] = json.loads(json.dumps(default))
    differing = [
        key for key in set(stored) | set(requested) if stored.get(key) != requested.get(key)
    ]
    fixed = [key for key in differing if key not in RESUME_CHANGEABLE_FIELDS]
    if fixed:
        # The command-line choices first: they are the usual cause.
        fixed.sort(key=lambda key: (key not in ("quick", "seeds"), key))
        details = ", ".join(
            f"{key}: stored {stored.get(key)!r}, requested {requested.get(key)!r}" for key in fixed
        )
        raise RunFolderError(
            f"the configuration in {path} differs from this run's ({details}). Resume "
            "with the options of the original run (for example the same --quick and "
            "--seeds). A folder written by another version of the experiment cannot be "
            "resumed, so start a new run folder for it."
        )
    if differing:
        for key in sorted(differing):
            logging.getLogger(__name__).info(
                "resuming %s with %s = %r, which was %r. Checkpoints restore on any "
                "device count, and config.json now records the new value",
                run_folder,
                key,
                requested.get(key),
                stored.get(key),
            )
        path.write_text(json.dumps(values, indent=2) + "\n")
    return values


def _clean(value: Any) -> Any:
    """Make a value JSON-safe: NaN and infinity become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def combine_seeds(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Average each metric over seeds (skipping None); keep the list as ``per_seed``.

    With one seed the metrics are that seed's, and ``per_seed`` is still written.
    """
    combined: dict[str, Any] = {}
    for key in CONTROLLER_METRICS:
        values = [entry.get(key) for entry in per_seed]
        present = [v for v in values if v is not None]
        if not present:
            combined[key] = None
        elif key == "n_eval":
            combined[key] = int(present[0])
        else:
            combined[key] = sum(present) / len(present)
    combined["per_seed"] = [dict(entry) for entry in per_seed]
    return combined


def controller_timings(
    run_folder: pathlib.Path, name: str, seed: int, result: Any
) -> tuple[float, float]:
    """Return the ``(train_seconds, compile_seconds)`` to record for controller ``name``
    of ``seed``, given its :class:`~diffland.training.TrainResult` of this session.

    These are ``result``'s, unless this session applied no update because a resumed run
    found the controller finished. Then they are the seconds that the run folder's
    ``results.json`` recorded for it, because this session only restored a checkpoint,
    which compiles nothing. Without such a record (the controller finished in a session
    that was interrupted before it wrote ``results.json``) they stay ``result``'s.
    """
    trained = result.resumed_from is None or int(result.state.step) > result.resumed_from
    if trained:
        return result.train_seconds, result.compile_seconds
    path = run_folder / "results.json"
    try:
        entry = json.loads(path.read_text())["controllers"][name]["per_seed"][seed]
        return float(entry["train_seconds"]), float(entry["compile_seconds"])
    except FileNotFoundError:
        return result.train_seconds, result.compile_seconds
    except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
        logging.getLogger(__name__).warning(
            "%s has no readable timings of %s (seed %d): %r, so the restore's own seconds "
            "are recorded",
            path,
            name,
            seed,
            error,
        )
        return result.train_seconds, result.compile_seconds


def interrupted_status(error: KeyboardInterrupt) -> int:
    """Return the exit status for a run stopped by ``error``: 128 plus the signal's
    number (130 for SIGINT, 143 for SIGTERM), as a shell reports a process that the
    signal ended."""
    return getattr(error, "exit_status", 128 + signal.SIGINT)


def write_results(
    run_folder: pathlib.Path,
    experiment: str,
    config: Mapping[str, Any],
    timings: Mapping[str, float],
    controllers: Mapping[str, Mapping[str, Any]] | None = None,
    **extra: Any,
) -> pathlib.Path:
    """Write ``results.json`` (schema version 1) and return its path.

    Besides the given entries it records ``source``, the revision of the code that ran
    (see :func:`source_revision`).
    """
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "experiment": experiment,
        "config": dict(config),
        "timings": dict(timings),
        "source": source_revision(),
    }
    if controllers is not None:
        results["controllers"] = {name: dict(entry) for name, entry in controllers.items()}
    results.update(extra)
    return write_json(run_folder / "results.json", _clean(results))


def source_revision(root: pathlib.Path | None = None) -> dict[str, Any]:
    """Return the git commit of the checkout at ``root`` (by default the one that contains
    the experiments package) and whether tracked files differ from it.

    Both entries are None where git is missing or ``root`` is not a git checkout, for
    example for an installed copy of the package.
    """
    root = pathlib.Path(__file__).resolve().parents[1] if root is None else root
    try:
        commit = _git(root, "rev-parse", "HEAD")
        changes = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError) as error:
        logging.getLogger(__name__).info("no git revision recorded for %s (%s)", root, error)
        return {"commit": None, "modified": None}
    return {"commit": commit, "modified": bool(changes)}


def _git(root: pathlib.Path, *arguments: str) -> str:
    completed = subprocess.run(
        ["git", "-C", str(root), *arguments],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return completed.stdout.strip()


def write_json(path: pathlib.Path, value: Any) -> pathlib.Path:
    """Write ``value`` as indented JSON through a temporary file, so that a crash
    leaves either the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(value, indent=2) + "\n")
    temporary.replace(path)
    return path


def format_table(controllers: Mapping[str, Mapping[str, Any]]) -> str:
    """Return the results table as aligned text, one row per controller."""
    columns = (
        ("controller", None, "{}"),
        ("success", "success_rate", "{:.2%}"),
        ("no td", "no_touchdown_rate", "{:.2%}"),
        ("v_td mean", "touchdown_speed_mean", "{:.2f}"),
        ("v_td max", "touchdown_speed_max", "{:.2f}"),
        ("prop (kg)", "propellant_mean", "{:.0f}"),
        ("prop/opt", "propellant_ratio_to_optimal", "{:.3f}"),
        ("train (s)", "train_seconds", "{:.1f}"),
        ("compile (s)", "compile_seconds", "{:.1f}"),
    )
    rows = [[title for title, _, _ in columns]]
    for name, entry in controllers.items():
        row = [name]
        for _, key, pattern in columns[1:]:
            value = entry.get(key)
            row.append("-" if value is None else pattern.format(value))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = [
        "  ".join(
            cell.rjust(w) if i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def experiment_parser(experiment: str, description: str) -> argparse.ArgumentParser:
    """Return the parser of an experiment with the common options, --set and --seeds."""
    parser = argparse.ArgumentParser(
        prog=f"python -m experiments.{experiment}", description=description
    )
    add_common_arguments(parser)
    add_override_argument(parser)
    parser.add_argument("--seeds", type=int, default=1, help="number of training seeds (default 1)")
    add_num_devices_argument(parser)
    return parser


def resume_command(
    experiment: str,
    args: argparse.Namespace,
    run_folder: pathlib.Path,
    options: Sequence[str] = (),
) -> str:
    """Return the command line that continues a run parsed by :func:`experiment_parser`
    (or a parser with the same options), in the form that started it (``args.launcher``).

    ``options`` are further arguments of the experiment's own parser, appended as given.
    """
    words = launcher_words(args.launcher, experiment)
    words += ["--resume", "--out", str(run_folder)]
    if args.quick:
        words.append("--quick")
    if args.seeds != 1:
        words += ["--seeds", str(args.seeds)]
    if args.num_devices is not None:
        words += ["--num-devices", str(args.num_devices)]
    if getattr(args, "log_level", "INFO") != "INFO":
        words += ["--log-level", args.log_level]
    words += options
    # One --set with every assignment, a form that both launchers accept.
    if args.set:
        words += ["--set", *args.set]
    return shlex.join(words)


def run_stoppable(
    run: Callable[[], dict[str, Any]],
    run_folder: pathlib.Path,
    resume: Callable[[], str],
) -> tuple[dict[str, Any] | None, int]:
    """Call ``run`` with the stop handlers installed and return ``(results, 0)``.

    A signal at any point of the run, drawing start states and compiling included,
    stops it. The run's interruption or a shortage of memory is then reported (see
    :func:`report_interrupt` and :func:`report_memory_error`, with ``resume()`` as the
    resume command) and ``(None, exit status)`` is returned.
    """
    from diffland.training.interrupts import StopSignals
    from diffland.training.memory import InsufficientMemoryError

    try:
        with StopSignals():
            return run(), 0
    except KeyboardInterrupt as interrupt:
        return None, report_interrupt(interrupt, run_folder, resume())
    except InsufficientMemoryError as error:
        return None, report_memory_error(error, run_folder, TRAINING_MEMORY_ADVICE)


def run_unresumable(
    run: Callable[[], dict[str, Any]],
    run_folder: pathlib.Path,
    folder_contents: str,
    memory_advice: str = "",
) -> tuple[dict[str, Any] | None, int]:
    """Call ``run`` with the stop handlers installed and return ``(results, 0)``, for an
    experiment that cannot resume.

    A signal stops the run with the status 130 or 143 and a message that names what the
    run folder keeps (``folder_contents``). A shortage of memory is reported as by
    :func:`report_memory_error` with ``memory_advice``. Either returns ``(None, status)``.
    """
    from diffland.training.interrupts import StopSignals
    from diffland.training.memory import InsufficientMemoryError

    try:
        with StopSignals():
            return run(), 0
    except KeyboardInterrupt as interrupt:
        name = signal.Signals(getattr(interrupt, "signal_number", signal.SIGINT)).name
        print(
            f"\ninterrupted by {name}; this experiment cannot resume, so run it again with "
            f"a new --out folder. {run_folder} keeps {folder_contents}.",
            file=sys.stderr,
        )
        return None, interrupted_status(interrupt)
    except InsufficientMemoryError as error:
        return None, report_memory_error(error, run_folder, memory_advice)


def report_interrupt(interrupt: KeyboardInterrupt, run_folder: pathlib.Path, command: str) -> int:
    """Print how to continue the run in ``run_folder`` after ``interrupt`` to stderr and
    return the exit status (see :func:`interrupted_status`).

    ``command`` is the run's :func:`resume_command`. Before the first checkpoint is saved
    (the run was drawing start states or compiling), the message states that the run
    folder already contains config.json, so the same command starts the run again in it.
    """
    # TrainingInterrupted carries its signal number, and a plain KeyboardInterrupt comes
    # from Ctrl-C.
    name = signal.Signals(getattr(interrupt, "signal_number", signal.SIGINT)).name
    checkpoints = run_folder / "checkpoints"
    saved = checkpoints.is_dir() and any(path.is_file() for path in checkpoints.rglob("*"))
    if saved:
        message = f"interrupted by {name}; continue with: {command}"
    else:
        message = (
            f"interrupted by {name} before the first checkpoint was saved. {run_folder} "
            f"keeps its config.json, so this command starts the run again in it: {command}"
        )
    print(f"\n{message}", file=sys.stderr)
    return interrupted_status(interrupt)


TRAINING_MEMORY_ADVICE = (
    "With --set, remat=step or remat=nested sets SimConfig.remat, NAME.batch_size=N the "
    "batch size of controller NAME, horizon_seconds the horizon, and validation_states "
    "and held_out_states the numbers of start states scored."
)
"""Advice appended to the memory errors of the trainer and of the scoring: the ``--set``
fields of the experiments that train controllers for the settings those errors name."""


def report_memory_error(error: MemoryError, run_folder: pathlib.Path, advice: str = "") -> int:
    """Print ``error`` (a computation that does not fit in memory) to stderr without a
    traceback, with ``advice`` (how to change the settings it names) and what to do
    about the run folder, and return the exit status 1."""
    advice = f"{advice} " if advice else ""
    print(
        f"\nerror: {error} The run stopped before that computation. {advice}To run with "
        f"other settings, pass a new --out folder, because {run_folder} keeps the settings "
        "of this run.",
        file=sys.stderr,
    )
    return 1


def with_num_devices(config: Any, num_devices: int | None) -> Any:
    """Return ``config`` with the ``--num-devices`` choice, or unchanged when it is None.

    ``--set num_devices=N`` is applied after this, so it wins over ``--num-devices``.
    """
    if num_devices is None:
        return config
    return dataclasses.replace(config, num_devices=num_devices)


def prepare_run(
    parser: argparse.ArgumentParser, args: argparse.Namespace, config_class, experiment
):
    """Build the config from the parsed options, create the run folder and save the config.

    Returns ``(config, run_folder)``. Invalid options and run folders end the program
    through ``parser.error`` before anything is compiled.
    """
    try:
        config = config_class.create(args.quick, args.seeds)
        config = with_num_devices(config, args.num_devices)
        config = apply_overrides(config, args.set)
        config.validate()
        run_folder = prepare_run_folder(args.out, args.resume, experiment)
        save_config(run_folder, config, args.resume)
    except (ValueError, RunFolderError) as error:
        parser.error(str(error))
    return config, run_folder
