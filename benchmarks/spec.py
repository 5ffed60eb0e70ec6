"""Sweep specification and cells: the typed settings that are the single source of truth.

`SweepSpec` holds lists for every axis (from flags and/or a YAML file); `SweepSpec.cells()` crosses
them into `Cell`s. A cell's id is a hash of its complete settings (method hyperparameters included,
with their defaults filled in), so the same work always has the same id and finished work is skipped.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from benchmarks.console import log
from benchmarks.errors import UserError
from benchmarks.recipe import Recipe
from benchmarks.settings import CELL_SETTINGS, at_least, cell_setting, setting
from benchmarks.zoo import ACTIVATIONS
from methods import METHODS, get_method
from methods.contract import REGIMES
from methods.hparams import identity, later, without_later_defaults
from methods.init import WEIGHT_INITS
from methods.sanity import SANITY

GRANULARITIES = ("unstructured", "structured")


# The cell settings of the suite (`benchmarks.settings.cell_setting`): each one declaration.
cell_setting("regime", "strong", "strong: weights frozen at init, only the mask is found and evaluated; weak "
             "(lottery ticket): the mask is found, then its surviving weights are trained from init (or the "
             "method's rewind point) with the --train-* recipe; joint: weights and mask are trained together in "
             "the search (the recipe for the weights), the binary mask is evaluated, no retraining (methods with a "
             "search loop)", REGIMES, since_start=True)
cell_setting("epochs", 10, "search epochs per cell (imp: per round)", since_start=True, budget=True,
             check=at_least(1))
cell_setting("batch_size", 128, "batch size", since_start=True, check=at_least(1))
cell_setting("val_size", 0.1, "fraction of the training split held out for validation, a fixed split (0: "
             "train on all of it, as open_lth and Synaptic-Flow do; the validation columns stay empty; bench tune "
             "needs some)", since_start=True, check=lambda v: None if 0.0 <= v < 1.0 else f"{v} is outside [0, 1)")
cell_setting("amp", False, "bf16 autocast in training steps (evaluation in fp32)")
cell_setting("train_size", 0, "train on a fixed random subset of N training examples, the same for every cell and "
             "seed (validation and test untouched; 0: all)", budget=True,
             check=at_least(0, " (0 for the whole training split)"))
cell_setting("activation", "relu", "nonlinearity replacing the model's nn.ReLU modules (classic nets and "
             "torchvision ResNets): relu, prelu (PReLU, slope 0.25 at init, trained with the weights), leaky "
             "(LeakyReLU 0.01)", ACTIVATIONS)

MAX_CELLS = 100_000  # the most cells one sweep plans (10^4 plan in about 3.5 s; a results folder of 10^5 rows is
# still read whole on every resume)
TUNING_OUTCOME = ("hparams", "tuned")  # what a tuned configuration sets; the rest of a cell's identity is its key
NOT_TUNED_FOR = ("seed", "sanity")  # a tuned configuration serves every seed and sanity check of its cells


def untuned_settings() -> set[str]:
    """The settings a tuned configuration is not keyed by: what tuning sets, seed, sanity check and budgets."""
    budgets = {s.name for s in CELL_SETTINGS.values() if s.budget} | {"train_epochs"}
    return {*TUNING_OUTCOME, *NOT_TUNED_FOR, *budgets}


@dataclass(frozen=True, init=False)
class Cell:
    """One unit of work: one method on one model and dataset at one target and seed, with the sweep's cell
    settings (`CELL_SETTINGS`: ``cell.epochs``, ``cell.regime``, ...; `settings` holds those away from their
    default, and ``Cell(..., epochs=3)`` sets one).

    Fields added after the first results were written are declared with `later(default)` (cell settings with
    ``since_start=False``): the id omits them at their default, so earlier results keep their ids
    (`tests/test_sweep.py` pins a few).
    """

    method: str
    arch: str
    dataset: str
    target_sparsity: float
    seed: int
    granularity: str = "unstructured"
    weight_init: str = "scaled_signed_constant"  # the first default: a cell id names its init unless it is this
    exclude: tuple[str, ...] = ()
    hparams: tuple[tuple[str, Any], ...] = ()
    train_epochs: int = later(0)  # weight training after the search: weak regime, and dense
    sanity: str = later("none")
    tuned: str = later("")  # "study:trial" of the `bench tune` configuration in `hparams`, "" for defaults
    train: tuple[tuple[str, Any], ...] = later(())  # weight-training recipe fields that differ from `Recipe()`
    settings: tuple[tuple[str, Any], ...] = ()  # cell settings away from their default, sorted by name

    def __init__(self, method: str, arch: str, dataset: str, target_sparsity: float, seed: int,
                 granularity: str = "unstructured", weight_init: str = "scaled_signed_constant",
                 exclude: tuple[str, ...] = (), hparams: tuple[tuple[str, Any], ...] = (), train_epochs: int = 0,
                 sanity: str = "none", tuned: str = "", train: tuple[tuple[str, Any], ...] = (),
                 settings: tuple[tuple[str, Any], ...] = (), **named: Any) -> None:
        unknown = [k for k in [*dict(settings), *named] if k not in CELL_SETTINGS]
        if unknown:
            raise TypeError(f"Cell has no setting {', '.join(unknown)} (declared: {', '.join(CELL_SETTINGS)})")
        values = {**dict(settings), **named}
        for k, v in dict(method=method, arch=arch, dataset=dataset, target_sparsity=target_sparsity, seed=seed,
                          granularity=granularity, weight_init=weight_init, exclude=tuple(exclude),
                          hparams=tuple(hparams), train_epochs=train_epochs, sanity=sanity, tuned=tuned,
                          train=tuple(tuple(x) for x in train),
                          settings=tuple(sorted((k, v) for k, v in values.items()
                                                if v != CELL_SETTINGS[k].default))).items():
            object.__setattr__(self, k, v)

    def __getattr__(self, name: str) -> Any:
        declared = CELL_SETTINGS.get(name)
        if declared is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return dict(self.__dict__.get("settings", ())).get(name, declared.default)

    def identity(self) -> dict[str, Any]:
        """Every setting as it enters the id: the fields (`later` ones at their default left out), each cell
        setting (one declared ``since_start=False`` only away from its default), the method's hyperparameters
        (`later` ones at their default left out)."""
        settings = {k: v for k, v in identity(self).items() if k != "settings"}
        for s in CELL_SETTINGS.values():
            value = getattr(self, s.name)
            if s.since_start or value != s.default:
                settings[s.name] = value
        settings["hparams"] = without_later_defaults(dict(self.hparams), get_method(self.method).Hparams)
        return settings

    @property
    def id(self) -> str:
        return digest(self.identity())

    @property
    def experiment(self) -> str:
        """The id of every setting but the seed: the cells whose rows are one experiment's seeds (a report
        averages rows only within one experiment; row column ``experiment``)."""
        return digest({k: v for k, v in self.identity().items() if k != "seed"})

    def tuned_key(self) -> str:
        """What a `bench tune` configuration is for: every setting but what tuning sets, the seed, the
        sanity check and the budgets (a configuration found in a short search serves a long one)."""
        return digest({k: v for k, v in self.identity().items() if k not in untuned_settings()})

    def replace(self, **changes: Any) -> "Cell":
        return Cell(**{**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Every field and every cell setting by name (``plan.json``; `from_dict` reads it back)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "settings"}
        return {**out, **{name: getattr(self, name) for name in CELL_SETTINGS}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Cell":
        """The cell of a `to_dict` (JSON lists and mappings back to tuples)."""
        d = dict(d)
        d["hparams"] = tuple(sorted(dict(d.get("hparams", {})).items()))
        return cls(**d)

    def build_hparams(self):
        return get_method(self.method).Hparams(**dict(self.hparams))

    @property
    def recipe(self) -> Recipe:
        """The weight-training recipe, with the architecture's own rate where none was given."""
        return Recipe(**dict(self.train)).for_arch(self.arch)


