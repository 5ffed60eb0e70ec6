"""`bench tune`: Optuna search over a method's hyperparameters on the validation split.

Each method declares its space in `Pruner.search_space`. The objective is validation accuracy subject to
achieved sparsity >= target (a constraint the sampler respects), reported per epoch so a median pruner
stops weak trials; ``objective="pareto"`` instead maximises (accuracy, sparsity) with the target left
free (CRBG's lambda sweep). The study lives in an RDB storage: an SQLite file in the output folder by
default, or a shared URL (PostgreSQL) that many workers on many machines use at once. Heartbeats mark
a killed worker's trial failed. The test split is never evaluated.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.console import count
from benchmarks.data import data_root, load_dataset
from benchmarks.errors import UserError
from benchmarks.settings import CELL_SETTINGS, setting
from benchmarks.spec import SweepSpec
from benchmarks.tuned import write_manifest, write_study_files
from benchmarks.cell import run_cell
from benchmarks.trainer import resolve_device
from methods import Pruner, get_method

OBJECTIVES = ("constrained", "pareto")


TUNE_DEFAULTS = {"sparsity": [0.9]}  # bench tune's defaults where they differ from bench run's
NOT_TUNE_FLAGS = ("methods", "sanity", "tuned", "measure_latency", "out", "name", "epochs")  # SweepSpec's, not tune's
LEGACY_NAMED = ("regime", "weight_init", "activation")  # in study names as bare values (names made before others)


@dataclass
class TuneSpec:
    """One `bench tune` command: a study per (method, target) of `sweep`'s cells, every study with the same
    trials and epochs. `sweep` holds the cells' settings, from the same flags, YAML keys and declarations
    as `bench run`'s (one arch, dataset, granularity and seed)."""

    sweep: SweepSpec
    trials: int = setting(20, "trials per study run by this worker")
    budget_epochs: int = setting(3, "search epochs per trial")
    objective: str = setting("constrained", "what to maximise: validation accuracy at sparsity >= target, or the "
                             "(accuracy, sparsity) front with the target free", OBJECTIVES)
    storage: str | None = setting(None, "Optuna RDB URL, e.g. postgresql://user@host/db (default SQLite in --out)")
    study: str | None = setting(None, "study name, for one method and one target (default from method, arch, "
                                "dataset, target, objective and every setting away from its default)")
    out: str | None = setting(None, "output folder (default results/tune_<study> for one study, else "
                              "results/tune_<arch>_<dataset>)")
    heartbeat: int = setting(30, "seconds between trial heartbeats; a trial silent for twice that is marked failed")
    progress: bool = False

    def __post_init__(self) -> None:
        several = [f"--{k} {','.join(map(str, v))}" for k, v in (("arch", self.sweep.arch), ("dataset",
                   self.sweep.dataset), ("granularity", self.sweep.granularity), ("seeds", self.sweep.seeds))
                   if len(v) != 1]
        if several:
            raise UserError(f"bench tune runs one arch, dataset, granularity and seed per command; got "
                            f"{'; '.join(several)}")
        grids = [f"{m}.{k}" for m, params in self.sweep.hparams.items() for k, v in params.items()
                 if isinstance(v, list) or "," in str(v)]
        if grids:
            raise UserError(f"--set {', '.join(grids)}: a trial fixes one value of a hyperparameter it does not "
                            f"tune, not a list")

    @property
    def methods(self) -> list[str]:
        return self.sweep.methods

    @property
    def sparsity(self) -> list[float]:
        return self.sweep.sparsity

    @property
    def arch(self) -> str:
        return self.sweep.arch[0]

    @property
    def dataset(self) -> str:
        return self.sweep.dataset[0]

    @property
    def seed(self) -> int:
        return self.sweep.seeds[0]

    def study_name(self, method: str, target: float) -> str:
        """The default name carries every setting away from its default, so the studies of a weak-regime, a
        PReLU or a batch-64 comparison never mix with the default ones in one storage."""
        base = SweepSpec()
        extra = "".join(f"_{getattr(self.sweep, k)}" for k in LEGACY_NAMED if getattr(self.sweep, k) != getattr(base, k))
        extra += "".join(f"_{s.name}={getattr(self.sweep, s.name)}" for s in CELL_SETTINGS.values()
                         if s.name not in LEGACY_NAMED and not s.budget and getattr(self.sweep, s.name) != s.default)
        extra += "".join(f"_{k}={v}" for k, v in (("exclude", ";".join(self.sweep.exclude)),
                                                  ("train", ",".join(f"{a}={b}" for a, b in
                                                                     self.sweep._recipe.overrides()))) if v)
        return self.study or f"{method}_{self.arch}_{self.dataset}_{target:g}_{self.objective}{extra}"

    @property
    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        if len(self.methods) == 1 and len(self.sparsity) == 1:
            return Path("results") / f"tune_{self.study_name(self.methods[0], self.sparsity[0])}".replace(":", "_")
        return Path("results") / f"tune_{self.arch}_{self.dataset}".replace(":", "_")

    def study_dir(self, method: str, target: float) -> Path:
        """A study's trials.csv and best.yaml: the output folder itself for a single study, else a subfolder."""
        if len(self.methods) == 1 and len(self.sparsity) == 1:
            return self.out_dir
        return self.out_dir / self.study_name(method, target).replace(":", "_").replace("/", "_")

    def cell_spec(self, method: str, target: float, params: dict[str, Any]) -> SweepSpec:
        """The sweep one trial runs: the tuned method at the budget with the sampled hyperparameters (over any
        --set of this command)."""
        hparams = {method: {**self.sweep.hparams.get(method, {}), **params}}
        return dataclasses.replace(self.sweep, methods=[method], sparsity=[target], epochs=self.budget_epochs,
                                   hparams=hparams)


