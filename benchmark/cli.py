"""The ``clbench`` command: run, tune, list, report.

Bad input (a malformed config, an unknown name, a bad hyperparameter, a missing file) prints
one line on stderr and exits with status 2, with no traceback unless ``--debug`` is given.
A sweep in which any run failed exits with status 1. A file that cannot be written (disk
full, no permission) stops the command with one line naming the file, and status 1; every run
finished before it is kept, and the same command finishes the rest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.usage import Parser as _Parser
from benchmark.usage import UsageError
EXIT_OK, EXIT_RUNS_FAILED, EXIT_BAD_INPUT = 0, 1, 2
SUMMARY_UNITS = ("(mean ± sd over seeds; ACC, BWT and forgetting in %; Train s: training seconds per run; "
                 "Eval %: share of a run's time spent evaluating)")


def _parser() -> argparse.ArgumentParser:
    from benchmark.trackers import TOOLS as TRACKERS  # stdlib only: the list of tracker names, once

    p = _Parser(prog="clbench", description="Meta-learning continual-learning benchmark suite")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="run every (scenario x strategy x seed) of a config",
                       description="Run every (scenario x strategy x seed) of a config that is not done yet in the "
                                   "output folder, then print a summary table.",
                       epilog="exit status: 0 every run done; 1 a run failed (its run.json holds the error) or a file "
                              "could not be written; 2 bad input (one line on stderr, nothing run); 130 interrupted "
                              "(finished runs are kept: run the same command again to go on)")
    r.add_argument("config", help="experiment YAML file")
    r.add_argument("--out", help="output folder (default results/<config name>)")
    r.add_argument("--jobs", type=int, default=1,
                   help="local worker processes (default 1); each run executes in a worker, so a run that dies "
                        "(killed, out of memory, os._exit) is recorded failed and the sweep goes on")
    r.add_argument("--in-process", action="store_true",
                   help="run every run inside this process instead of a worker (for debugging: breakpoints, "
                        "strategies registered in this process); a run that kills its process ends the sweep")
    r.add_argument("--executor", choices=("local", "ray"), default="local")
    r.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. train.batch_size=1 or strategies.er.mem_size=500")
    r.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="FILE.py",
                   help="a Python file that registers strategies and/or streams")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--checkpoint-every-task", action="store_true",
                   help="save each run's state after every task in its folder, so a killed run resumes there")
    r.add_argument("--log", dest="trackers", action="append", default=[], choices=TRACKERS,
                   help="log each run done now to an experiment tracker (repeatable; each an optional extra: "
                        "pip install 'clbench[TRACKER]'): config, accuracy after every task, final metrics, "
                        "continual-evaluation curves. tensorboard: OUT/<run_id>/tensorboard/; mlflow: "
                        "sqlite:///OUT/mlflow.db or --log-uri; wandb: offline, OUT/wandb/")
    r.add_argument("--log-uri", metavar="URI", help="MLflow tracking URI (default sqlite:///OUT/mlflow.db)")
    r.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    t = sub.add_parser("tune", help="choose hyperparameters on the first tasks of a stream, never on test sets",
                       description="Choose each strategy's hyperparameters as Chaudhry et al. (2019) propose: trials "
                                   "train on the first tune.first_tasks tasks and are scored on a validation split "
                                   "held out of their training examples, the same budget for every strategy; the "
                                   "Optuna study lives in OUT/study.sqlite (a killed tune resumes), and OUT/best.yaml "
                                   "is the config with the chosen hyperparameters, for `clbench run`.",
                       epilog="exit status: 0 every strategy has a best trial; 1 a strategy's every trial failed, or a "
                              "file could not be written; 2 bad input (one line on stderr, nothing written); 130 "
                              "interrupted (finished trials are kept: run the same command again to go on)")
    t.add_argument("config", help="experiment YAML file with a tune: section (defaults without one)")
    t.add_argument("--out", help="output folder (default results/tune-<config name>)")
    t.add_argument("--trials", type=int, help="trials per strategy entry (default tune.trials)")
    t.add_argument("--jobs", type=int, default=1, help="local worker processes (default 1; 1 makes the study "
                                                       "deterministic)")
    t.add_argument("--in-process", action="store_true", help="run every trial inside this process (debugging)")
    t.add_argument("--executor", choices=("local", "ray"), default="local")
    t.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. tune.trials=5 or strategies.mer.mem_size=500")
    t.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="FILE.py",
                   help="a Python file that registers strategies and/or streams")
    t.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    lst = sub.add_parser("list", help="registered strategies and scenarios with their parameters")
    lst.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="FILE.py",
                     help="a Python file that registers strategies and/or streams")
    lst.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    rep = sub.add_parser("report", help="tables, plots and a forgetting report (md, html, csv, tex) of a results folder",
                         description="Tables, plots and a forgetting report of a results folder: DIR/report.md, "
                                     "DIR/report.html, DIR/summary.csv, DIR/tables/, DIR/plots/. Runs are grouped by "
                                     "configuration: one section per scenario setting, one row per strategy "
                                     "configuration, never an average over different configurations.")
    rep.add_argument("dir", help="results folder of a sweep")
    rep.add_argument("--config", metavar="NAME",
                     help="report only the runs of one config kept in DIR/configs/ (its name, or its file's stem "
                          "such as NAME--1a2b3c4d for one version of a config rerun with --set), into "
                          "DIR/reports/NAME/ (report.md, report.html, summary.csv, tables/, plots/), so that the "
                          "folder's full report is left as it is")
    rep.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="FILE.py",
                     help="a Python file that registers strategies and/or streams (needed with --config when the config uses them)")
    rep.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    cost = sub.add_parser("eval-cost", help="what continual evaluation (train.eval_every) cost the runs of a results folder",
                          description="Mean seconds per run of training, task-end evaluation and continual evaluation, "
                                      "per configuration, and continual evaluation's share of the sweep's time, from "
                                      "the run records of DIR.")
    cost.add_argument("dir", help="results folder of a sweep run with train.eval_every")
    cost.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    spd = sub.add_parser("speed", help="time our meta strategies against Avalanche's (see `clbench speed -h`)",
                         add_help=False)
    spd.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def _eval_cost(args) -> int:
    from benchmark.eval_cost import eval_costs, render
    from benchmark.store import RunStore

    store = RunStore(args.dir)
    if not args.dir.strip() or "\0" in args.dir or not store.root.is_dir():
        raise UsageError(f"eval-cost {args.dir!r}: not a results folder; give the --out folder of a sweep")
    costs = eval_costs(store.scan()[0])
    if not costs:
        print(f"clbench: no done run in {args.dir} recorded continual evaluation (set train.eval_every)")
        return 0
    print(render(costs))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    try:
        if argv[:1] == ["speed"]:  # its own options, parsed by benchmark.speed
            from benchmark.speed import main as speed_main

            return speed_main(argv[1:])
        args = _parser().parse_args(argv)
        return {"run": _run, "tune": _tune, "list": _list, "report": _report, "eval-cost": _eval_cost}[args.command](
            args)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except BrokenPipeError:  # `clbench list | head`: the reader is gone, nothing is wrong here
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("clbench: interrupted; finished runs are kept, rerun the same command to go on", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        from benchmark.store import StoreWriteError

        if isinstance(exc, StoreWriteError):  # disk full, read-only: one line naming the file
            print(f"clbench: error: {_printable(_one_line(exc))}", file=sys.stderr)
            return EXIT_RUNS_FAILED
        if _is_bad_input(exc):  # its message is one line; any line break or NUL in it came from the input
            print(f"clbench: error: {_printable(str(exc).strip()) or type(exc).__name__}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"clbench: internal error: {type(exc).__name__}: {_printable(_one_line(exc))} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_RUNS_FAILED


def _is_bad_input(exc: Exception) -> bool:
    if isinstance(exc, UsageError):  # without importing torch (through scenarios) to say so
        return True
    import scenarios
    import strategies
    from benchmark.config import ConfigError
    from benchmark.tune import TuneBusy

    return isinstance(exc, (UsageError, ConfigError, scenarios.ScenarioError, strategies.StrategyError, TuneBusy))


def _one_line(exc: BaseException) -> str:
    from benchmark.messages import first_line

    return first_line(exc) or type(exc).__name__


def _printable(text: str) -> str:
    """``text`` with control characters (NUL, line breaks, escape sequences) written as escapes,
    so that a message stays one line and cannot drive the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _load_plugins(files):
    import strategies

    for f in files:
        strategies.load_plugin(f)


