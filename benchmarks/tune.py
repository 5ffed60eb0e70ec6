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

import yaml

from benchmarks.data import data_root, load_dataset
from benchmarks.errors import UserError
from benchmarks.spec import SweepSpec
from benchmarks.sweep import build_pruner
from benchmarks.trainer import Recipe, resolve_device, train
from methods import Pruner, get_method

OBJECTIVES = ("constrained", "pareto")


@dataclass
class TuneSpec:
    method: str
    arch: str = "lenet300"
    dataset: str = "mnist"
    sparsity: float = 0.9
    trials: int = 20
    budget_epochs: int = 3
    objective: str = "constrained"
    storage: str | None = None
    study: str | None = None
    seed: int = 0
    granularity: str = "unstructured"
    batch_size: int = 128
    device: str = "auto"
    data_root: str | None = None
    out: str | None = None
    heartbeat: int = 30
    progress: bool = False

    @property
    def study_name(self) -> str:
        return self.study or f"{self.method}_{self.arch}_{self.dataset}_{self.sparsity:g}_{self.objective}"

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("results") / f"tune_{self.study_name}".replace(":", "_")


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


def _cell_spec(spec: TuneSpec, params: dict[str, Any]) -> SweepSpec:
    """The SweepSpec one trial runs: the tuned method at the budget with the sampled hyperparameters."""
    return SweepSpec(methods=[spec.method], arch=[spec.arch], dataset=[spec.dataset], sparsity=[spec.sparsity],
                     seeds=[spec.seed], granularity=[spec.granularity], epochs=spec.budget_epochs,
                     batch_size=spec.batch_size, hparams={spec.method: params}, device=spec.device)


def run_tune(spec: TuneSpec) -> Path:
    import optuna

    if spec.objective not in OBJECTIVES:
        raise UserError(f"--objective must be one of {', '.join(OBJECTIVES)}")
    _cell_spec(spec, {})  # validates method, sparsity and granularity before any work
    cls = get_method(spec.method)
    fixed: dict[str, Any] = {}
    if spec.objective == "pareto":
        if "target_mode" not in {f.name for f in dataclasses.fields(cls.Hparams)}:
            raise UserError(f"--objective pareto needs a method whose sparsity comes from a penalty; "
                            f"{spec.method} has a fixed sparsity")
        fixed["target_mode"] = "none"  # sparsity is an outcome here, not a target
    if cls.search_space is Pruner.search_space:
        raise UserError(f"method {spec.method!r} declares no search space")
    out = spec.out_dir
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    device = resolve_device(spec.device)
    splits = load_dataset(spec.dataset, data_root(spec.data_root)).to(device)

    if spec.objective == "pareto":  # multi-objective studies cannot prune on intermediate values
        pruner, directions = optuna.pruners.NopPruner(), ["maximize", "maximize"]
    else:
        pruner, directions = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1), ["maximize"]
    # TPE reads the sparsity constraint each constrained trial sets
    study = optuna.create_study(storage=_storage(spec, out), study_name=spec.study_name, directions=directions,
                                sampler=optuna.samplers.TPESampler(), pruner=pruner, load_if_exists=True)

    # The method's defaults are the first trial, so a study never ends below the default setting.
    defaults = cls.search_space(optuna.trial.FixedTrial(dataclasses.asdict(cls.Hparams())))
    study.enqueue_trial(defaults, skip_if_exists=True)

    def objective(trial: optuna.Trial):
        params = {**cls.search_space(trial), **fixed}
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        (cell,) = _cell_spec(spec, params).cells()
        pruner_ = build_pruner(cell, splits)

        def report(row: dict[str, Any]) -> None:
            if spec.objective == "constrained":
                trial.report(row["val_acc"], row["epoch"])
                if trial.should_prune():
                    raise optuna.TrialPruned()

        start = time.time()
        result = train(pruner_, splits, cell.epochs, cell.batch_size, device, cell.seed, spec.progress,
                       on_epoch=report, test=False, recipe=Recipe.for_arch(cell.arch))
        achieved = pruner_.report().sparsity
        trial.set_user_attr("sparsity", achieved)
        constraint = spec.sparsity - achieved - 1e-3  # <= 0: target reached (0.1 % slack)
        trial.set_user_attr("constraint", constraint)
        if spec.objective == "constrained":
            trial.set_constraint("sparsity_reached", constraint)
        trial.set_user_attr("wall_s", round(time.time() - start, 2))
        if not math.isfinite(result.val_acc):
            raise RuntimeError("validation accuracy is not finite")
        print(f"trial {trial.number}: val {result.val_acc:.2f}% sparsity {achieved:.4f} "
              f"{ {k: round(v, 5) if isinstance(v, float) else v for k, v in params.items()} }", flush=True)
        return (result.val_acc, achieved) if spec.objective == "pareto" else result.val_acc

    study.optimize(objective, n_trials=spec.trials, catch=(RuntimeError,))
    export(study, spec, out)
    return out


def best_trials(study, spec: TuneSpec) -> list:
    """Feasible completed trials, best first (constrained), or the Pareto front (pareto)."""
    import optuna

    if spec.objective == "pareto":
        return sorted(study.best_trials, key=lambda t: -t.values[1])
    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.user_attrs.get("constraint", 1.0) <= 0]
    return sorted(done, key=lambda t: -t.value)


def export(study, spec: TuneSpec, out: Path) -> None:
    """trials.csv (one row per trial), best.yaml (a `bench run --config` fragment) and a printed table."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        values = t.values or []
        rows.append({"study": spec.study_name, "trial": t.number, "state": t.state.name,
                     "val_acc": values[0] if values else None,
                     "sparsity": t.user_attrs.get("sparsity"), "target_sparsity": spec.sparsity,
                     "feasible": t.user_attrs.get("constraint", 1.0) <= 0, "method": spec.method, "arch": spec.arch,
                     "dataset": spec.dataset, "budget_epochs": spec.budget_epochs, "objective": spec.objective,
                     "worker": t.user_attrs.get("worker"), "wall_s": t.user_attrs.get("wall_s"),
                     **{f"hp_{k}": v for k, v in t.params.items()}})
    import pandas as pd

    pd.DataFrame(rows).to_csv(out / "trials.csv", index=False)
    best = best_trials(study, spec)
    if not best:
        print(f"no feasible completed trial yet in study {spec.study_name!r} ({len(rows)} trials)")
        return
    top = best[0]
    fixed = {"target_mode": "none"} if spec.objective == "pareto" else {}
    fragment = {"methods": [spec.method], "arch": [spec.arch], "dataset": [spec.dataset],
                "sparsity": [spec.sparsity], "granularity": [spec.granularity],
                "hparams": {spec.method: {**{k: float(v) if isinstance(v, float) else v for k, v in top.params.items()},
                                          **fixed}}}
    (out / "best.yaml").write_text(f"# best trial {top.number} of study {spec.study_name}: val_acc "
                                   f"{top.values[0]:.2f}, sparsity {top.user_attrs.get('sparsity', float('nan')):.4f}\n"
                                   + yaml.safe_dump(fragment, sort_keys=False))
    print(f"{'trial':>5} {'val_acc':>8} {'sparsity':>9}  params")
    for t in best[:10]:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        print(f"{t.number:>5} {t.values[0]:8.2f} {t.user_attrs.get('sparsity', float('nan')):9.4f}  {params}")
    print(f"best parameters: {out / 'best.yaml'} (bench run --config {out / 'best.yaml'} --epochs N); "
          f"all trials: {out / 'trials.csv'}")