def _storage(spec: TuneSpec, out: Path):
    import optuna

    url = spec.storage or f"sqlite:///{(out / 'tune.db').resolve()}"
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=spec.heartbeat,
                                              grace_period=2 * spec.heartbeat)
        except Exception as e:  # bad URL, unreachable server, missing driver, or a schema race
            # Workers started together on a fresh database race to create Optuna's tables; the loser's
            # retry finds them made.
            if attempt == 4 or "UniqueViolation" not in repr(e) and "already exists" not in str(e):
                raise UserError(f"cannot open Optuna storage {url!r}: {str(e).splitlines()[0]}") from None
            time.sleep(0.5 + attempt)


def run_tune(spec: TuneSpec) -> Path:
    """Every (method, target) study of `spec`, one after the other, each with `spec.trials` trials of
    `spec.budget_epochs` epochs; then the manifest `tuned.yaml` that `bench run --tuned` reads."""
    if spec.objective not in OBJECTIVES:
        raise UserError(f"--objective must be one of {', '.join(OBJECTIVES)}")
    if spec.trials < 1 or spec.budget_epochs < 1:
        raise UserError(f"--trials and --budget-epochs must be at least 1 (got {spec.trials}, {spec.budget_epochs})")
    if spec.heartbeat < 1:
        raise UserError(f"--heartbeat must be at least 1 second, got {spec.heartbeat}")
    if spec.sweep.val_size == 0:
        raise UserError("bench tune needs a validation split to score trials on (never the test set): "
                        "--val-size 0 leaves none")
    if spec.study and len(spec.methods) * len(spec.sparsity) > 1:
        raise UserError("--study names one study: give one method and one target with it")
    for method in spec.methods:  # validates names, targets and granularity before any work
        spec.cell_spec(method, spec.sparsity[0], {})
        cls = get_method(method)
        if cls.search_space is Pruner.search_space:
            raise UserError(f"method {method!r} declares no search space (nothing to tune); tune only the "
                            f"searching methods and run the others with their defaults")
        if spec.objective == "pareto" and "target_mode" not in {f.name for f in dataclasses.fields(cls.Hparams)}:
            raise UserError(f"--objective pareto needs a method whose sparsity comes from a penalty; "
                            f"{method} has a fixed sparsity")
    for target in spec.sparsity:
        if not 0.0 < target < 1.0:
            raise UserError(f"sparsity {target} is outside (0, 1)")
    out = spec.out_dir
    device = resolve_device(spec.sweep.device)
    if spec.sweep.threads:
        torch.set_num_threads(spec.sweep.threads)
    splits = load_dataset(spec.dataset, data_root(spec.sweep.data_root), val_size=spec.sweep.val_size).to(device)
    splits.with_train_size(spec.sweep.train_size)  # a bad size is one line before any trial; each cell cuts its own
    if spec.storage is not None:  # a storage that cannot be opened leaves no output folder behind
        storage = _storage(spec, out)
        out.mkdir(parents=True, exist_ok=True)
    else:  # the SQLite file lives in the output folder
        out.mkdir(parents=True, exist_ok=True)
        storage = _storage(spec, out)
    studies = [(m, t) for m in spec.methods for t in spec.sparsity]
    for i, (method, target) in enumerate(studies, 1):
        print(f"study {i}/{len(studies)}: {spec.study_name(method, target)} ({count(spec.trials, 'trial')} of "
              f"{count(spec.budget_epochs, 'epoch')})", flush=True)
        run_study(spec, method, target, splits, device, storage)
    write_manifest(spec, storage, out)
    return out