def _check_execution(args) -> None:
    """The options of ``run`` and ``tune`` that say where runs execute, checked together."""
    check_execution(jobs=args.jobs, executor=args.executor, address=args.address, in_process=args.in_process,
                    out=args.out)


def check_execution(*, jobs: int, executor: str, address: str | None, in_process: bool, out: str | None) -> None:
    """Where runs execute (``--jobs``, ``--executor``, ``--address``, ``--in-process``, ``--out``),
    checked together: a UsageError of one line; then the local workers' fork server is started."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {jobs}")
    if executor not in ("local", "ray"):
        raise UsageError(f"--executor must be local or ray, got {executor!r}")
    if executor != "ray" and address:
        raise UsageError("--address is only for --executor ray")
    if in_process and (jobs != 1 or executor != "local"):
        raise UsageError("--in-process runs one run at a time in this process; it cannot go with --jobs "
                         f"{jobs} or --executor {executor}")
    if out is not None and (not str(out).strip() or "\0" in str(out)):
        raise UsageError(f"--out {str(out)!r} is not a folder name; give a path like results/mysweep")
    if executor == "ray":
        try:
            import ray  # noqa: F401 (the executor imports it anyway; missing, it is bad input)
        except ImportError:
            raise UsageError("--executor ray needs Ray: pip install 'clbench[ray]'") from None
    if not in_process and executor == "local":
        from benchmark.executors import start_fork_server

        start_fork_server()  # the workers' imports overlap with reading and checking the config


def sweep(config, *, out=None, jobs: int = 1, executor: str = "local", address: str | None = None,
          overrides=(), plugins=(), show_progress: bool | None = None, checkpoint_every_task: bool = False,
          in_process: bool = False, trackers=(), log_uri: str | None = None):
    """What ``clbench run`` does before it prints: check the options, load the plugin files,
    read and validate the config (a YAML path, or a dict), refuse foreign files in the output
    folder, run the sweep, logging each run to the ``trackers`` (``--log``). Returns (experiment,
    output folder, outcome, the trackers or None); bad input raises the one-line error the command
    prints. :func:`benchmark.run` calls it too."""
    from benchmark.config import experiment_from_mapping, load_experiment
    from benchmark.sweep import run_sweep

    check_trackers(trackers, log_uri)
    check_execution(jobs=jobs, executor=executor, address=address, in_process=in_process, out=out)
    _load_plugins(plugins)
    if isinstance(config, dict):
        exp = experiment_from_mapping(config, where="config", overrides=list(overrides))
    else:
        exp = load_experiment(config, overrides=list(overrides))
    out = Path(out) if out is not None else Path("results") / _safe_folder(exp.name)
    _refuse_foreign_files(out)
    _make_out_folder(out)
    logging = None
    if trackers:
        from benchmark.trackers import Trackers

        logging = Trackers(list(trackers), out=out, experiment=exp.name, uri=log_uri)
    outcome = run_sweep(exp, out=out, jobs=jobs, executor=executor, address=address,
                        plugin_files=[str(Path(f).resolve()) for f in plugins], show_progress=show_progress,
                        checkpoint_every_task=checkpoint_every_task, in_process=in_process, trackers=logging)
    return exp, out, outcome, logging


def _run(args) -> int:
    from benchmark.tables import summary_table

    exp, out, outcome, trackers = sweep(
        args.config, out=args.out, jobs=args.jobs, executor=args.executor, address=args.address,
        overrides=args.overrides, plugins=args.plugins, show_progress=False if args.no_progress else None,
        checkpoint_every_task=args.checkpoint_every_task, in_process=args.in_process, trackers=args.trackers,
        log_uri=args.log_uri)
    from benchmark.store import RunStore

    records = [r for r in RunStore(out).records() if r.get("run_id") in {s.run_id for s in exp.specs()}]
    print(summary_table(records))
    print(SUMMARY_UNITS)
    elsewhere = f", {len(outcome.elsewhere)} by another clbench run" if outcome.elsewhere else ""
    print(f"\n{outcome.total} runs: {outcome.skipped} already done, {len(outcome.done)} done now, "
          f"{len(outcome.failed)} failed{elsewhere}. Results: {out}/ (summary.csv, <run_id>/run.json)")
    if trackers is not None:
        print(trackers.summary())
    for r in records:
        if r.get("status") == "failed":
            print(f"failed: {r['run_id']}: {(r.get('error') or '').splitlines()[0]}", file=sys.stderr)
    still_failed = any(r.get("status") != "done" for r in records) or len(records) < outcome.total
    return EXIT_RUNS_FAILED if still_failed else EXIT_OK


def check_trackers(trackers, log_uri: str | None) -> None:
    """``--log`` and ``--log-uri``, checked before anything runs: a tracker whose package is not
    installed is bad input (like ``clbench tune`` without Optuna)."""
    from benchmark.trackers import TOOLS, MissingTool, check_installed

    unknown = [t for t in trackers if t not in TOOLS]
    if unknown:
        raise UsageError(f"unknown tracker {unknown[0]!r}; allowed: {', '.join(TOOLS)}")
    if log_uri is not None and "mlflow" not in trackers:
        raise UsageError("--log-uri is the MLflow tracking URI; it goes with --log mlflow")
    if log_uri is not None and (not log_uri.strip() or not log_uri.isprintable()):
        raise UsageError(f"--log-uri {log_uri!r} is not a URI; give e.g. http://HOST:5000 or sqlite:///FILE.db")
    try:
        check_installed(list(trackers))
    except MissingTool as exc:
        raise UsageError(str(exc)) from None


def _tune(args) -> int:
    from benchmark.config import ConfigError, load_experiment
    from benchmark.tune import run_tune
    from benchmark.tune_config import TuneError
    from benchmark.tune_config import parse as parse_tune

    if args.trials is not None and args.trials < 1:
        raise UsageError(f"--trials must be >= 1 (the budget of each strategy), got {args.trials}")
    try:
        import optuna  # noqa: F401 (an optional extra: say so before anything is written)
    except ImportError:
        raise UsageError("clbench tune needs Optuna: pip install 'clbench[tune]'") from None
    _check_execution(args)
    _load_plugins(args.plugins)
    exp = load_experiment(args.config, overrides=args.overrides)
    settings = exp.tune
    if settings is None:  # no tune: section: its defaults
        try:
            settings = parse_tune({}, scenarios=exp.scenarios, strategies=exp.strategies, seeds=exp.seeds,
                                  where=str(args.config))
        except TuneError as exc:
            raise ConfigError(str(exc)) from None
    if args.trials is not None:
        settings = settings.with_trials(args.trials)
    out = Path(args.out) if args.out is not None else Path("results") / f"tune-{_safe_folder(exp.name)}"
    _refuse_foreign_files(out, tune=True)
    _make_out_folder(out)
    outcome = run_tune(exp, out=out, settings=settings, jobs=args.jobs, executor=args.executor, address=args.address,
                       plugin_files=[str(Path(f).resolve()) for f in args.plugins], in_process=args.in_process,
                       source=str(args.config))
    print(f"tuned on the first {settings.first_tasks} tasks ({settings.val_fraction:g} of their training examples "
          f"held out to score {settings.objective}), {settings.trials} trials per strategy, {settings.sampler} "
          f"sampler, in {outcome.seconds:.1f} s")
    for r in outcome.results:
        score = "no trial completed" if r.best_value is None else (
            f"best {settings.objective} {r.best_value:.4f} (trial {r.best_number}): "
            + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.chosen.items()))
        print(f"  {r.entry.label}: {r.complete}/{r.trials} complete, {r.failed} failed; {score}")
    print(f"\nwrote {outcome.best}; evaluate it with: clbench run {outcome.best}. Study: {outcome.study}")
    if not outcome.ok:
        print("clbench: a strategy has no complete trial: best.yaml keeps its own settings", file=sys.stderr)
    return EXIT_OK if outcome.ok else EXIT_RUNS_FAILED


def _make_out_folder(out: Path) -> None:
    """Create the output folder, or say in one line why it cannot be."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"output folder {out} exists and is not a folder; give --out a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the output folder {out}: {exc.strerror or type(exc).__name__}") from None


