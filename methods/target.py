"""Target-sparsity control shared by the penalty-based methods (CRBG, Continuous Sparsification).

A penalty weight lambda is a dual variable updated every step so that the density of the binary mask
follows a cubic ramp (Zhu and Gupta 2017) from where it starts down to 1 - target; an exact projection
at the end then removes the last few hundredths: global by score (`Pruner.project_global`, default), or
``projection`` "proportional", the same share of each layer's kept entries (`keep_proportional`).

Budget independence: every rate is stated per fraction of the search, not per step. ``lam_rate`` is
how far log lambda may move over the whole search at full error (`BAND`; per step: lam_rate /
total_steps, or / `methods.schedules.MIN_SEARCH_STEPS` in a shorter search), and the ramp ends at the
fraction ``ramp``. A search of 500 steps and one of 500,000 therefore follow the same lambda and density trajectories in training-fraction time; a per-step rate
(the earlier ``lam_lr``) needed thousands of steps to find a lambda two orders of magnitude away and
left short searches far from their target, for the projection to cut weights the network was using.

Two-sided (``two_sided``, default): a second dual variable enforces density >= target, so the penalty
weight lambda_pos - lambda_neg turns negative (it rewards open mask entries) when a search ends up
sparser than its target. One-sided control could only stop pushing there, and the projection then
added back entries the search had closed (one-sided CS at sparsity 0.5: 2.7 % added, validation
95.5 -> 92.8 %). CS itself stays one-sided (see `methods.cs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from methods.hparams import Hparams, later
from methods.schedules import search_length
from methods.sparsity import kth_largest

TARGET_MODES = ("dual+project", "dual", "project", "none")
PROJECTIONS = ("global", "proportional")
QUANTILE_SAMPLE = 1 << 16  # entries the density floor's quantile is estimated on (density error ~0.002)
BAND = 0.1  # a density off its target by this fraction of it moves log lambda at the full rate


@dataclass
class TargetHparams(Hparams):
    """The target-control knobs of a `TargetControlled` method (its own `lam`, the initial lambda, beside)."""

    method: ClassVar[str]
    lam_rate: float = 40.0  # log-lambda units over the whole search at full error (per step: / steps)
    lam_down: float = 10.0
    ramp: float = 0.5
    lead: float = 0.05  # the controller acts on the density predicted this fraction of the search ahead
    two_sided: bool = True  # also density >= target: a negative penalty weight reopens gates after an overshoot
    target_mode: str = "dual+project"
    projection: str = later("global")  # how the final projection trims the search's last error (`PROJECTIONS`)

    def __post_init__(self) -> None:
        if not (self.lam_rate > 0 and self.lam_down > 0 and 0 < self.ramp <= 1 and 0 <= self.lead <= 1):
            raise ValueError(f"{self.method}: lam_rate and lam_down must be > 0, ramp in (0, 1], lead in [0, 1]")
        if self.target_mode not in TARGET_MODES:
            raise ValueError(f"{self.method}.target_mode must be one of {', '.join(TARGET_MODES)}, "
                             f"got {self.target_mode!r}")
        if self.projection not in PROJECTIONS:
            raise ValueError(f"{self.method}.projection must be one of {', '.join(PROJECTIONS)}, "
                             f"got {self.projection!r}")


class DensityController:
    """Dual ascent in log space on the constraint ``density <= ramp(t)``, t the fraction of the search
    done, at ``rate / total_steps`` per step (so ``rate`` is per search, whatever its length).

    The density responds to lambda like a switch: hardly at all below a critical lambda (set by the
    model's task gradients, often orders of magnitude from the initial one), then every gate near its
    threshold at once. Pure integral control winds up while the density lags and then overshoots far
    past the target. So the error is taken on the density predicted `lead` of the search ahead (its
    slope, an average over the last `lead` / 5 of the search, extrapolated): lambda stops rising as
    soon as the density moves fast enough to meet the ramp, and falls before an overshoot, not after.
    The error is relative to the target and saturates at `BAND` (10 %) of it. A mask entry pushed far below its threshold loses its task
    gradient, so an overshoot is hard to undo: lambda falls `down` times faster than it rises. The state
    lives on the device, so an update needs no host-device sync.
    """

    def __init__(self, lam: float, rate: float, down: float, ramp: float, lead: float, target_density: float,
                 start_density: Tensor, device: torch.device, two_sided: bool = True) -> None:
        self.log_lam = torch.tensor(math.log(lam), device=device)
        self.log_neg = torch.tensor(math.log(lam), device=device)  # two-sided: the weight that opens gates again
        self.two_sided = two_sided
        self.rate, self.down, self.ramp, self.lead = rate, down, ramp, lead
        self.final = target_density
        self.start = max(target_density, float(start_density))
        self.last = start_density.detach().clone().to(device)  # the density after the previous step
        self.slope = torch.zeros((), device=device)  # d density / d (fraction of the search), averaged
        self.total_steps = 1

    @property
    def lam(self) -> Tensor:
        """The signed penalty weight: negative while the density is below the final target (two-sided)."""
        return self.log_lam.exp() - self.log_neg.exp() if self.two_sided else self.log_lam.exp()

    def to(self, device: torch.device) -> None:
        self.log_lam, self.log_neg, self.last, self.slope = (
            t.to(device) for t in (self.log_lam, self.log_neg, self.last, self.slope))

    def target(self, step: float) -> float:
        """Cubic ramp from the starting density to the final one over the first `ramp` fraction of steps."""
        t = min(1.0, step / max(1.0, self.ramp * self.total_steps))
        return self.final + (self.start - self.final) * (1.0 - t) ** 3

    def update(self, density: Tensor, step: int) -> None:
        n = self.total_steps
        smooth = min(1.0, 5.0 / (self.lead * n)) if self.lead > 0 else 1.0
        self.slope = self.slope + smooth * ((density - self.last) * n - self.slope)
        self.last = density.detach().clone()
        predicted = (density + self.lead * self.slope).clamp_min(0.0)
        ahead = self.target(step + self.lead * n)
        err = ((predicted - ahead) / (BAND * ahead)).clamp(-1.0, 1.0)
        per_step = self.rate / search_length(n)  # `rate` per search (at least MIN_SEARCH_STEPS long)
        rate = per_step * torch.where(err < 0, self.down, 1.0)
        self.log_lam = (self.log_lam + rate * err).clamp(-12.0, 12.0)
        if self.two_sided:  # the constraint density >= final, with the same rates
            low = ((self.final - predicted) / (BAND * self.final)).clamp(-1.0, 1.0)
            self.log_neg = (self.log_neg + per_step * torch.where(low < 0, self.down, 1.0) * low).clamp(-12.0, 12.0)

    def state_dict(self) -> dict[str, Tensor]:
        return {"log_lam": self.log_lam, "log_neg": self.log_neg, "last": self.last, "slope": self.slope}

    def load_state_dict(self, state: dict[str, Tensor], device: torch.device) -> None:
        self.log_lam, self.log_neg, self.last, self.slope = (
            state[k].to(device) for k in ("log_lam", "log_neg", "last", "slope"))


class TargetControlled:
    """Mixin for a `Pruner` whose penalty weight lambda is steered to the target (hyperparameters: a
    `TargetHparams` with `lam`): dual updates after every step, the exact global
    projection at the end, and lambda in checkpoints. The host defines `density()`, the current density of
    its binary mask, and calls `init_control()` once its masks exist and `start_control(total_steps)`
    when it builds its optimiser."""

    penalty_weight = "lam"  # the hyperparameter that sets the sparsity when target_mode is none (reports' x)

    def init_control(self) -> None:
        self.control = DensityController(self.hp.lam, self.hp.lam_rate, self.hp.lam_down, self.hp.ramp,
                                         self.hp.lead, 1.0 - self.target, self.density(), self.device,
                                         self.hp.two_sided and "dual" in self.hp.target_mode)  # else lambda stays hp.lam

    def start_control(self, total_steps: int) -> None:
        self.control.total_steps = total_steps
        self.control.to(self.device)  # the trainer may have moved the model

    def on_step(self, step: int) -> None:
        if "dual" in self.hp.target_mode:
            self.control.update(self.density(), step)

    @property
    def exact_target(self) -> bool:
        return "project" in self.hp.target_mode  # without the projection the sparsity is an outcome

    def finalize(self) -> None:
        """The exact projection to the target: `global` keeps the best scores across all layers,
        `proportional` trims (or tops up) each layer in proportion to what its binary mask keeps now."""
        if "project" not in self.hp.target_mode:
            return super().finalize()
        kept = [int(m.binary_mask().sum()) for m in self.gated()] if self.hp.projection == "proportional" else None
        self.project_global(1.0 - self.target, shares=kept)

    def outcome(self) -> dict:
        return {**super().outcome(), "lambda_final": float(self.control.lam)}

    def extra_state(self) -> dict:
        return {**super().extra_state(), "control": self.control.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.control.load_state_dict(state["control"], self.device)


class DensityFloor:
    """Density >= target for a mask whose binary form is ``score > centre`` (CS; CTS's fill reads the same
    centre to find the logits its top-k keeps): every step the centre becomes min(0, q), q the target
    quantile of the scores. Above the target the method is unchanged; where
    its loss alone would close more entries than the target allows, the threshold moves down with it, so
    the mask the search trains is the mask the final projection keeps. q is estimated on fixed positions
    (about `sample` in all, in proportion to each mask's size; every entry of smaller models), on the
    device: no host-device sync. Its relative error on the kept count is about 1 / sqrt(sample x density)."""

    def __init__(self, scores: list[Tensor], density: float, sample: int = QUANTILE_SAMPLE) -> None:
        gen = torch.Generator().manual_seed(0)
        n = sum(s.numel() for s in scores)
        frac = min(1.0, sample / n)
        self.sample = [torch.randperm(s.numel(), generator=gen)[:max(1, round(frac * s.numel()))].to(s.device)
                       for s in scores]
        self.density = density

    def to(self, device: torch.device) -> None:
        self.sample = [idx.to(device) for idx in self.sample]

    @torch.no_grad()
    def centre(self, scores: list[Tensor], floor_only: bool = True) -> Tensor:
        """min(0, q); with `floor_only` False, q itself (the binary mask then holds the target on both sides)."""
        vals = torch.cat([s.flatten()[idx] for s, idx in zip(scores, self.sample)])
        q = kth_largest(vals, max(1, round(self.density * vals.numel())))
        return q.clamp(max=0.0) if floor_only else q