def digest(settings: dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of `settings` as sorted JSON (cell and experiment ids)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def parse_value(raw: Any, typ: type, what: str) -> Any:
    """Coerce a flag or YAML value to the dataclass field's type, with a clear error. Nothing is rounded or
    reinterpreted: 1.5 is no int, true is no number, 1 is no switch."""
    if isinstance(raw, typ) and not (typ in (int, float) and isinstance(raw, bool)):
        return raw
    wrong = isinstance(raw, bool) and typ in (int, float) or isinstance(raw, float) and typ is int \
        or isinstance(raw, (int, float)) and typ is bool or isinstance(raw, (list, dict)) and typ is not list
    if wrong:
        raise UserError(f"{what}: expected {typ.__name__}, got {raw!r}")
    try:
        if typ is bool:
            if str(raw).lower() in ("1", "true", "yes", "on"):
                return True
            if str(raw).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        return typ(raw)
    except (TypeError, ValueError):
        raise UserError(f"{what}: expected {typ.__name__}, got {raw!r}") from None


def method_hparams(method: str, overrides: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The method's full hyperparameters (defaults filled in) with `overrides` applied and validated."""
    cls = get_method(method).Hparams
    types = {f.name: type(f.default) for f in fields(cls)}
    for key in overrides:
        if key not in types:
            raise UserError(f"unknown hyperparameter {method}.{key}; {method} has: {', '.join(types)}")
    values = {k: parse_value(v, types[k], f"{method}.{k}") for k, v in overrides.items()}
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{method}.{key} = {value} is not a finite number")
        if (key == "lr" or key.endswith("_lr")) and isinstance(value, float) and value <= 0:
            raise UserError(f"{method}.{key} = {value}: a learning rate must be > 0")
        if key == "momentum" and not 0 <= value < 1:
            raise UserError(f"{method}.{key} = {value} is outside [0, 1)")
    try:
        hp = cls(**values)
    except ValueError as e:
        raise UserError(str(e)) from None
    return tuple(sorted(dataclasses.asdict(hp).items()))


def hparam_grid(method: str, overrides: dict[str, Any]) -> list[tuple[tuple[str, Any], ...]]:
    """Every configuration of `method` the overrides describe: a value that is a list (YAML) or holds commas
    (``--set crbg.lam=0.1,1,10``) is an axis of the grid, crossed with the others like sparsity and seeds."""
    axes = {k: _values(v) for k, v in overrides.items()}
    return [method_hparams(method, dict(zip(axes, combo))) for combo in itertools.product(*axes.values())]


def _values(raw: Any) -> list[Any]:
    items = raw if isinstance(raw, list) else str(raw).split(",") if isinstance(raw, str) and "," in raw else [raw]
    items = [v.strip() if isinstance(v, str) else v for v in items]
    if not items or any(v == "" for v in items):
        raise UserError(f"empty value in hyperparameter list {raw!r}")
    return items


def train_recipe(values: dict[str, Any]) -> Recipe:
    """A `Recipe` from flag or YAML values (``train:`` mapping), coerced and validated with one-line errors."""
    if not isinstance(values, dict):
        raise UserError("train must map recipe fields to values, e.g. {optimizer: adam, lr: 0.0012}")
    types = {f.name: type(f.default) for f in fields(Recipe)}
    unknown = [k for k in values if k not in types]
    if unknown:
        raise UserError(f"unknown training setting(s) {', '.join(unknown)}; known: {', '.join(types)}")
    try:
        return Recipe(**{k: parse_value(v, types[k], f"train.{k}") for k, v in values.items()})
    except ValueError as e:
        raise UserError(str(e)) from None


def parse_sets(items: list[str]) -> dict[str, dict[str, str]]:
    """``["crbg.lr=0.01", ...]`` -> ``{"crbg": {"lr": "0.01"}}``."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, param = key.partition(".")
        if not sep or not dot or not param:
            raise UserError(f"--set {item!r}: expected METHOD.PARAM=VALUE, e.g. crbg.lr=0.01")
        out.setdefault(method.strip(), {})[param.strip()] = value.strip()
    return out


def accepts_cell_settings(cls: type) -> type:
    """Let the dataclass `cls` take its cell settings as keywords (``SweepSpec(epochs=3)``) into `settings`."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args: Any, settings: dict[str, Any] | None = None, **kwargs: Any) -> None:
        named = {k: kwargs.pop(k) for k in list(kwargs) if k in CELL_SETTINGS}
        init(self, *args, settings={**(settings or {}), **named}, **kwargs)

    cls.__init__ = __init__
    return cls


@accepts_cell_settings
@dataclass
class SweepSpec:
    """Every axis of a sweep plus the run settings. Field names are the YAML keys and the flags."""

    methods: list[str] = setting(["crbg", "edgepopup"], "comma-separated methods")
    arch: list[str] = setting(["lenet300"], "comma-separated architectures")
    dataset: list[str] = setting(["mnist"], "comma-separated datasets")
    sparsity: list[float] = setting([0.5, 0.8, 0.9], "target sparsities in (0, 1)")
    seeds: list[int] = setting([0], "seeds")
    granularity: list[str] = setting(["unstructured"], "unstructured and/or structured; methods skip what they lack")
    train_epochs: int | None = setting(None, "weight-training epochs after the search in the weak regime, and for "
                                       "dense (default: --epochs)")
    sanity: bool = setting(False, "add sanity-check cells for every mask: random (same layer sparsities), shuffle "
                           "(within each unit), reinit (same mask, new weights); checks resume from their parent's "
                           "finished search instead of repeating it")
    compile: bool = setting(False, "torch.compile the training forward (first epoch pays the compilation)")
    measure_latency: bool = setting(False, "time one forward pass of the dense model and of the ticket (dense "
                                    "weights with zeros; Linear layers as torch.sparse CSR) on the CPU, batch 1 and "
                                    "64, median of 30 after warm-up: columns latency_ms_<form>_b<batch> (not part "
                                    "of the cell id)")
    weight_init: str = setting("auto", "initial weights: auto (strong regime midscaled_signed_constant for crbg, cs "
                               "and cts, scaled_signed_constant for edgepopup and kaiming_normal for dense and the "
                               "pruning-at-init baselines; weak regime kaiming_normal for all), " + ", ".join(
                                   WEIGHT_INITS) + " (scaled: fan_in x density; midscaled: fan_in x sqrt(density))")
    exclude: list[str] = setting([], "glob patterns of module names never masked")
    tuned: str | None = setting(None, "run each cell with the best configuration `bench tune` found for its method, "
                                "arch, dataset, granularity, regime, weight init, activation and target "
                                "(DIR/tuned.yaml); cells without one use the defaults; rows record "
                                "tuned=study:trial or default, and reports show the two as separate series",
                                metavar="DIR")
    train: dict[str, Any] = field(default_factory=dict)  # `Recipe` fields (flags --train-<field>)
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)  # --set METHOD.PARAM=VALUE
    device: str = setting("auto", "auto (CUDA when available), cpu, cuda, cuda:1, ...")
    threads: int = setting(0, "torch CPU threads each cell runs with (0: the cores divided by --workers; a Ray "
                           "task: its CPUs). A row does not depend on it where the CPU's matrix products do not "
                           "(MKL's strict mode, on by default; tested on MLPs); convolutions are not guaranteed: "
                           "give every executor the same --threads to make their rows agree")
    data_root: str | None = setting(None, "dataset folder (default $TICKETBENCH_DATA or ./data)")
    out: str | None = setting(None, "output folder (default results/<arch>_<dataset>)")
    name: str | None = setting(None, "name of the run folder under results/ when --out is not given")
    settings: dict[str, Any] = field(default_factory=dict)  # the cell settings (`CELL_SETTINGS`) given, by name

    def __getattr__(self, name: str) -> Any:  # spec.epochs, spec.regime, ...: a cell setting
        declared = CELL_SETTINGS.get(name)
        if declared is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return self.__dict__.get("settings", {}).get(name, declared.default)

    def __post_init__(self) -> None:
        for axis in ("methods", "arch", "dataset", "sparsity", "seeds", "granularity"):
            if not getattr(self, axis):
                raise UserError(f"--{axis} is empty: give at least one" + (f" (bench list {axis})" if axis in (
                    "methods", "arch") else ""))
        for seed in self.seeds:
            if not 0 <= seed < 2**32:
                raise UserError(f"seed {seed} is outside 0..2**32-1")
        for m in self.methods:
            if m not in METHODS:
                raise UserError(f"unknown method {m!r}; available: {', '.join(sorted(METHODS))}")
        for s in self.sparsity:
            if not 0.0 < s < 1.0:
                raise UserError(f"sparsity {s} is outside (0, 1)")
        for g in self.granularity:
            if g not in GRANULARITIES:
                raise UserError(f"unknown granularity {g!r}; choose from {', '.join(GRANULARITIES)}")
        unknown = [k for k in self.settings if k not in CELL_SETTINGS]
        if unknown:
            raise UserError(f"unknown setting(s) {', '.join(unknown)}")
        for name, value in self.settings.items():
            problem = CELL_SETTINGS[name].problem(value)
            if problem:
                raise UserError(problem if problem.startswith("unknown") else f"{name} {problem}")
        elsewhere = [m for m in self.methods if self.regime not in get_method(m).regimes]
        if elsewhere:
            raise UserError(f"{', '.join(elsewhere)} run{'s' if len(elsewhere) == 1 else ''} in the {' or '.join(get_method(elsewhere[0]).regimes)} regime "
                            f"only, not --regime {self.regime}: run them in a sweep of their own")
        if self.regime == "joint":
            fixed = [m for m in self.methods if not (get_method(m).searches or get_method(m).dense)]
            if fixed:
                raise UserError(f"--regime joint trains the weights during the mask search, and {', '.join(fixed)} "
                                f"fix their mask before any training: run them with --regime weak")
        if self.weight_init != "auto" and self.weight_init not in WEIGHT_INITS:
            raise UserError(f"unknown weight init {self.weight_init!r}; choose from auto, {', '.join(WEIGHT_INITS)}")
        if self.threads < 0:
            raise UserError(f"threads must be at least 1 (or 0 for the default), got {self.threads}")
        if self.train_epochs is not None and self.train_epochs < 1:
            raise UserError("train_epochs must be at least 1")
        if self.name is not None and (not self.name or Path(self.name).name != self.name or self.name in (".", "..")):
            raise UserError(f"--name {self.name!r} must be a plain folder name (it is created under results/; "
                            f"use --out for another place)")
        self._recipe = train_recipe(self.train)
        for m in self.hparams:
            if m not in METHODS:
                raise UserError(f"hyperparameters given for unknown method {m!r}")
        # every method given hyperparameters is validated, also one this run does not include
        self._method_hparams = {m: hparam_grid(m, self.hparams.get(m, {})) for m in [*self.methods, *self.hparams]}
        for m in self.methods:
            for hp in self._method_hparams[m]:
                try:
                    get_method(m).Hparams(**dict(hp)).check_regime(self.regime)
                except ValueError as e:
                    raise UserError(str(e)) from None
        self._tuned = load_tuned(Path(self.tuned)) if self.tuned else {}
        unused = [m for m in self.hparams if m not in self.methods]  # once the whole spec is valid
        if unused:
            log(f"bench: warning: --set for {', '.join(unused)}, which this sweep does not run (--methods "
                f"{','.join(self.methods)}): ignored")

    @classmethod
    def from_sources(cls, config: Path | None, flags: dict[str, Any]) -> "SweepSpec":
        """Defaults, then the YAML file, then the flags that were given (not None)."""
        values: dict[str, Any] = load_yaml(config) if config else {}
        for key, value in flags.items():
            if value is None:
                continue
            if key == "hparams":
                for method, params in value.items():
                    values.setdefault("hparams", {}).setdefault(method, {}).update(params)
            elif key == "train" and isinstance(values.get("train", {}), dict):
                values["train"] = {**values.get("train", {}), **value}
            else:
                values[key] = value
        return build_spec(cls, values, str(config) if config else "flags")

    def cells(self) -> list[Cell]:
        """The grid's cells. `dense` has one cell per (arch, dataset, seed) at target 0; with `sanity`, every
        mask-producing cell is followed by its ablations (`methods.sanity`). A grid of more than `MAX_CELLS`
        is refused with its count before any is built."""
        grid = sum(len(self._method_hparams[m]) for m in self.methods) * math.prod(
            len(axis) for axis in (self.arch, self.dataset, self.granularity, self.sparsity, self.seeds))
        grid *= len(SANITY) if self.sanity else 1
        if grid > MAX_CELLS:
            raise UserError(f"the sweep has up to {grid:,} cells, more than the {MAX_CELLS:,} one bench run plans: "
                            f"split it into several runs (fewer --seeds, --sparsity or --set values each)")
        if grid > 10_000:
            log(f"bench: planning up to {grid:,} cells ...")
        out: dict[str, Cell] = {}
        for method, arch, dataset, gran, target, seed in itertools.product(
                self.methods, self.arch, self.dataset, self.granularity, self.sparsity, self.seeds):
            cls = get_method(method)
            if gran not in cls.granularities:
                continue
            point = dict(method=method, arch=arch, dataset=dataset, granularity=gran, seed=int(seed),
                         target_sparsity=0.0 if cls.dense else float(target))
            configs, tuned = self._method_hparams[method], ""
            entry = self._tuned.get(self._cell(cls, (), "", **point).tuned_key())
            if entry is not None:  # the tuned configuration, under any --set of this command
                configs = hparam_grid(method, {**entry["hparams"], **self.hparams.get(method, {})})
                tuned = f"{entry['study']}:{entry['trial']}"
            for hparams in configs:
                base = self._cell(cls, hparams, tuned, **point)
                for variant in SANITY if self.sanity and not cls.dense else ("none",):
                    cell = base.replace(sanity=variant)
                    out.setdefault(cell.id, cell)
        if not out:
            raise UserError(f"no cell to run: none of the methods {self.methods} supports granularity "
                            f"{self.granularity}")
        return list(out.values())

    def _cell(self, cls: Any, hparams: tuple, tuned: str, **point: Any) -> Cell:
        """The cell of one grid point: this sweep's settings, the method's resolved init and training epochs."""
        trains = self.regime == "weak" or cls.dense
        return Cell(**point, settings=tuple(self.settings.items()), hparams=hparams, tuned=tuned,
                    weight_init=cls.default_init(self.regime) if self.weight_init == "auto" else self.weight_init,
                    exclude=tuple(self.exclude), train=self._recipe.overrides(),
                    train_epochs=(self.train_epochs or self.epochs) if trains else 0)

    @property
    def run_name(self) -> str:
        return self.name or f"{'-'.join(self.arch)}_{'-'.join(self.dataset)}".replace(":", "_").replace("/", "_")


def manifest_key(entry: dict[str, Any]) -> str:
    """The `Cell.tuned_key` of the cells a tuned configuration is for, from the settings its `tuned.yaml` entry
    names (entries written before a setting was part of the key hold its default; weight init ``auto``: the
    method's own)."""
    names = {f.name for f in fields(Cell)} | set(CELL_SETTINGS)
    known = {k: v for k, v in entry.items() if k in names and k not in TUNING_OUTCOME}
    if known.get("weight_init", "auto") == "auto":
        known["weight_init"] = get_method(entry["method"]).default_init(known.get("regime", "strong"))
    known["target_sparsity"] = float(known["target_sparsity"])
    known["train"] = tuple(sorted(dict(known.get("train", {})).items()))
    return Cell.from_dict({"seed": 0, **known}).tuned_key()


def manifest_entry(cell: Cell) -> dict[str, Any]:
    """The settings a `tuned.yaml` entry for `cell`'s configuration names (`manifest_key` reads them back)."""
    d = {k: v for k, v in cell.to_dict().items() if k not in untuned_settings()}
    return {**d, "exclude": list(cell.exclude), "train": dict(cell.train)}


def load_tuned(folder: Path) -> dict[str, dict[str, Any]]:
    """`bench tune`'s manifest in `folder` (tuned.yaml), keyed by `manifest_key`."""
    path = folder / "tuned.yaml" if folder.is_dir() else folder
    if not path.is_file():
        raise UserError(f"--tuned {folder}: no tuned.yaml there (bench tune writes it into its output folder)")
    data = load_yaml(path)
    try:
        return {manifest_key(e): e for e in data["configs"]}
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path}: not a bench tune manifest (expected configs: [{{method, arch, ...}}])") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML itself keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