def _safe_folder(name: str) -> str:
    """The default results folder of a config's ``name``: the name itself where it is a safe
    folder name, else its safe form plus a digest of the name, so that names that read alike
    once made safe ('α' and 'β', 'my sweep' and 'my-sweep') never share a folder."""
    import hashlib

    from benchmark.names import safe_name

    safe = safe_name(name, fallback="experiment", limit=None)
    if safe == name:
        return safe
    return f"{safe}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:8]}"


def _refuse_foreign_files(out: Path, *, tune: bool = False) -> None:
    """Before anything runs: a file clbench would write in ``out`` that is not clbench's (the
    user's own experiment.yaml, summary.csv or best.yaml) is one line, never overwritten."""
    from benchmark.ownership import OWNED_FILES, TUNE_FILES, foreign_files

    found = foreign_files(out, TUNE_FILES if tune else OWNED_FILES)
    if found:
        writes = (f"clbench tune writes {', '.join(TUNE_FILES)} and run folders" if tune else
                  f"clbench writes {', '.join(OWNED_FILES)}, configs/, tables/ and plots/")
        raise UsageError(f"{found[0]} exists and was not written by clbench; give --out a folder of its own "
                         f"({writes} there)")


def _list(args) -> int:
    import scenarios
    import strategies

    from benchmark.settings import SETTINGS, describe

    _load_plugins(args.plugins)
    print("config keys (besides the scenario and strategy entries):")
    for setting in SETTINGS:
        print(f"  {describe(setting)}")
    print("\nstrategies:")
    for name in strategies.REGISTRY.names():
        d = strategies.REGISTRY.get(name)
        print(f"  {name}: {d.description}")
        for h in d.hparams:
            print(f"      {h.name} = {h.default!r}  ({h.allowed()})")
    print("\nscenarios:")
    for name in scenarios.available():
        d = scenarios.definition(name)
        print(f"  {name}: {d.description}")
        for p in d.params:
            allowed = f"{', one of ' + ', '.join(p.choices) if p.choices else ''}" \
                f"{', ' + p.bounds.describe() if p.bounds is not None else ''}{', or null' if p.optional else ''}"
            print(f"      {p.name} = {p.default!r}  ({p.kind}{allowed}){': ' + p.help if p.help else ''}")
    return EXIT_OK


