"""The ``diffland`` command: train, evaluate, render, compare and list experiments.

An experiment is any module of the ``experiments`` package with a top-level
``main(argv)``. The command finds them by reading the package's files, so a new module
appears without any change here. A module that sets ``BENCHMARK = True`` at top level is
a benchmark: ``list`` shows it apart, ``bench`` runs it and ``train`` rejects it.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import inspect
import json
import logging
import math
import pathlib
import re
import sys
from typing import Annotated, Any, Literal, NoReturn

import tyro

from diffland.console import exit_process, run_quiet_on_closed_pipe

logger = logging.getLogger(__name__)

EXPERIMENTS_PACKAGE = "experiments"
REPRODUCTION_TOLERANCE = 1e-5
"""Largest relative (and absolute, near zero) difference that ``eval`` accepts between a
reproduced metric and results.json."""


class CliError(Exception):
    """An invalid request; the message states what failed and what to do."""


# -- configs of the subcommands ---------------------------------------------------------


@dataclasses.dataclass
class Train:
    """Train the controllers of an experiment and write a run folder."""

    experiment: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="EXPERIMENT")]
    """Experiment module name, for example vertical_landing (see diffland list)."""
    quick: bool = False
    """Train less (a few minutes on 2 CPU cores); python -m experiments.EXPERIMENT --help
    shows whether the held-out set shrinks too."""
    out: pathlib.Path | None = None
    """Run folder to write; without it, a new time-stamped folder under runs/."""
    resume: bool = False
    """Continue the run in --out from its last checkpoints."""
    seeds: int | None = None
    """Number of training seeds; without it, the experiment's default (1 for the landing
    experiments)."""
    set: Annotated[
        tuple[tuple[str, ...], ...],
        tyro.conf.UseAppendAction,
        tyro.conf.arg(metavar="KEY=VALUE ..."),
    ] = ()
    """Config changes as KEY=VALUE, for example mlp.steps=50; keys are the fields of
    config.json, nested ones joined by dots. The option may be given more than once."""
    num_devices: int | None = None
    """Devices that each training batch is split over, recorded as num_devices in
    config.json. Without it, a batch uses every local device when its size divides by
    their count, else 1. A resumed run may change it."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Logging level."""


