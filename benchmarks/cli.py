"""The ``bench`` command line. Every bad input ends in one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from benchmarks.errors import UserError
from benchmarks.recipe import Recipe
from benchmarks.plugins import load_plugins

EPILOG = """examples:
  bench run --methods crbg,edgepopup --arch lenet300 --dataset mnist --sparsity 0.5,0.8,0.9
  bench run --methods crbg --granularity structured --sparsity 0.5,0.77 --set crbg.lr=0.02
  bench run --config sweep.yaml --seeds 0,1,2       (flags override the file)
  bench list methods

Sparsity is the fraction of prunable weights (every Linear/Conv weight) removed by the final binary
mask; structured CRBG targets the fraction of gated units and reports both. Data is read from
--data-root, else $TICKETBENCH_DATA, else ./data (MNIST from DATA/MNIST/raw/*-ubyte[.gz])."""


def csv_list(kind: type):
    def parse(text: str) -> list:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}, got {text!r}")

    return parse


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2
        raise UserError(message)


def make_parser() -> argparse.ArgumentParser:
    p = Parser(prog="bench", description="ticketbench: compare sparse-subnetwork (lottery ticket) methods.",
               formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    run = sub.add_parser("run", help="run a sweep of methods x archs x datasets x sparsities x seeds",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    run.add_argument("--config", type=Path, help="YAML file with any of the settings below (flags override it)")
    run.add_argument("--methods", type=csv_list(str), help="comma-separated methods (default crbg,edgepopup)")
    run.add_argument("--arch", type=csv_list(str), help="comma-separated architectures (default lenet300)")
    run.add_argument("--dataset", type=csv_list(str), help="comma-separated datasets (default mnist)")
    run.add_argument("--sparsity", type=csv_list(float), help="target sparsities in (0, 1) (default 0.5,0.8,0.9)")
    run.add_argument("--seeds", type=csv_list(int), help="seeds (default 0)")
    run.add_argument("--granularity", type=csv_list(str),
                     help="unstructured and/or structured (default unstructured); methods skip what they lack")
    run.add_argument("--regime", choices=["strong", "weak", "joint"],
                     help="strong (default): weights frozen at init, only the mask is found and evaluated; "
                          "weak (lottery ticket): the mask is found, then its surviving weights are trained "
                          "from init (or the method's rewind point) with the --train-* recipe; joint: weights "
                          "and mask are trained together in the search (the recipe for the weights), the binary "
                          "mask is evaluated, no retraining (methods with a search loop)")
    run.add_argument("--epochs", type=int, help="search epochs per cell (default 10)")
    run.add_argument("--train-epochs", dest="train_epochs", type=int,
                     help="weight-training epochs after the search in the weak regime, and for dense "
                          "(default: --epochs)")
    run.add_argument("--sanity", action="store_true", default=None,
                     help="add sanity-check cells for every mask: random (same layer sparsities), shuffle "
                          "(within each unit), reinit (same mask, new weights); checks resume from their "
                          "parent's finished search instead of repeating it")
    run.add_argument("--batch-size", dest="batch_size", type=int, help="batch size (default 128)")
    run.add_argument("--train-size", dest="train_size", type=int,
                     help="train on a fixed random subset of N training examples, the same for every cell and "
                          "seed (validation and test untouched; part of the cell id; default 0: all)")
    run.add_argument("--amp", action="store_true", default=None,
                     help="bf16 autocast in training steps (part of the cell's identity; evaluation in fp32)")
    run.add_argument("--compile", action="store_true", default=None,
                     help="torch.compile the training forward (first epoch pays the compilation)")
    run.add_argument("--measure-latency", dest="measure_latency", action="store_true", default=None,
                     help="time one forward pass of the dense model and of the ticket (dense weights with zeros; "
                          "Linear layers as torch.sparse CSR) on the CPU, batch 1 and 64, median of 30 after "
                          "warm-up: columns latency_ms_<form>_b<batch> (not part of the cell id)")
    run.add_argument("--weight-init", dest="weight_init",
                     help="initial weights: auto (default: strong regime midscaled_signed_constant for crbg, cs and "
                          "cts, scaled_signed_constant for edgepopup and kaiming_normal for dense and the "
                          "pruning-at-init baselines; weak regime "
                          "kaiming_normal for all), signed_constant, "
                          "kaiming_normal, uniform, scaled_signed_constant, scaled_kaiming_normal, "
                          "scaled_uniform, midscaled_signed_constant, midscaled_kaiming_normal, midscaled_uniform, "
                          "keep (scaled: fan_in x density; midscaled: fan_in x sqrt(density))")
    run.add_argument("--activation", choices=["relu", "prelu", "leaky"],
                     help="nonlinearity replacing the model's nn.ReLU modules (classic nets and torchvision "
                          "ResNets): relu (default), prelu (PReLU, slope 0.25 at init, trained with the weights), "
                          "leaky (LeakyReLU 0.01); part of the cell id")
    run.add_argument("--exclude", type=csv_list(str), help="glob patterns of module names never masked")
    run.add_argument("--val-size", dest="val_size", type=float,
                     help="fraction of the training split held out for validation, a fixed split (default 0.1)")
    for f in dataclasses.fields(Recipe):  # the weight-training recipe: --train-<field>, YAML `train: {field: value}`
        run.add_argument(f"--train-{f.name.replace('_', '-')}", dest=f"train.{f.name}", type=type(f.default),
                         metavar=None if f.metadata["choices"] else f.name.upper(),
                         choices=f.metadata["choices"], help=f"{f.metadata['help']} (default {f.default})")
    run.add_argument("--tuned", metavar="DIR",
                     help="run each cell with the best configuration `bench tune` found for its method, arch, "
                          "dataset, granularity, regime, weight init, activation and target (DIR/tuned.yaml); cells "
                          "without one use the defaults; "
                          "rows record tuned=study:trial or default, and reports show the two as separate series")
    run.add_argument("--set", dest="sets", action="append", default=[], metavar="METHOD.PARAM=VALUE",
                     help="override a method hyperparameter, e.g. crbg.lr=0.02 (repeatable); a comma-separated list is a "
                          "grid axis: crbg.lam=0.1,1,10")
    run.add_argument("--device", help="auto (default: CUDA when available), cpu, cuda, cuda:1, ...")
    run.add_argument("--data-root", dest="data_root", help="dataset folder (default $TICKETBENCH_DATA or ./data)")
    run.add_argument("--out", help="output folder (default results/<arch>_<dataset>)")
    run.add_argument("--name", help="name of the run folder under results/ when --out is not given")
    run.add_argument("--workers", type=int, default=1,
                     help="cells at once on this machine (worker processes; one GPU each where there are GPUs)")
    run.add_argument("--executor", default="local", choices=["local", "ray"],
                     help="local (default) or ray: each cell a Ray task, results written here by the driver")
    run.add_argument("--address", help="Ray cluster address (default: start a local one)")
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
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                          description="Optuna search over each method's declared space, one study per (method, "
                                      "target), every study with the same trials and epochs. Objective: validation "
                                      "accuracy subject to achieved sparsity >= target, with per-epoch reports and "
                                      "a median pruner; or --objective pareto: (accuracy, sparsity) front. Writes "
                                      "tuned.yaml for `bench run --tuned`. Run the same command on many machines "
                                      "with one --storage URL to share the studies. The test set is never used.")
    tune.add_argument("--methods", "--method", dest="methods", type=csv_list(str), required=True,
                      help="comma-separated methods to tune, e.g. crbg,edgepopup,cs,cts")
    tune.add_argument("--arch", default="lenet300", help="architecture")
    tune.add_argument("--dataset", default="mnist", help="dataset")
    tune.add_argument("--sparsity", type=csv_list(float), default=[0.9], help="target sparsities, one study each")
    tune.add_argument("--granularity", default="unstructured", help="unstructured or structured")
    tune.add_argument("--regime", default="strong", choices=["strong", "weak", "joint"],
                      help="the regime every trial runs in, as bench run --regime (weak: the objective is the "
                           "trained ticket's validation accuracy)")
    tune.add_argument("--weight-init", dest="weight_init", default="auto", help="initial weights, as bench run")
    tune.add_argument("--activation", default="relu", choices=["relu", "prelu", "leaky"], help="as bench run")
    tune.add_argument("--trials", type=int, default=20, help="trials per study run by this worker")
    tune.add_argument("--budget-epochs", dest="budget_epochs", type=int, default=3, help="search epochs per trial")
    tune.add_argument("--train-size", dest="train_size", type=int, default=0,
                      help="train on a fixed subset of N examples (0: all), as bench run --train-size")
    tune.add_argument("--objective", default="constrained", choices=["constrained", "pareto"], help="what to maximise")
    tune.add_argument("--storage", help="Optuna RDB URL, e.g. postgresql://user@host/db (default SQLite in --out)")
    tune.add_argument("--study", help="study name, for one method and one target (default from method, arch, "
                                      "dataset, target, objective)")
    tune.add_argument("--seed", type=int, default=0, help="the seed every trial uses")
    tune.add_argument("--batch-size", dest="batch_size", type=int, default=128, help="batch size")
    tune.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    tune.add_argument("--data-root", dest="data_root", help="dataset folder (default $TICKETBENCH_DATA or ./data)")
    tune.add_argument("--out", help="output folder (default results/tune_<study> for one study, else "
                                    "results/tune_<arch>_<dataset>)")
    tune.add_argument("--heartbeat", type=int, default=30,
                      help="seconds between trial heartbeats; a trial silent for twice that is marked failed")

    stat = sub.add_parser("status", help="cells done, running, failed and remaining in a result folder")
    stat.add_argument("folder", type=Path)

    exp = sub.add_parser("export", help="write one finished cell's ticket as a standalone model file",
                         description="Rebuild a finished cell's ticket (its seed's weights, or its trained ones, with "
                                     "the mask baked in) and write it with its metadata (settings, accuracy, "
                                     "sparsity). Load it with: from benchmarks import load_ticket.")
    exp.add_argument("folder", type=Path, help="the results folder (with runs.csv, plan.json, masks/, tickets/)")
    exp.add_argument("--cell", required=True, help="the cell id (a unique prefix is enough)")
    exp.add_argument("--format", default="pt", choices=["pt", "torchscript", "onnx"],
                     help="pt (default: the pickled module, needs this package to load), torchscript (torch alone) "
                          "or onnx (for ONNX runtimes; input 'input' of any batch size, output 'logits')")
    exp.add_argument("--out", type=Path, help="output file (default FOLDER/exports/<cell>.pt, .ts or .onnx)")

    lst = sub.add_parser("list", help="list the registered methods, archs or datasets, or the result columns")
    lst.add_argument("what", choices=["methods", "archs", "datasets", "columns"])
    return p


def cmd_run(args: argparse.Namespace) -> int:
    from benchmarks.spec import SweepSpec, load_yaml, parse_sets
    from benchmarks.summary import summary_table
    from benchmarks.sweep import run_sweep

    flags = {k: getattr(args, k) for k in ("methods", "arch", "dataset", "sparsity", "seeds", "granularity",
                                           "regime", "epochs", "train_epochs", "sanity", "amp", "compile", "measure_latency", "batch_size", "train_size", "tuned", "weight_init", "activation", "exclude", "device",
                                           "data_root", "out", "name", "val_size")}
    flags["hparams"] = parse_sets(args.sets)
    flags["train"] = {k.removeprefix("train."): v for k, v in vars(args).items() if k.startswith("train.") and v is not None}
    spec = SweepSpec.from_sources(args.config, flags)
    implicit = [f"no --{key} given: using {','.join(getattr(spec, key))} (bench list {key}s lists the others)"
                for key in ("dataset", "arch") if flags[key] is None and not (args.config and key in load_yaml(args.config))]
    progress = args.progress and sys.stderr.isatty()  # bars on a terminal; one line per cell in logs
    out, rows = run_sweep(spec, progress=progress, download=args.download, rerun_failed=args.rerun_failed,
                          force=args.force, workers=args.workers, executor=args.executor, address=args.address,
                          notes=implicit)
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
    from benchmarks.tune import TuneSpec, run_tune

    fields = {k: v for k, v in vars(args).items() if k != "command"}
    run_tune(TuneSpec(**fields, progress=sys.stderr.isatty()))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from benchmarks.export import export_ticket

    path = export_ticket(args.folder, args.cell, args.format, args.out)
    print(f"ticket written to {path}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from benchmarks.status import describe

    print(describe(args.folder))
    return 0


def first_line(obj: object) -> str:
    """The docstring's first paragraph on one line (a summary that wraps is not cut mid-sentence)."""
    return " ".join((obj.__doc__ or "").strip().split("\n\n")[0].split())


def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "methods":
        from methods import METHODS

        for name, cls in sorted(METHODS.items()):
            print(f"{name:<10} granularity: {', '.join(cls.granularities):<25} {first_line(cls)}")
    elif args.what == "archs":
        from benchmarks.zoo import MODELS

        for name, fn in sorted(MODELS.items()):
            print(f"{name:<10} {first_line(getattr(fn, 'func', fn))}")
        print("timm:<name> any timm model, e.g. timm:vit_base_patch16_224 (random init, never pretrained)")
    elif args.what == "datasets":
        from benchmarks.data import DATASETS

        for name, fn in sorted(DATASETS.items()):
            print(f"{name:<10} {first_line(fn)}")
    else:
        from benchmarks.columns import COLUMNS

        for file, columns in COLUMNS.items():
            print(file)
            for name, (unit, meaning) in columns.items():
                print(f"  {name:<28} {unit:<12} {meaning}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        load_plugins()
        args = make_parser().parse_args(argv)
        commands = {"run": cmd_run, "tune": cmd_tune, "report": cmd_report, "status": cmd_status, "export": cmd_export,
                    "list": cmd_list}
        return commands[args.command](args)
    except UserError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; finished cells are saved, run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
