"""The ``bench`` command line. Every bad input ends in one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from benchmarks.errors import UserError
from benchmarks.recipe import Recipe
from benchmarks.settings import CELL_SETTINGS, add_cell_setting_flags, add_flags, csv_list, flag_fields
from benchmarks.plugins import load_plugins

EPILOG = """examples:
  bench run --methods crbg,edgepopup --arch lenet300 --dataset mnist --sparsity 0.5,0.8,0.9
  bench run --methods crbg --granularity structured --sparsity 0.5,0.77 --set crbg.lr=0.02
  bench run --config sweep.yaml --seeds 0,1,2       (flags override the file)
  bench list methods

Sparsity is the fraction of prunable weights (every Linear/Conv weight) removed by the final binary
mask; structured CRBG targets the fraction of gated units and reports both. Data is read from
--data-root, else $TICKETBENCH_DATA, else ./data (MNIST from DATA/MNIST/raw/*-ubyte[.gz])."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2
        raise UserError(message)


def make_parser(command: str | None = "run") -> argparse.ArgumentParser:
    """The `bench` parser. The run command's flags come from `SweepSpec`'s fields, whose module imports torch:
    they are added only when `command` is run (`bench status` must start without torch)."""
    p = Parser(prog="bench", description="ticketbench: compare sparse-subnetwork (lottery ticket) methods.",
               formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    run = sub.add_parser("run", help="run a sweep of methods x archs x datasets x sparsities x seeds",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    run.add_argument("--config", type=Path, help="YAML file with any of the settings below (flags override it)")
    if command == "run":
        from benchmarks.spec import SweepSpec

        add_sweep_flags(run, SweepSpec)
    run.add_argument("--set", dest="sets", action="append", default=[], metavar="METHOD.PARAM=VALUE",
                     help="override a method hyperparameter, e.g. crbg.lr=0.02 (repeatable); a comma-separated list is a "
                          "grid axis: crbg.lam=0.1,1,10")
    run.add_argument("--workers", type=int, default=1,
                     help="cells at once on this machine (worker processes; one GPU each where there are GPUs)")
    run.add_argument("--executor", default="local", choices=["local", "ray"],
                     help="local (default) or ray: each cell a Ray task, results written here by the driver")
    run.add_argument("--address", help="Ray cluster address (default: start a local one)")
    run.add_argument("--gpus-per-cell", dest="gpus_per_cell", type=float, default=1.0,
                     help="with --executor ray: the fraction of a GPU each cell asks for (default 1; 0.25 runs four "
                          "cells per GPU, for small models that leave a GPU mostly idle; no memory limit is enforced)")
    run.add_argument("--rerun-failed", dest="rerun_failed", action="store_true",
                     help="also run cells whose earlier run failed (finished cells are always skipped)")
    run.add_argument("--force", action="store_true", help="recompute every cell, finished ones included")
    run.add_argument("--no-download", dest="download", action="store_false", help="never download data")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars (they are off anyway when stderr is not a terminal)")

    rep = sub.add_parser("report", help="figures and tables from one or more result folders",
                         description="Accuracy-vs-sparsity plots with 95% CI bands and Pareto fronts, per-layer "
                                     "sparsity, training curves, Markdown/LaTeX/CSV tables and an index.md/html.")
    rep.add_argument("folders", nargs="+", type=Path, help="result folders (each with runs.csv)")
    rep.add_argument("--out", type=Path, help="report folder (default reports/<first folder's name>)")
    rep.add_argument("--x", dest="x_mode", default="sparsity", choices=["sparsity", "density-log"],
                     help="sparsity axis: linear, or log(density) so 0.9/0.95/0.99 are readable")
    rep.add_argument("--layer-target", type=float, help="target sparsity for the per-layer plot (default highest)")
    rep.add_argument("--metric", default="test_acc", choices=["test_acc", "val_acc"], help="accuracy column")
    rep.add_argument("--reference", default="crbg",
                     help="the series the equal-accuracy table compares every other against, both ways (default "
                          "crbg; the first series when it is absent)")

    tune = sub.add_parser("tune", help="tune methods' hyperparameters with Optuna, equal budgets (validation only)",
                          description="Optuna search over each method's declared space, one study per (method, "
                                      "target), every study with the same trials and epochs. Objective: validation "
                                      "accuracy subject to achieved sparsity >= target, with per-epoch reports and "
                                      "a median pruner; or --objective pareto: (accuracy, sparsity) front. Writes "
                                      "tuned.yaml for `bench run --tuned`. Run the same command on many machines "
                                      "with one --storage URL to share the studies. The test set is never used.")
    tune.add_argument("--methods", "--method", dest="methods", type=csv_list(str), required=True,
                      help="comma-separated methods to tune, e.g. crbg,edgepopup,cs,cts")
    tune.add_argument("--set", dest="sets", action="append", default=[], metavar="METHOD.PARAM=VALUE",
                      help="fix a hyperparameter the trials do not tune, e.g. crbg.sigma=0.3 (repeatable)")
    if command == "tune":
        from benchmarks.spec import SweepSpec
        from benchmarks.tune import NOT_TUNE_FLAGS, TuneSpec

        add_sweep_flags(tune, SweepSpec, skip=NOT_TUNE_FLAGS)  # the cells' settings, as bench run's
        add_flags(tune, TuneSpec, defaults=True)  # the study's: trials, budget, objective, storage, ...

    stat = sub.add_parser("status", help="cells done, running, failed and remaining in a result folder",
                          description="How far a results folder has come: its cells done, running (with their "
                                      "epoch), failed (with their error) and remaining, from plan.json, runs.csv "
                                      "and the running markers. Reads files only (no torch): safe beside a run.")
    stat.add_argument("folder", type=Path, help="a folder written by bench run")
    stat.add_argument("--cells", action="store_true",
                      help="also one line per cell: its id (what bench export --cell takes), state and settings")

    exp = sub.add_parser("export", help="write one finished cell's ticket as a standalone model file",
                         description="Rebuild a finished cell's ticket (its seed's weights, or its trained ones, with "
                                     "the mask baked in) and write it with its metadata (settings, accuracy, "
                                     "sparsity). Load it with: from benchmarks import load_ticket.")
    exp.add_argument("folder", type=Path, help="the results folder (with runs.csv, plan.json, masks/, tickets/)")
    exp.add_argument("--cell", required=True, help="the cell id (a unique prefix is enough)")
    exp.add_argument("--format", default="pt", choices=["pt", "torchscript", "onnx"],
                     help="pt (default: the pickled module, needs this package to load), torchscript (torch alone) "
                          "or onnx (for ONNX runtimes; input 'input' of any batch size, output 'logits')")
    exp.add_argument("--slim", action="store_true",
                     help="physically remove the units the ticket zeroed (Torch-Pruning's dependency graph; residual "
                          "channels only where every writer zeroed them, attention and LayerNorm'd channels kept; "
                          "checked to give the masked ticket's outputs, refused otherwise)")
    exp.add_argument("--out", help="output file, or a folder to write <cell>[.slim].pt, .ts or .onnx into (a path "
                                   "ending in /; default FOLDER/exports/)")

    lst = sub.add_parser("list", help="list the registered methods, archs or datasets, or the result columns",
                         description="What this installation knows (plugins from TICKETBENCH_PLUGINS included): "
                                     "methods with their granularities, architectures, datasets, or every column "
                                     "of the result files with its unit and meaning.")
    lst.add_argument("what", choices=["methods", "archs", "datasets", "columns"], help="what to list")
    return p


def add_sweep_flags(parser: argparse.ArgumentParser, spec_cls: type, skip: tuple[str, ...] = ()) -> None:
    """The flags of a sweep's settings (bench run's, and bench tune's for its cells): one per `SweepSpec`
    setting field (--methods, --sparsity, ...), per declared cell setting (--epochs, --train-size, ...) and
    per field of the weight-training recipe (--train-lr, ...: YAML ``train:``)."""
    add_flags(parser, spec_cls, skip=skip)
    add_cell_setting_flags(parser, skip=skip)
    add_flags(parser, Recipe, prefix="train-", dest_prefix="train.")


def sweep_flags(args: argparse.Namespace) -> dict:
    """The sweep settings given on the command line (None: not given), as `SweepSpec.from_sources` takes them."""
    from benchmarks.spec import SweepSpec, parse_sets

    names = [f.name for f in flag_fields(SweepSpec)] + list(CELL_SETTINGS)
    flags = {name: getattr(args, name) for name in names if hasattr(args, name)}
    flags["hparams"] = parse_sets(args.sets)
    flags["train"] = {k.removeprefix("train."): v for k, v in vars(args).items() if k.startswith("train.") and v is not None}
    return flags


def cmd_run(args: argparse.Namespace) -> int:
    from benchmarks.spec import SweepSpec, load_yaml
    from benchmarks.summary import summary_table
    from benchmarks.sweep import run_sweep

    flags = sweep_flags(args)
    spec = SweepSpec.from_sources(args.config, flags)
    implicit = [f"no --{key} given: using {','.join(getattr(spec, key))} (bench list {key}s lists the others)"
                for key in ("dataset", "arch") if flags[key] is None and not (args.config and key in load_yaml(args.config))]
    progress = args.progress and sys.stderr.isatty()  # bars on a terminal; one line per cell in logs
    out, rows = run_sweep(spec, progress=progress, download=args.download, rerun_failed=args.rerun_failed,
                          force=args.force, workers=args.workers, executor=args.executor, address=args.address,
                          notes=implicit, gpus_per_cell=args.gpus_per_cell)
    print(summary_table(out, {c.id for c in spec.cells()}))
    failed = [r for r in rows if r["status"] != "ok"]
    for r in failed:
        print(f"failed: {r['cell']} {r['method']} target {r['target_sparsity']} seed {r['seed']}: {r['error']}")
    return 1 if failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from reports.build import build_report

    out = args.out or Path("reports") / args.folders[0].resolve().name
    build_report(args.folders, out, args.x_mode, args.layer_target, args.metric, args.reference)
    print(f"report written to {out / 'index.md'} and {out / 'index.html'}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from benchmarks.spec import SweepSpec
    from benchmarks.tune import TUNE_DEFAULTS, TuneSpec, run_tune

    flags = sweep_flags(args)
    flags.update({k: v for k, v in TUNE_DEFAULTS.items() if flags.get(k) is None}, methods=args.methods,
                 epochs=args.budget_epochs)
    study = {f.name: getattr(args, f.name) for f in flag_fields(TuneSpec)}
    run_tune(TuneSpec(SweepSpec.from_sources(None, flags), **study, progress=sys.stderr.isatty()))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from benchmarks.export import export_ticket

    path, meta = export_ticket(args.folder, args.cell, args.format, args.out, args.slim)
    if args.slim and meta["slimmed"]:
        print(f"slimmed: {meta['parameters']:,} -> {meta['parameters_slim']:,} parameters")
    elif args.slim:
        print(f"--slim: nothing to remove (no unit of this ticket is zeroed whole: {meta['settings']['granularity']} "
              f"masks remove single weights); the ticket is written as it is")
    print(f"ticket written to {path}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from benchmarks.status import describe

    print(describe(args.folder, every_cell=args.cells))
    return 0


def first_line(obj: object) -> str:
    """The docstring's first paragraph on one line (a summary that wraps is not cut mid-sentence)."""
    return " ".join((obj.__doc__ or "").strip().split("\n\n")[0].split())


def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "methods":
        from methods import METHODS

        width = max(map(len, METHODS)) + 1
        for name, cls in sorted(METHODS.items()):
            print(f"{name:<{width}} granularity: {', '.join(cls.granularities):<25} {first_line(cls)}")
    elif args.what == "archs":
        from benchmarks.zoo import MODELS

        width = max(map(len, MODELS)) + 1
        for name, fn in sorted(MODELS.items()):
            print(f"{name:<{width}} {first_line(getattr(fn, 'func', fn))}")
        print("timm:<name> any timm model, e.g. timm:vit_base_patch16_224 (random init, never pretrained)")
    elif args.what == "datasets":
        from benchmarks.data import DATASETS

        width = max(map(len, DATASETS)) + 1
        for name, fn in sorted(DATASETS.items()):
            print(f"{name:<{width}} {first_line(fn)}")
    else:
        from benchmarks.columns import COLUMNS

        for file, columns in COLUMNS.items():
            print(file)
            for name, (unit, meaning) in columns.items():
                print(f"  {name:<28} {unit:<12} {meaning}")
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, `kill`), handled as Ctrl-C is: finished cells are saved."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        load_plugins()
        argv = sys.argv[1:] if argv is None else argv
        args = make_parser(argv[0] if argv else None).parse_args(argv)
        commands = {"run": cmd_run, "tune": cmd_tune, "report": cmd_report, "status": cmd_status, "export": cmd_export,
                    "list": cmd_list}
        return commands[args.command](args)
    except UserError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader (`| head`) took what it wanted and closed the pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    except KeyboardInterrupt as e:
        print(f"bench: {'terminated' if isinstance(e, Terminated) else 'interrupted'}; finished cells are saved, run "
              f"the same command to resume", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
