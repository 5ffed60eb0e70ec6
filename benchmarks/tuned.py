"""What `bench tune`'s studies leave: per study trials.csv (every trial), best.yaml (a `bench run --config`
file) and a printed table; per command the manifest tuned.yaml, which `bench run --tuned` reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from benchmarks.console import count
from benchmarks.settings import CELL_SETTINGS
from benchmarks.spec import manifest_entry, manifest_key

TuneSpec = Any  # benchmarks.tune.TuneSpec (which imports this module)

def best_trials(study, spec: TuneSpec) -> list:
    """Feasible completed trials, best first (constrained), or the Pareto front (pareto)."""
    import optuna

    if spec.objective == "pareto":
        return sorted(study.best_trials, key=lambda t: -t.values[1])
    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.user_attrs.get("constraint", 1.0) <= 0]
    return sorted(done, key=lambda t: -t.value)


def write_study_files(study, spec: TuneSpec, method: str, target: float) -> None:
    """trials.csv (one row per trial), best.yaml (a `bench run --config` file) and a printed table."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        values = t.values or []
        rows.append({"study": study.study_name, "trial": t.number, "state": t.state.name,
                     "val_acc": values[0] if values else None,
                     "sparsity": t.user_attrs.get("sparsity"), "target_sparsity": target,
                     "feasible": t.user_attrs.get("constraint", 1.0) <= 0, "method": method, "arch": spec.arch,
                     "dataset": spec.dataset, "budget_epochs": spec.budget_epochs, "train_size": spec.sweep.train_size,
                     "objective": spec.objective, "worker": t.user_attrs.get("worker"),
                     "wall_s": t.user_attrs.get("wall_s"), **{f"hp_{k}": v for k, v in t.params.items()}})
    import pandas as pd

    folder = spec.study_dir(method, target)
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "trials.csv", index=False)
    best = best_trials(study, spec)
    if not best:
        print(f"no feasible completed trial yet in study {study.study_name!r} ({len(rows)} trials)")
        return
    top = best[0]
    sweep = spec.sweep
    fragment = {"methods": [method], "arch": sweep.arch, "dataset": sweep.dataset, "sparsity": [target],
                "granularity": sweep.granularity, "seeds": sweep.seeds, "weight_init": sweep.weight_init,
                **({"exclude": sweep.exclude} if sweep.exclude else {}), **({"train": sweep.train} if sweep.train else {}),
                **{name: getattr(sweep, name) for name in CELL_SETTINGS}, "epochs": spec.budget_epochs,
                "hparams": {method: {**sweep.hparams.get(method, {}), **best_params(top, spec)}}}
    (folder / "best.yaml").write_text(f"# best trial {top.number} of study {study.study_name}: val_acc "
                                      f"{top.values[0]:.2f}, sparsity {top.user_attrs.get('sparsity', float('nan')):.4f}"
                                      f" ({spec.budget_epochs} epochs, seed {spec.seed}; a longer run: --epochs N)\n"
                                      + yaml.safe_dump(fragment, sort_keys=False))
    print(f"{'trial':>5} {'val_acc':>8} {'sparsity':>9}  params")
    for t in best[:10]:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        print(f"{t.number:>5} {t.values[0]:8.2f} {t.user_attrs.get('sparsity', float('nan')):9.4f}  {params}")
    print(f"best parameters: {folder / 'best.yaml'} (bench run --config {folder / 'best.yaml'} --epochs N); "
          f"all trials: {folder / 'trials.csv'}")


def best_params(trial, spec: TuneSpec) -> dict[str, Any]:
    fixed = {"target_mode": "none"} if spec.objective == "pareto" else {}
    return {**{k: float(v) if isinstance(v, float) else v for k, v in trial.params.items()}, **fixed}


MANIFEST = "tuned.yaml"


def write_manifest(spec: TuneSpec, storage, out: Path) -> None:
    """`tuned.yaml`: for every study of this command with a feasible trial, its best configuration, keyed
    so `bench run --tuned` finds the one for each cell; with the budget every study had."""
    import optuna

    path = out / MANIFEST
    manifest = yaml.safe_load(path.read_text()) if path.exists() else None
    manifest = manifest if isinstance(manifest, dict) else {}
    entries = {manifest_key(e): e for e in manifest.get("configs", [])}
    for method in spec.methods:
        for target in spec.sparsity:
            name = spec.study_name(method, target)
            best = best_trials(optuna.load_study(study_name=name, storage=storage), spec)
            if not best:
                continue
            trials = len(optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False))
            (cell,) = spec.cell_spec(method, target, {}).cells()
            entry = {**manifest_entry(cell), "study": name, "trial": best[0].number,
                     "val_acc": float(best[0].values[0]), "trials": trials, "budget_epochs": spec.budget_epochs,
                     "train_size": spec.sweep.train_size, "objective": spec.objective,
                     "hparams": {**spec.sweep.hparams.get(method, {}), **best_params(best[0], spec)}}
            entries[manifest_key(entry)] = entry
    path.write_text("# bench tune's best configuration per cell identity (every setting but the hyperparameters, "
                    "seed, sanity check and budgets), chosen on validation data; use with: bench run --tuned "
                    + str(out) + "\n"
                    + yaml.safe_dump({"configs": list(entries.values())}, sort_keys=False))
    budgets = {(e["trials"], e["budget_epochs"], e["train_size"]) for e in entries.values()}
    note = "" if len(budgets) <= 1 else " (warning: the studies in it had different budgets: " \
        + "; ".join(f"{t} trials x {b} epochs, train size {n or 'all'}" for t, b, n in sorted(budgets)) + ")"
    print(f"tuned configurations: {path} ({count(len(entries), 'study')}){note}; run them with bench run --tuned {out}")