def results_of(folder, *, config: str | None = None, plugins=()):
    """The run records of a results folder (``clbench report``'s reading of it): (store,
    records, unreadable records, the configs selected or None), only the runs of ``config``
    where one is named; a folder that is not one, or holds no record, is a one-line UsageError."""
    from benchmark import report
    from benchmark.store import RunStore

    folder = str(folder)
    if not folder.strip() or "\0" in folder:
        raise UsageError(f"report {folder!r}: not a folder name; give the --out folder of a sweep")
    store = RunStore(folder)
    if not store.root.exists():
        raise UsageError(f"results folder not found: {store.root}")
    if not store.root.is_dir():
        raise UsageError(f"results folder {store.root} is a file; give the --out folder of a sweep")
    if config is not None and (not isinstance(config, str) or not config.strip() or not config.isprintable()):
        raise UsageError(f"--config {config!r} is not a config name; give the name of a config of the folder")
    records, bad = store.scan()
    if not records:
        unreadable = f" ({len(bad)} unreadable run.json)" if bad else ""
        raise UsageError(f"no run records in {store.root}{unreadable}; a results folder holds <run_id>/run.json "
                         "from `clbench run CONFIG --out FOLDER`")
    configs = None
    if config is not None:
        try:
            configs = report.select_configs(store.root, config)
        except report.ConfigNotFound as exc:
            raise UsageError(str(exc)) from None
        _load_plugins(plugins)
        ids = report.config_run_ids(configs)
        records = [r for r in records if r.get("run_id") in ids]
        bad = [b for b in bad if b.run_id in ids]
        if not records:
            raise UsageError(f"no run of the config {config!r} is recorded in {store.root} "
                             f"({len(ids)} runs expected; `clbench run` it with --out {store.root})")
    return store, records, bad, configs


def _report(args) -> int:
    from benchmark import report
    from benchmark.tables import summary_table

    store, records, bad, configs = results_of(args.dir, config=args.config, plugins=args.plugins)
    out = store.root if configs is None else store.root / "reports" / report.slug(args.config)
    _refuse_foreign_files(out)
    for b in bad:
        print(f"clbench: skipping unreadable {b.path}: {b.reason}", file=sys.stderr)
    written = report.write_report(store.root, scanned=(records, bad), out=out, configs=configs,
                                  title=args.config)
    print(summary_table(records))
    print(f"\nwrote {written['markdown']}, {written['html']}, {written['summary']}, "
          f"{written['tables']}/ and {written['plots']}/")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