MAX_CONFIG_BYTES = 1 << 20  # a settings file is a few kB; anything past this is not one


def load_yaml(path: Path) -> dict[str, Any]:
    """A settings file's top-level mapping: a regular file of at most `MAX_CONFIG_BYTES` (a FIFO or a device
    would block or never end), each key once."""
    if path.exists() and not path.is_dir() and not path.is_file():
        raise UserError(f"{path}: not a regular file (a pipe or a device); --config takes a YAML file")
    if path.is_file() and path.stat().st_size > MAX_CONFIG_BYTES:
        raise UserError(f"{path}: {path.stat().st_size} bytes, more than a settings file's {MAX_CONFIG_BYTES}")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder; --config takes a YAML file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path} ({getattr(e, 'strerror', None) or type(e).__name__})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"malformed YAML in {path}{where}: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of settings at the top level")
    return data


def build_spec(cls: type[SweepSpec], values: dict[str, Any], source: str) -> SweepSpec:
    """Validate keys and coerce scalars/lists to the declared field types."""
    known = {f.name: f for f in fields(cls) if f.name != "settings"}
    kwargs: dict[str, Any] = {"settings": {}}
    for key, value in values.items():
        if key in CELL_SETTINGS:
            if value is not None:
                kwargs["settings"][key] = parse_value(value, CELL_SETTINGS[key].kind, f"{source}: {key}")
            continue
        if key not in known:
            raise UserError(f"{source}: unknown setting {key!r}; known: {', '.join([*known, *CELL_SETTINGS])}")
        default = known[key].default_factory() if known[key].default_factory is not dataclasses.MISSING \
            else known[key].default
        if isinstance(default, list):
            items = value if isinstance(value, list) else [value]
            elem = {"sparsity": float, "seeds": int}.get(key, str)
            kwargs[key] = [parse_value(v, elem, f"{source}: {key}") for v in items]
        elif key == "train":
            kwargs[key] = value  # `train_recipe` validates it
        elif key == "hparams":
            if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
                raise UserError(f"{source}: hparams must map method -> {{param: value}}")
            kwargs[key] = value
        elif value is not None and key == "train_epochs":
            kwargs[key] = parse_value(value, int, f"{source}: {key}")
        elif value is not None and default is not None:
            kwargs[key] = parse_value(value, type(default), f"{source}: {key}")
        else:
            kwargs[key] = value
    return cls(**kwargs)