def run_study(spec: TuneSpec, method: str, target: float, splits, device, storage) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cls = get_method(method)
    fixed: dict[str, Any] = {"target_mode": "none"} if spec.objective == "pareto" else {}  # sparsity is an outcome
    if spec.objective == "pareto":  # multi-objective studies cannot prune on intermediate values
        pruner, directions = optuna.pruners.NopPruner(), ["maximize", "maximize"]
    else:
        pruner, directions = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1), ["maximize"]
    # TPE reads the sparsity constraint each constrained trial sets (unseeded: workers sharing a study
    # must not draw the same start-up trials)
    study = optuna.create_study(storage=storage, study_name=spec.study_name(method, target), directions=directions,
                                sampler=optuna.samplers.TPESampler(), pruner=pruner, load_if_exists=True)

    # The method's defaults are the first trial, so a study never ends below the default setting.
    defaults = cls.search_space(optuna.trial.FixedTrial(dataclasses.asdict(cls.Hparams())), spec.sweep.regime)
    study.enqueue_trial(defaults, skip_if_exists=True)

    def objective(trial: optuna.Trial):
        params = {**cls.search_space(trial, spec.sweep.regime), **fixed}
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        (cell,) = spec.cell_spec(method, target, params).cells()

        def report(row: dict[str, Any]) -> None:
            if row["phase"] != "search":
                return
            if spec.progress:
                print(f"  trial {trial.number} epoch {row['epoch']}/{cell.epochs}: val {row['val_acc']:.2f}% "
                      f"sparsity {row['sparsity']:.4f}", flush=True)
            if spec.objective == "constrained":
                trial.report(row["val_acc"], row["epoch"])
                if trial.should_prune():
                    raise optuna.TrialPruned()

        row = run_cell(cell, splits, device, progress=False, on_epoch=report, test=False,
                       passthrough=(optuna.TrialPruned,)).run
        if "val_acc" not in row:  # the cell failed (diverged, a bug); one that missed its target is infeasible
            raise RuntimeError(row["error"])
        achieved = row["sparsity"]
        trial.set_user_attr("sparsity", achieved)
        constraint = target - achieved - 1e-3  # <= 0: target reached (0.1 % slack)
        trial.set_user_attr("constraint", constraint)
        if spec.objective == "constrained":
            trial.set_constraint("sparsity_reached", constraint)
        trial.set_user_attr("wall_s", row["wall_s"])
        if not math.isfinite(row["val_acc"]):
            raise RuntimeError("validation accuracy is not finite")
        print(f"trial {trial.number}: val {row['val_acc']:.2f}% sparsity {achieved:.4f} "
              f"{ {k: round(v, 5) if isinstance(v, float) else v for k, v in params.items()} }", flush=True)
        return (row["val_acc"], achieved) if spec.objective == "pareto" else row["val_acc"]

    study.optimize(objective, n_trials=spec.trials, catch=(RuntimeError,))
    write_study_files(study, spec, method, target)