@dataclasses.dataclass
class Eval:
    """Reload a run's checkpoints and reproduce its held-out numbers from results.json."""

    run_dir: Annotated[pathlib.Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
    """Run folder written by diffland train."""


@dataclasses.dataclass
class Render:
    """Write plots, a landing animation and a 3-D HTML replay into a run folder."""

    run_dir: Annotated[pathlib.Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
    """Run folder written by diffland train."""
    landers: int = 8
    """Number of held-out landers drawn (the first ones of the held-out set)."""
    seed: int = 0
    """Training seed whose controllers are drawn."""
    frames: int = 60
    """Frames of the animation."""
    video: Literal["gif", "mp4"] = "gif"
    """Animation format: gif (written with Pillow) or mp4 (needs ffmpeg)."""
    out: pathlib.Path | None = None
    """Folder for the files; without it, RUN_DIR/render."""


@dataclasses.dataclass
class Bench:
    """Run the throughput benchmark (the experiments.throughput module)."""

    quick: bool = False
    """Measure fewer batch sizes and horizons (a few minutes on 2 CPU cores)."""
    out: pathlib.Path | None = None
    """Run folder to write; without it, a new time-stamped folder under runs/."""
    figures: str | None = None
    """Comma-separated figures to run (see python -m experiments.throughput --help);
    without it, all but time_to_threshold."""
    no_anchors: bool = False
    """Skip the gymnax and brax comparison environments."""


@dataclasses.dataclass
class Compare:
    """Print the results of several runs side by side."""

    run_dirs: Annotated[
        tuple[pathlib.Path, ...], tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")
    ]
    """Two or more run folders."""


@dataclasses.dataclass
class List:
    """List the vehicles, brax environments, controllers and experiments."""


Command = (
    Annotated[Train, tyro.conf.subcommand("train")]
    | Annotated[Eval, tyro.conf.subcommand("eval")]
    | Annotated[Render, tyro.conf.subcommand("render")]
    | Annotated[Bench, tyro.conf.subcommand("bench")]
    | Annotated[Compare, tyro.conf.subcommand("compare")]
    | Annotated[List, tyro.conf.subcommand("list")]
)


# -- experiments ------------------------------------------------------------------------


def _experiments_folder() -> pathlib.Path:
    spec = importlib.util.find_spec(EXPERIMENTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CliError(
            "the experiments package is not installed; install diffland from its source "
            "folder with pip install -e ."
        )
    return pathlib.Path(next(iter(spec.submodule_search_locations)))


def _has_main_entry(source: str) -> bool:
    """Return whether a module's source defines ``main`` callable with argv alone."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            arguments = node.args
            positional = arguments.posonlyargs + arguments.args
            required = len(positional) - len(arguments.defaults)
            required_keywords = sum(d is None for d in arguments.kw_defaults)
            return required <= 1 and required_keywords == 0
    return False


def _is_benchmark(source: str) -> bool:
    """Return whether a module's source sets ``BENCHMARK = True`` at top level."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            named = any(isinstance(t, ast.Name) and t.id == "BENCHMARK" for t in targets)
            if named and isinstance(node.value, ast.Constant) and node.value.value is True:
                return True
    return False


def _discover_modules(benchmarks: bool) -> dict[str, str]:
    """Return the name and first docstring paragraph of each runnable module of the
    experiments package: the benchmarks when ``benchmarks``, else the experiments."""
    found = {}
    for path in sorted(_experiments_folder().glob("*.py")):
        if path.stem.startswith("_"):
            continue
        source = path.read_text(encoding="utf-8")
        if _has_main_entry(source) and _is_benchmark(source) == benchmarks:
            docstring = ast.get_docstring(ast.parse(source)) or ""
            found[path.stem] = plain_summary(docstring)
    return found


def discover_experiments() -> dict[str, str]:
    """Return each experiment module's name and the first paragraph of its docstring.

    Benchmarks are left out (see :func:`discover_benchmarks`).
    """
    return _discover_modules(benchmarks=False)


def discover_benchmarks() -> dict[str, str]:
    """Return each benchmark module's name and the first paragraph of its docstring."""
    return _discover_modules(benchmarks=True)


def _import_experiment(name: str):
    known = discover_experiments()
    if name in discover_benchmarks():
        raise CliError(
            f"{name} is a benchmark, not a training experiment: run it with diffland bench "
            "(see diffland bench --help)."
        )
    if name not in known:
        raise CliError(
            f"unknown experiment {name!r}. Known experiments: {', '.join(known)}. "
            "Pass one of these names (diffland list describes them)."
        )
    return importlib.import_module(f"{EXPERIMENTS_PACKAGE}.{name}")


# -- run folders ------------------------------------------------------------------------


def read_results(run_dir: pathlib.Path) -> dict[str, Any]:
    """Return a run folder's results.json, or raise :class:`CliError` saying what is wrong."""
    if not run_dir.is_dir():
        raise CliError(
            f"run folder {run_dir} does not exist. Pass a folder written by diffland train."
        )
    path = run_dir / "results.json"
    if not path.is_file():
        raise CliError(
            f"{path} does not exist: the run has not finished. Finish it with "
            f"diffland train EXPERIMENT --resume --out {run_dir}."
        )
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CliError(f"{path} is not valid JSON ({error}); train the run again.") from None
    if results.get("schema_version") != 1 or "experiment" not in results:
        raise CliError(
            f"{path} has schema version {results.get('schema_version')!r}, but this diffland "
            "reads version 1. Use the diffland version that wrote the run."
        )
    return results


def _load_run(run_dir: pathlib.Path, results: dict[str, Any]):
    from experiments import common

    if results["experiment"] in discover_benchmarks():
        raise CliError(
            f"{run_dir} is a run of the {results['experiment']} benchmark, which has no "
            "trained controllers, so eval and render do not support it. Its figures are in "
            f"{run_dir / 'results.json'}; diffland compare compares two benchmark runs."
        )
    module = _import_experiment(results["experiment"])
    if not hasattr(module, "load_run"):
        raise CliError(
            f"experiment {results['experiment']} cannot reload its runs (it has no load_run "
            "function), so eval and render do not support it."
        )
    try:
        return module.load_run(run_dir)
    except common.RunFolderError as error:
        raise CliError(str(error)) from None


# -- subcommands ------------------------------------------------------------------------


def run_train(command: Train) -> int:
    """Build the experiment's own command line from ``command`` and run its ``main``."""
    module = _import_experiment(command.experiment)
    # --launcher diffland makes the experiment print its resume command as diffland train.
    argv = ["--log-level", command.log_level, "--launcher", "diffland"]
    if command.quick:
        argv.append("--quick")
    if command.resume:
        argv.append("--resume")
    if command.out is not None:
        argv += ["--out", str(command.out)]
    if command.seeds is not None:
        argv += ["--seeds", str(command.seeds)]
    if command.num_devices is not None:
        argv += ["--num-devices", str(command.num_devices)]
    assignments = [assignment for group in command.set for assignment in group]
    if assignments:
        argv += ["--set", *assignments]
    return module.main(argv)


def reproduce_metrics(run_dir: pathlib.Path) -> list[dict[str, dict[str, Any]]]:
    """Rescore a run's controllers on its held-out set; return per seed the entries by name.

    Nested entries of results.json (``limit_exceeded_rate``) are flattened to dotted keys.
    """
    from diffland.training.evaluation import rollout_outcomes, summarize_outcomes

    loaded = _load_run(run_dir, read_results(run_dir))
    per_seed = []
    for controllers in loaded.controllers:
        entries = {}
        for name, (controller, variables) in controllers.items():
            if loaded.score is not None:
                entries[name] = _flatten(loaded.score(controller, variables))
                continue
            _, outcome = rollout_outcomes(loaded.task, controller, variables, loaded.held_out)
            entry = summarize_outcomes(outcome, loaded.optimal_propellant)
            if loaded.extra_metrics is not None:
                entry.update(_flatten(loaded.extra_metrics(outcome)))
            entries[name] = entry
        for name, fixed in loaded.fixed_entries.items():
            entries[name] = {key: fixed[key] for key in _RESCORED_KEYS if key in fixed}
        per_seed.append(entries)
    return per_seed


_RESCORED_KEYS = (
    "n_eval",
    "success_rate",
    "no_touchdown_rate",
    "touchdown_speed_mean",
    "touchdown_speed_max",
    "propellant_mean",
    "propellant_ratio_to_optimal",
)
"""Keys of an entry that does not come from a controller (the fuel-optimal burn) that
``eval`` compares; its timings are not reproducible."""


def check_reproduction(
    results: dict[str, Any], reproduced: list[dict[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Return one row per (seed, controller, metric) with ``reported`` (results.json),
    ``reproduced`` and ``matches`` (equal within :data:`REPRODUCTION_TOLERANCE`)."""
    rows = []
    for seed, entries in enumerate(reproduced):
        for name, entry in entries.items():
            reported = _flatten(_reported_entry(results, name, seed))
            for metric, value in entry.items():
                rows.append(
                    {
                        "seed": seed,
                        "controller": name,
                        "metric": metric,
                        "reported": reported.get(metric),
                        "reproduced": value,
                        "matches": _close(reported.get(metric), value),
                    }
                )
    return rows


def evaluate_run(run_dir: pathlib.Path) -> list[dict[str, Any]]:
    """Rescore a run and compare with its results.json (see :func:`check_reproduction`)."""
    return check_reproduction(read_results(run_dir), reproduce_metrics(run_dir))


def _reported_entry(results: dict[str, Any], name: str, seed: int) -> dict[str, Any]:
    """Return the results.json entry of controller ``name`` for ``seed``.

    An entry without ``per_seed`` is the same for every seed (convex_guidance writes its
    fuel-optimal entry once), so it is returned whole.
    """
    try:
        entry = results["controllers"][name]
        if "per_seed" not in entry:
            return entry
        return entry["per_seed"][seed]
    except (KeyError, IndexError):
        raise CliError(
            f"results.json has no entry for controller {name} of seed {seed}, so the run does "
            "not match its config.json. Train the run again."
        ) from None


def _close(reported: Any, reproduced: Any) -> bool:
    if reported is None or reproduced is None:
        return reported is None and reproduced is None
    return math.isclose(
        float(reported),
        float(reproduced),
        rel_tol=REPRODUCTION_TOLERANCE,
        abs_tol=REPRODUCTION_TOLERANCE,
    )


def run_eval(command: Eval) -> int:
    rows = evaluate_run(command.run_dir)
    table = [["seed", "controller", "metric", "reported", "reproduced", ""]]
    for row in rows:
        table.append(
            [
                str(row["seed"]),
                row["controller"],
                row["metric"],
                _format_number(row["reported"]),
                _format_number(row["reproduced"]),
                "ok" if row["matches"] else "DIFFERS",
            ]
        )
    print(_format_rows(table))
    differing = [row for row in rows if not row["matches"]]
    if differing:
        print(
            f"\n{len(differing)} of {len(rows)} metrics differ from results.json by more than "
            f"{REPRODUCTION_TOLERANCE:g} (relative).",
            file=sys.stderr,
        )
        return 1
    print(f"\nall {len(rows)} metrics reproduce results.json.")
    return 0


def run_render(command: Render) -> list[pathlib.Path]:
    """Write the figures, the animation and the replay page; return their paths."""
    import jax

    from diffland.training.evaluation import rollout_outcomes
    from diffland.viz import plots
    from diffland.viz.animation import animate_landings
    from diffland.viz.flight import flight_record
    from diffland.viz.viewer import write_viewer

    if command.landers < 1:
        raise CliError(f"--landers {command.landers} is invalid: pass an integer >= 1.")
    if command.frames < 2:
        raise CliError(f"--frames {command.frames} is invalid: pass an integer >= 2.")
    if command.video not in ("gif", "mp4"):
        raise CliError(f"--video {command.video} is invalid: pass gif or mp4.")
    results = read_results(command.run_dir)
    seeds = results.get("config", {}).get("seeds", 1)
    if not 0 <= command.seed < seeds:
        raise CliError(f"--seed {command.seed} is invalid: the run trained seeds 0 to {seeds - 1}.")
    loaded = _load_run(command.run_dir, results)
    count = min(command.landers, jax.tree_util.tree_leaves(loaded.held_out)[0].shape[0])
    states = jax.tree_util.tree_map(lambda x: x[:count], loaded.held_out)
    task = loaded.task
    records = {}
    for name, (controller, variables) in loaded.controllers[command.seed].items():
        trajectory, _ = rollout_outcomes(task, controller, variables, states)
        records[name] = flight_record(task.vehicle, task.params, trajectory, task.sim.control_dt)

    folder = command.out or command.run_dir / "render"
    folder.mkdir(parents=True, exist_ok=True)
    written = [
        plots.plot_phase_portrait(records, folder / "phase_portrait.png", count),
        plots.plot_controls(records, folder / "controls.png", count),
    ]
    kind = next(iter(records.values())).vehicle
    if kind != "vertical":
        written.append(plots.plot_ground_track(records, folder / "ground_track.png", count))
        written.append(plots.plot_attitude(records, folder / "attitude.png", count))
    metrics = command.run_dir / "metrics.jsonl"
    if metrics.is_file():
        histories = plots.training_histories(metrics, command.seed)
        written.append(plots.plot_training_curves(histories, folder / "training.png"))
    animated = "mlp" if "mlp" in records else next(iter(records))
    written.append(
        animate_landings(
            records[animated],
            folder / f"landing_{animated}.{command.video}",
            title=f"{results['experiment']}: {animated}",
            frames=command.frames,
        )
    )
    written.append(
        write_viewer(records, folder / "replay.html", title=f"{results['experiment']} replay")
    )
    for path in written:
        print(path)
    return written


def run_bench(command: Bench) -> int:
    name = f"{EXPERIMENTS_PACKAGE}.throughput"
    if importlib.util.find_spec(name) is None:
        raise CliError(
            "the throughput benchmark (experiments.throughput) is not installed; install "
            "diffland from its source folder with pip install -e ."
        )
    module = importlib.import_module(name)
    argv = []
    if command.quick:
        argv.append("--quick")
    if command.out is not None:
        argv += ["--out", str(command.out)]
    if command.figures is not None:
        argv += ["--figures", command.figures]
    if command.no_anchors:
        argv.append("--no-anchors")
    return module.main(argv)


COMPARED_METRICS = (
    ("success", "success_rate", "{:.2%}"),
    ("no touchdown", "no_touchdown_rate", "{:.2%}"),
    ("v_td mean (m/s)", "touchdown_speed_mean", "{:.2f}"),
    ("v_td max (m/s)", "touchdown_speed_max", "{:.2f}"),
    ("propellant (kg)", "propellant_mean", "{:.0f}"),
    ("prop/optimal", "propellant_ratio_to_optimal", "{:.3f}"),
    ("train (s)", "train_seconds", "{:.1f}"),
)


def compare_table(run_dirs: tuple[pathlib.Path, ...]) -> str:
    """Return the results of ``run_dirs`` as one text table, a column per run.

    Training runs are compared by their controllers' held-out metrics, and benchmark runs
    by steps per second (:func:`_compare_benchmarks`). Raises :class:`CliError` for a mix
    of the two, or for runs without either.
    """
    if len(run_dirs) < 2:
        raise CliError("compare needs at least two run folders: diffland compare RUN_DIR RUN_DIR")
    runs = [read_results(run_dir) for run_dir in run_dirs]
    header = ["controller", "metric"] + [
        f"{r['experiment']} ({d.name})" for r, d in zip(runs, run_dirs, strict=True)
    ]
    benchmarks = discover_benchmarks()
    kinds = {
        d: "benchmark" if r["experiment"] in benchmarks else "training"
        for r, d in zip(runs, run_dirs, strict=True)
    }
    if len(set(kinds.values())) > 1:
        listed = ", ".join(f"{d} ({kind})" for d, kind in kinds.items())
        raise CliError(
            f"compare cannot mix benchmark and training runs: {listed}. Pass only training "
            "runs (compared by held-out metrics) or only benchmark runs (compared by steps "
            "per second)."
        )
    if "benchmark" in kinds.values():
        header[:2] = ["case", "batch"]
        return _with_config_differences(_compare_benchmarks(header, runs, run_dirs), runs)
    unsupported = [d for r, d in zip(runs, run_dirs, strict=True) if not r.get("controllers")]
    if unsupported:
        raise CliError(
            f"{', '.join(map(str, unsupported))} has no controllers in results.json, so "
            "compare has no metrics to put side by side. compare supports the training "
            "experiments and the throughput benchmark; read the results.json of other runs."
        )
    names = []
    for results in runs:
        for name in results.get("controllers", {}):
            if name not in names:
                names.append(name)
    table = [header]
    for name in names:
        for title, key, pattern in COMPARED_METRICS:
            row = [name, title]
            for results in runs:
                value = results.get("controllers", {}).get(name, {}).get(key)
                row.append("-" if value is None else pattern.format(value))
            table.append(row)
    return _with_config_differences(_format_rows(table), runs)


def _with_config_differences(text: str, runs: list[dict[str, Any]]) -> str:
    differences = _config_differences(runs)
    if differences:
        text += "\n\nconfig differences:\n" + "\n".join(differences)
    return text


def _benchmark_rates(results: dict[str, Any]) -> dict[tuple[str, int], str]:
    """Return the formatted steps per second of a benchmark run per (case, batch).

    A case is ``vehicle configuration controller`` or an anchor's name, with ``(vmap)``
    for the vmap path. Where a case and batch ran on several device counts, the run on
    the most devices keeps the plain name and the others are named by their count, so
    runs on machines with different device counts still line up.
    """
    rows = results.get("throughput", []) + results.get("anchors", {}).get("rows", [])
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        name = row.get("anchor") or (f"{row['vehicle']} {row['configuration']} {row['controller']}")
        if row.get("path") == "vmap":
            name += " (vmap)"
        groups.setdefault((name, row["batch"]), []).append(row)
    rates = {}
    for (name, batch), members in groups.items():
        members.sort(key=lambda row: -row.get("devices", 1))
        for index, row in enumerate(members):
            devices = row.get("devices", 1)
            plural = "" if devices == 1 else "s"
            label = name if index == 0 else f"{name} ({devices} device{plural})"
            rate = row.get("steps_per_second")
            rates[label, batch] = row.get("error", "-") if rate is None else f"{rate:.3g}"
    return rates


def _compare_benchmarks(
    header: list[str], runs: list[dict[str, Any]], run_dirs: tuple[pathlib.Path, ...]
) -> str:
    """Return the steps per second of benchmark runs as one table, a column per run."""
    per_run = [_benchmark_rates(results) for results in runs]
    keys = []
    for rates in per_run:
        keys.extend(key for key in rates if key not in keys)
    if not keys:
        raise CliError(
            f"none of {', '.join(map(str, run_dirs))} has the throughput or anchors figure, "
            "which compare puts side by side. Run diffland bench --figures throughput,anchors, "
            "or read the other figures in each run's results.json."
        )
    table = [header]
    for name, batch in keys:
        table.append([name, str(batch), *(rates.get((name, batch), "-") for rates in per_run)])
    return (
        "control steps per second (control steps x batch / s)\n"
        + _format_rows(table)
        + "\n\nThe other figures (gradient, memory, compile, hardware_limit, "
        "time_to_threshold) are in each run's results.json."
    )


def _config_differences(runs: list[dict[str, Any]]) -> list[str]:
    configs = [_flatten(results.get("config", {})) for results in runs]
    keys = sorted(set().union(*configs))
    lines = []
    for key in keys:
        values = [config.get(key, "-") for config in configs]
        if any(value != values[0] for value in values):
            lines.append(f"  {key}: " + " | ".join(str(value) for value in values))
    return lines


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


_SPHINX_ROLE = re.compile(r":[a-z]+:`~?([\w.]+)`")


def plain_summary(docstring: str) -> str:
    """Return the first paragraph of ``docstring`` on one line, with Sphinx roles such as
    ``:func:`~diffland.x.f``` reduced to the object's last name and double backticks
    removed, for terminal output."""
    first = " ".join(docstring.split("\n\n")[0].split())
    first = _SPHINX_ROLE.sub(lambda match: match.group(1).rsplit(".", 1)[-1], first)
    return first.replace("``", "")


def list_components() -> dict[str, dict[str, str]]:
    """Return the vehicles, environments, controllers and experiments with one line each."""
    import flax.linen as nn

    import diffland.controllers as controllers
    import diffland.dynamics as dynamics
    from diffland.envs import ENVIRONMENTS

    def first_line(item) -> str:
        return plain_summary(inspect.getdoc(item) or "")

    vehicles = {
        name: first_line(item)
        for name, item in vars(dynamics).items()
        if inspect.isclass(item)
        and issubclass(item, dynamics.Vehicle)
        and item is not dynamics.Vehicle
    }
    modules = {
        name: first_line(item)
        for name, item in vars(controllers).items()
        if inspect.isclass(item) and issubclass(item, nn.Module) and name in controllers.__all__
    }
    return {
        "vehicles": vehicles,
        "environments": {name: first_line(item) for name, item in ENVIRONMENTS.items()},
        "controllers": modules,
        "experiments": discover_experiments(),
        "benchmarks (run with diffland bench)": discover_benchmarks(),
    }


def run_list(command: List) -> int:
    del command
    for section, items in list_components().items():
        print(f"{section}:")
        width = max((len(name) for name in items), default=0)
        for name, text in items.items():
            print(f"  {name.ljust(width)}  {text}")
        print()
    return 0


# -- formatting -------------------------------------------------------------------------


def _format_number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{float(value):.6g}"


def _format_rows(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


# -- entry point ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process arguments) and run the subcommand."""
    return run_quiet_on_closed_pipe(lambda: _parse_and_run(argv))


def _parse_and_run(argv: list[str] | None) -> int:
    command = tyro.cli(
        Command,
        prog="diffland",
        args=argv,
        description="Train, evaluate and look at differentiable rocket landing runs.",
        config=(tyro.conf.FlagCreatePairsOff,),
    )
    if not isinstance(command, Train):
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run_command(command)
    except CliError as error:
        print(f"diffland: error: {error}", file=sys.stderr)
        return 2


def _run_command(command: Any) -> int:
    if isinstance(command, Train):
        return run_train(command)
    if isinstance(command, Eval):
        return run_eval(command)
    if isinstance(command, Render):
        run_render(command)
        return 0
    if isinstance(command, Bench):
        return run_bench(command)
    if isinstance(command, Compare):
        print(compare_table(command.run_dirs))
        return 0
    return run_list(command)


def entry_point() -> NoReturn:
    """Run :func:`main` on the process arguments and exit with its status, the
    ``diffland`` command's entry point. After an interrupted training run the process
    exits without interpreter finalization (see
    :func:`diffland.console.exit_process`)."""
    exit_process(main())


if __name__ == "__main__":
    entry_point()
