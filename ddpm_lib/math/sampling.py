"""Samplers: DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), DDIM (Song et al. 2021) and
DPM-Solver++ (Lu et al. 2022, the multistep second-order "2M" form).

Three pieces, as in EDM's sampler (Karras et al. 2022, ``example.py``):

* :class:`SamplerSpec`: one sampler setting as one frozen value (sampler, steps, eta, spacing, order,
  guidance), which checks itself and names itself ("DDIM-50", "DDIM-50 eta 1", "DPM-Solver++-20 w=3");
* :class:`Denoiser`: the network as the samplers see it, built once from (network, diffusion,
  labels, guidance, clip range): ``denoiser(x_t, t) -> (eps, x0)``, whatever the network predicts;
* the three sampling loops, each ``(denoiser, diffusion, start noise, spec, generator)``, read top
  to bottom with a pointer to the equation of each line; :func:`sample` picks one by ``spec.sampler``.

A run may start at any timestep t instead of T-1 (``start_step``): given x_t, e.g. a real image noised
to t, it denoises from there (SDEdit, Meng et al. 2021).

Random numbers: the start noise x_T is given; a stochastic step (DDPM, DDIM with eta > 0) draws one
standard normal tensor per step from ``generator``. That is a ``torch.Generator`` (one stream for the
batch) or an :class:`ImageGenerators` (one stream per image, so image i's draws do not depend on the
batch it shares). DDIM with ``eta = 1`` over all T steps consumes the same draws as DDPM with the
posterior variance, and the two agree draw for draw.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ddpm_lib.device import autocast
from ddpm_lib.math.diffusion import GaussianDiffusion, check_labels
from ddpm_lib.math.schedules import NoiseSchedule

SAMPLERS = ("ddpm", "ddim", "dpm_solver")  # DDPM (all T steps), DDIM, DPM-Solver++
SAMPLER_NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "dpm_solver": "DPM-Solver++"}  # how tables name them
SPACINGS = ("trailing", "linspace", "leading", "logsnr")
DDPM_VARIANCES = ("posterior", "beta")
DPM_SOLVER_ORDERS = (1, 2)


# ----- one sampler setting ------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplerSpec:
    """One sampler setting. Frozen: change a copy with :meth:`replace`.

    Attributes:
        sampler: ``"ddpm"`` (Algorithm 2, all T steps), ``"ddim"`` or ``"dpm_solver"`` (DPM-Solver++(2M)).
        steps: network calls of DDIM and DPM-Solver++, 1..T; DDPM takes all T (None, or T itself).
        eta: DDIM's noise: 0 deterministic, 1 as stochastic as DDPM (DDIM only).
        spacing: which timesteps a few-step sampler visits (:func:`sampling_timesteps`).
        order: DPM-Solver++'s order: 2 ("2M") or 1 (DDIM written in lambda).
        guidance: classifier-free guidance weight w for labelled draws (1: plain conditional; 0:
            unconditional). Ho & Salimans write (1 + w') eps_c - w' eps_null: this w is their w' + 1.
        variance: DDPM's sigma_t^2: ``"posterior"`` (beta-tilde, Eq. 7) or ``"beta"`` (beta_t).
    """

    sampler: str
    steps: int | None = None
    eta: float = 0.0
    spacing: str = "trailing"
    order: int = 2
    guidance: float = 1.0
    variance: str = "posterior"

    def __post_init__(self):
        def check(ok: bool, field: str, message: str) -> None:
            if not ok:
                raise ValueError(f"bad sampler setting {field}={getattr(self, field)!r}: {message}")

        check(self.sampler in SAMPLERS, "sampler", f"use one of {SAMPLERS}")
        if self.sampler == "ddpm":
            check(self.steps is None or (isinstance(self.steps, int) and self.steps >= 1), "steps",
                  "DDPM runs all T steps; leave steps out (None)")
        else:
            check(isinstance(self.steps, int) and not isinstance(self.steps, bool) and self.steps >= 1, "steps",
                  f"{SAMPLER_NAMES[self.sampler]} needs a whole number of steps >= 1")
        check(isinstance(self.eta, (int, float)) and 0.0 <= self.eta <= 1.0, "eta", "must lie in [0, 1]")
        check(self.eta == 0.0 or self.sampler == "ddim", "eta", f"only DDIM takes eta; {self.sampler} does not")
        check(self.spacing in SPACINGS, "spacing", f"use one of {SPACINGS}")
        check(self.order in DPM_SOLVER_ORDERS, "order", f"use one of {DPM_SOLVER_ORDERS}")
        check(isinstance(self.guidance, (int, float)) and self.guidance >= 0.0, "guidance", "must be >= 0")
        check(self.variance in DDPM_VARIANCES, "variance", f"use one of {DDPM_VARIANCES}")
        object.__setattr__(self, "eta", float(self.eta))
        object.__setattr__(self, "guidance", float(self.guidance))

    @property
    def name(self) -> str:
        """How tables name this setting: ``DDPM-1000``, ``DDIM-50``, ``DDIM-50 eta 1``,
        ``DPM-Solver++-20``, with `` w=3`` for guided draws and the non-default choices after."""
        name = SAMPLER_NAMES[self.sampler] + (f"-{self.steps}" if self.steps is not None else "")
        if self.eta:
            name += f" eta {self.eta:g}"
        if self.sampler == "dpm_solver" and self.order != 2:
            name += f" order {self.order}"
        if self.sampler != "ddpm" and self.spacing != "trailing":
            name += f" {self.spacing}"
        if self.sampler == "ddpm" and self.variance != "posterior":
            name += f" variance {self.variance}"
        if self.guidance != 1.0:
            name += f" w={self.guidance:g}"
        return name

    def __str__(self) -> str:
        return self.name

    def replace(self, **changes) -> SamplerSpec:
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    def for_diffusion(self, num_steps: int) -> SamplerSpec:
        """This setting for a diffusion of T = ``num_steps``: DDPM's steps become T; more steps than T
        are an error that names both."""
        if self.sampler == "ddpm":
            if self.steps not in (None, num_steps):
                raise ValueError(f"bad sampler setting steps={self.steps}: DDPM runs all T = {num_steps} steps")
            return self.replace(steps=num_steps)
        if self.steps > num_steps:
            raise ValueError(f"bad sampler setting steps={self.steps}: at most T = {num_steps}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def parse(cls, text: str | dict | SamplerSpec) -> SamplerSpec:
        """A spec from its :attr:`name` (``"DDIM-50 eta 1"``, ``"DPM-Solver++-20 w=3"``, ``"DDPM"``), from
        a dict of its fields, or a spec itself; the inverse of :attr:`name`."""
        if isinstance(text, SamplerSpec):
            return text
        if isinstance(text, dict):
            return cls(**text)
        by_name = {v.lower(): k for k, v in SAMPLER_NAMES.items()}
        match = re.fullmatch(r"\s*(ddpm|ddim|dpm-solver\+\+)(?:-(\d+))?((?:\s+\S+(?:\s+[\d.]+)?)*)\s*",
                             str(text), re.IGNORECASE)
        if match is None:
            raise ValueError(f"bad sampler setting {text!r}: write it as a table names it, e.g. 'DDIM-50', "
                             "'DDIM-50 eta 1', 'DPM-Solver++-20', 'DDPM', with ' w=3' for guidance")
        fields = {"sampler": by_name[match.group(1).lower()],
                  "steps": int(match.group(2)) if match.group(2) else None}
        words = match.group(3).split()
        while words:
            word = words.pop(0).lower()
            if word.startswith("w="):
                fields["guidance"] = float(word[2:])
            elif word in ("eta", "order", "variance") and words:
                value = words.pop(0)
                fields[word] = {"eta": float, "order": int, "variance": str.lower}[word](value)
            elif word in SPACINGS:
                fields["spacing"] = word
            else:
                raise ValueError(f"bad sampler setting {text!r}: unknown part {word!r}")
        return cls(**fields)


# ----- the network as the samplers see it ---------------------------------------------------------
class Denoiser:
    """``denoiser(x_t, t) -> (eps, x0)``: the network's estimates of the noise and the clean image.

    Built once per batch from everything that stays fixed while sampling, so the loops below see a
    plain function of (x_t, t), as EDM's sampler sees its ``net``.

    Args:
        network: ``network(x_t, cond[, labels])`` (``diffusion.py`` says what ``cond`` is).
        diffusion: the diffusion the network was trained with (its prediction target converts to eps, x0).
        labels: species indices (B,) for a class-conditional network, or None (its "no label" index).
        guidance: classifier-free guidance weight w for labelled draws (:meth:`GaussianDiffusion.guided_output`);
            None: no guidance (a spec's ``guidance``).
        clip_range: optional (low, high) bounds for x0 (:func:`standardized_range`): the data's real range.
        precision: the network's precision (``device.autocast``); the samplers' arithmetic stays float32+.
    """

    def __init__(self, network: Callable, diffusion: GaussianDiffusion, labels: torch.Tensor | None = None,
                 guidance: float | None = None, clip_range: tuple | None = None, precision: str = "fp32"):
        if labels is not None:
            labels = torch.as_tensor(labels)
            check_labels(network, labels, labels.shape[0] if labels.ndim == 1 else -1)
            labels = labels.long()
        self.network, self.diffusion, self.labels = network, diffusion, labels
        self.guidance, self.clip_range, self.precision = guidance, clip_range, precision

    def __call__(self, x_t: torch.Tensor, t: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps, x0) at x_t (B, C, H, W) and timestep t (an int for the whole batch, or (B,) integers)."""
        if not torch.is_tensor(t):
            t = torch.full((x_t.shape[0],), int(t), device=x_t.device, dtype=torch.long)
        labels = self.labels
        if labels is not None:
            if labels.shape[0] != x_t.shape[0]:
                raise ValueError(f"labels must have shape ({x_t.shape[0]},), one species index per image, "
                                 f"got {tuple(labels.shape)}")
            labels = labels.to(x_t.device)
        with autocast(x_t.device, self.precision):
            return self.diffusion.predict_eps_x0(self.network, x_t, t, self.clip_range, labels, self.guidance)


def standardized_range(mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds of pixel values 0..1 after per-channel standardization: ((0 - mean) / std, (1 - mean) / std).

    Returns two tensors of shape (1, C, 1, 1), usable as a :class:`Denoiser`'s ``clip_range``.
    """
    mean_t = torch.as_tensor(mean, dtype=torch.float64).reshape(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float64).reshape(1, -1, 1, 1)
    return (0.0 - mean_t) / std_t, (1.0 - mean_t) / std_t


# ----- random numbers -------------------------------------------------------------------------------
class ImageGenerators:
    """One ``torch.Generator`` per image (EDM's ``generate.py`` gives each seed its own), so image i's
    draws depend on its own seed only: the same whatever the batch size or the number of images."""

    def __init__(self, seeds: Sequence[int], device):
        self.device = torch.device(device)
        self.generators = [torch.Generator(device=self.device).manual_seed(int(seed)) for seed in seeds]

    def randn(self, shape: Sequence[int], dtype=torch.float32) -> torch.Tensor:
        """A standard normal tensor of ``shape`` = (B, ...), row i from image i's generator."""
        if shape[0] != len(self.generators):
            raise ValueError(f"{len(self.generators)} image generators cannot draw a batch of {shape[0]}")
        return torch.stack([torch.randn(tuple(shape[1:]), generator=g, device=self.device, dtype=dtype)
                            for g in self.generators])


def image_seed(seed: int, index: int) -> int:
    """The seed of image ``index`` of a draw seeded with ``seed`` (splitmix64 of the pair, so nearby
    seeds and indices give unrelated streams)."""
    value = (seed * 0x9E3779B97F4A7C15 + index + 1) & 0xFFFFFFFFFFFFFFFF
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (value ^ (value >> 31)) & 0x7FFFFFFFFFFFFFFF


def standard_normal(like: torch.Tensor, generator: torch.Generator | ImageGenerators | None) -> torch.Tensor:
    """A standard normal tensor shaped like ``like``, from ``generator`` (one stream, or one per image)."""
    if isinstance(generator, ImageGenerators):
        return generator.randn(like.shape, like.dtype).to(like.device)
    return torch.randn(like.shape, device=like.device, dtype=like.dtype, generator=generator)


# ----- timesteps ------------------------------------------------------------------------------------
def _check_steps(num_steps: int, sample_steps: int, spacing: str) -> None:
    if spacing not in SPACINGS:
        raise ValueError(f"unknown timestep spacing {spacing!r}; use one of {SPACINGS}")
    if not isinstance(sample_steps, int) or not 1 <= sample_steps <= num_steps:
        raise ValueError(f"steps must satisfy 1 <= steps <= T = {num_steps}, got {sample_steps!r}")


def ddim_timesteps(num_steps: int, sample_steps: int, spacing: str = "trailing") -> list[int]:
    """The S = ``sample_steps`` decreasing timesteps a few-step sampler visits out of T = ``num_steps``.

    * ``"trailing"`` (default; Lin et al. 2024, Table 2): round(T (S - i) / S) - 1 for i = 0..S-1,
      i.e. T-1, T-1-T/S, ...: always starts at the noisiest step, where the start noise really is
      pure noise.
    * ``"linspace"``: evenly from T-1 down to 0, both ends included.
    * ``"leading"`` (Song et al.'s code): 0, T//S, 2 T//S, ... reversed; it never visits T-1.
    Integer arithmetic only, so every S in 1..T gives exactly S distinct timesteps in 0..T-1. With
    ``sample_steps == num_steps`` all three give T-1, ..., 0. (``"logsnr"`` needs the schedule:
    :func:`sampling_timesteps`.)
    """
    _check_steps(num_steps, sample_steps, spacing)
    T, S = num_steps, sample_steps
    if spacing == "trailing":  # round(T (S - i) / S) - 1, rounding halves up
        return [(2 * T * (S - i) + S) // (2 * S) - 1 for i in range(S)]
    if spacing == "linspace":  # round((T - 1) (S - 1 - i) / (S - 1))
        return [(2 * (T - 1) * (S - 1 - i) + S - 1) // (2 * (S - 1)) if S > 1 else T - 1 for i in range(S)]
    if spacing == "leading":
        return [i * (T // S) for i in reversed(range(S))]
    raise ValueError(f"spacing {spacing!r} needs the schedule: use sampling_timesteps(schedule, ...)")


def logsnr_timesteps(schedule: NoiseSchedule, sample_steps: int) -> list[int]:
    """S decreasing timesteps uniform in lambda = log(alpha / sigma) = log SNR / 2, from t = T-1 to 0
    (Lu et al. 2022's spacing for DPM-Solver), each the discrete step nearest its lambda; where two
    would coincide they are pushed apart, so the S steps stay distinct."""
    T, S = schedule.num_steps, sample_steps
    _check_steps(T, S, "logsnr")
    lambdas = 0.5 * torch.log(schedule.alphas_cumprod.cpu() / (1 - schedule.alphas_cumprod.cpu()))  # increasing down
    targets = torch.linspace(float(lambdas[-1]), float(lambdas[0]), S, dtype=torch.float64)
    steps = [int(torch.argmin((lambdas - target).abs())) for target in targets]
    for i in range(1, S):  # strictly decreasing ...
        steps[i] = min(steps[i], steps[i - 1] - 1)
    for i in range(S - 1, -1, -1):  # ... and never below 0
        steps[i] = max(steps[i], S - 1 - i)
        if i + 1 < S:
            steps[i] = max(steps[i], steps[i + 1] + 1)
    return steps


def sampling_timesteps(schedule: NoiseSchedule, sample_steps: int, spacing: str = "trailing",
                       start_step: int | None = None) -> list[int]:
    """The decreasing timesteps of a ``sample_steps``-step DDIM or DPM-Solver++ run: any of
    :data:`SPACINGS` (``ddim_timesteps``; ``"logsnr"``: :func:`logsnr_timesteps`).

    ``start_step``: the timestep (0..T-1) the run starts at; None: T-1, pure noise. A run that starts
    at t (SDEdit, Meng et al. 2021) spreads its steps over t, ..., 0 as a run of a diffusion with
    t + 1 steps would (the same betas, cut after step t).
    """
    num_steps = check_start_step(schedule.num_steps, start_step) + 1
    if not isinstance(sample_steps, int) or not 1 <= sample_steps <= num_steps:
        raise ValueError(f"steps must satisfy 1 <= steps <= {num_steps} (the timesteps 0..{num_steps - 1} the run "
                         f"starts from), got {sample_steps!r}")
    if num_steps < schedule.num_steps:
        schedule = NoiseSchedule.from_betas(schedule.betas[:num_steps], schedule.name)
    if spacing == "logsnr":
        return logsnr_timesteps(schedule, sample_steps)
    return ddim_timesteps(schedule.num_steps, sample_steps, spacing)


def check_start_step(num_steps: int, start_step: int | None) -> int:
    """The timestep a sampler starts at: ``start_step`` checked to lie in 0..T-1, or T-1 when None."""
    if start_step is None:
        return num_steps - 1
    if isinstance(start_step, bool) or not isinstance(start_step, int) or not 0 <= start_step < num_steps:
        raise ValueError(f"start_step must be a timestep in 0..{num_steps - 1} (T = {num_steps}), got {start_step!r}")
    return start_step


# ----- what the samplers return ---------------------------------------------------------------------
@dataclass
class Trajectory:
    """Snapshots of a reverse process, in sampling order (noisiest first).

    Attributes:
        timesteps: the timestep t of each snapshot (0..T-1), length K.
        x_t: the latent at that step before the update, (K, B, C, H, W), on the CPU.
        pred_x0: the network's estimate of x0 at that step, (K, B, C, H, W), on the CPU.
    """

    timesteps: list[int]
    x_t: torch.Tensor
    pred_x0: torch.Tensor


@dataclass
class SampleOutput:
    """The result of a sampler: ``images`` (B, C, H, W) and, when asked for, a ``trajectory``."""

    images: torch.Tensor
    trajectory: Trajectory | None = None


class _Recorder:
    """Collects trajectory snapshots every ``every`` sampler steps (and at the last one)."""

    def __init__(self, every: int | None, total: int):
        if every is not None and every < 1:
            raise ValueError(f"trajectory_every must be >= 1, got {every}")
        self.every, self.total = every, total
        self.timesteps, self.x_t, self.pred_x0 = [], [], []

    def __call__(self, index: int, t: int, x_t: torch.Tensor, pred_x0: torch.Tensor) -> None:
        if self.every is None:
            return
        if index % self.every == 0 or index == self.total - 1:
            self.timesteps.append(t)
            self.x_t.append(x_t.detach().float().cpu())
            self.pred_x0.append(pred_x0.detach().float().cpu())

    def result(self) -> Trajectory | None:
        if self.every is None:
            return None
        return Trajectory(self.timesteps, torch.stack(self.x_t), torch.stack(self.pred_x0))


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False)


def _check_spec(spec: SamplerSpec, sampler: str, diffusion: GaussianDiffusion) -> SamplerSpec:
    if spec.sampler != sampler:
        raise ValueError(f"{SAMPLER_NAMES[sampler]} was given the setting {spec.name}; use sample(...) to dispatch")
    return spec.for_diffusion(diffusion.num_steps)


# ----- the three samplers ---------------------------------------------------------------------------
@torch.no_grad()
def ddpm_sample(denoiser: Denoiser, diffusion: GaussianDiffusion, noise: torch.Tensor, spec: SamplerSpec,
                generator=None, *, trajectory_every: int | None = None, progress: bool = False,
                start_step: int | None = None) -> SampleOutput:
    """DDPM ancestral sampling over all T steps (Ho et al. 2020, Algorithm 2).

    Each step draws x_{t-1} ~ N(mu_tilde(x_t, x0_hat), sigma_t^2 I), where mu_tilde is the posterior
    mean of Eq. 7 with the network's x0 estimate; with an eps-network and no clipping this is
    exactly Algorithm 2's ``1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps)``.

    Args:
        denoiser: ``(x_t, t) -> (eps, x0)`` (:class:`Denoiser`).
        diffusion: the diffusion the network was trained with.
        noise: the start noise x_T, (B, C, H, W), on the sampling device.
        spec: a ``"ddpm"`` setting (its ``variance``: ``"posterior"`` beta-tilde_t or ``"beta"`` beta_t).
        generator: a ``torch.Generator`` or :class:`ImageGenerators` for the per-step noise.
        trajectory_every: record x_t and the predicted x0 every this many steps (and at the last).
        start_step: the timestep t (0..T-1) that ``noise`` is at: the run takes the steps t, ..., 0 from
            it (SDEdit, Meng et al. 2021: a real image noised to t by ``q_sample``). None: T-1, pure noise.
    Returns:
        ``SampleOutput`` with images (B, C, H, W) in the standardized data space.
    """
    spec = _check_spec(spec, "ddpm", diffusion)
    schedule = diffusion.schedule
    variances = schedule.posterior_variance if spec.variance == "posterior" else schedule.betas
    start = check_start_step(schedule.num_steps, start_step)
    record = _Recorder(trajectory_every, start + 1)
    x = noise  # x_T ~ N(0, I) (or x_t for a start at t)                           Algorithm 2, line 1
    for index, step in enumerate(_progress(range(start, -1, -1), progress, "DDPM")):
        t = torch.full((x.shape[0],), step, device=x.device, dtype=torch.long)
        _, x0 = denoiser(x, t)
        record(index, step, x, x0)
        mean = diffusion.q_posterior_mean(x0, x, t)  # mu_tilde(x_t, x0_hat)                    Eq. 7
        z = standard_normal(x, generator)  # z ~ N(0, I)                                        line 3
        sigma = float(variances[step]) ** 0.5 if step > 0 else 0.0  # no noise on the last step
        x = mean + sigma * z  #                                                                 line 4
    return SampleOutput(x, record.result())


@torch.no_grad()
def ddim_sample(denoiser: Denoiser, diffusion: GaussianDiffusion, noise: torch.Tensor, spec: SamplerSpec,
                generator=None, *, trajectory_every: int | None = None, progress: bool = False,
                start_step: int | None = None) -> SampleOutput:
    """DDIM sampling with ``spec.steps`` network calls (Song et al. 2021, Eq. 12).

    For consecutive visited timesteps t > s (s = -1 means the clean image, abar = 1):

        x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z,
        sigma = eta * sqrt((1 - abar_s) / (1 - abar_t)) * sqrt(1 - abar_t / abar_s)   (Eq. 16).

    ``eta = 0`` is deterministic given the start noise; ``eta = 1`` over all T steps is DDPM with
    the posterior variance. Arguments as in :func:`ddpm_sample`; ``spec`` is a ``"ddim"`` setting
    (steps, eta, spacing), its steps spread over start_step, ..., 0 (:func:`sampling_timesteps`).
    """
    spec = _check_spec(spec, "ddim", diffusion)
    timesteps = sampling_timesteps(diffusion.schedule, spec.steps, spec.spacing, start_step)
    alphas_cumprod = diffusion.schedule.alphas_cumprod.cpu()
    record = _Recorder(trajectory_every, len(timesteps))
    x = noise
    for index, step in enumerate(_progress(timesteps, progress, spec.name)):
        next_step = timesteps[index + 1] if index + 1 < len(timesteps) else -1
        abar_t = float(alphas_cumprod[step])
        abar_s = float(alphas_cumprod[next_step]) if next_step >= 0 else 1.0
        t = torch.full((x.shape[0],), step, device=x.device, dtype=torch.long)
        eps, x0 = denoiser(x, t)
        record(index, step, x, x0)
        sigma = spec.eta * ((1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)) ** 0.5  # Eq. 16
        direction = max(1 - abar_s - sigma**2, 0.0) ** 0.5  # "direction pointing to x_t"
        x = abar_s**0.5 * x0 + direction * eps  # Eq. 12
        if spec.eta > 0:
            x = x + sigma * standard_normal(x, generator)  # + sigma z, z ~ N(0, I)
    return SampleOutput(x, record.result())


@torch.no_grad()
def dpm_solver_sample(denoiser: Denoiser, diffusion: GaussianDiffusion, noise: torch.Tensor, spec: SamplerSpec,
                      generator=None, *, trajectory_every: int | None = None, progress: bool = False,
                      start_step: int | None = None) -> SampleOutput:
    """DPM-Solver++ with ``spec.steps`` network calls: the multistep data-prediction solver of the
    probability-flow ODE (Lu et al. 2022, Algorithm 2, "2M").

    In lambda = log(alpha / sigma) (alpha = sqrt(abar), sigma = sqrt(1 - abar)), for visited steps
    t_{i-1} > t_i with h_i = lambda_{t_i} - lambda_{t_{i-1}} and the network's x0 estimates D:

        x_{t_i} = (sigma_{t_i} / sigma_{t_{i-1}}) x_{t_{i-1}} - alpha_{t_i} (exp(-h_i) - 1) D_i,
        D_i = (1 + 1 / (2 r_i)) x0_{i-1} - 1 / (2 r_i) x0_{i-2},   r_i = h_{i-1} / h_i   (order 2),

    with D_i = x0_{i-1} on the first step (no earlier estimate yet) and on the last step, into the
    clean image (sigma = 0, lambda = infinity: the "lower_order_final" the paper recommends for few
    steps). ``order=1`` is DDIM with eta = 0, written in lambda.

    ``spec`` is a ``"dpm_solver"`` setting: steps (exactly that many network calls, whatever the
    order), order, and spacing: ``"trailing"`` (time-uniform, DDIM's default, so the two compare on the
    same timesteps), ``"logsnr"`` (uniform in lambda, the paper's choice for low resolutions; with the
    exact denoiser it is far better at 5-10 steps on the linear schedule, but crowds the first steps of
    the cosine one, whose clipped betas make lambda fall steeply near T), or any other DDIM spacing.
    The solver is deterministic: ``generator`` is accepted for a common signature and not used.
    ``start_step`` as in :func:`ddpm_sample`.
    """
    spec = _check_spec(spec, "dpm_solver", diffusion)
    timesteps = sampling_timesteps(diffusion.schedule, spec.steps, spec.spacing, start_step)
    alphas_cumprod = diffusion.schedule.alphas_cumprod.cpu()
    record = _Recorder(trajectory_every, len(timesteps))
    x, previous_x0, previous_h = noise, None, None
    for index, step in enumerate(_progress(timesteps, progress, spec.name)):
        t = torch.full((x.shape[0],), step, device=x.device, dtype=torch.long)
        _, x0 = denoiser(x, t)
        record(index, step, x, x0)
        if index + 1 == len(timesteps):  # the last step lands on the clean image: x = D = x0
            x = x0
            break
        abar_t, abar_s = float(alphas_cumprod[step]), float(alphas_cumprod[timesteps[index + 1]])
        alpha_s, sigma_s, sigma_t = abar_s**0.5, (1 - abar_s) ** 0.5, (1 - abar_t) ** 0.5
        h = 0.5 * (math.log(abar_s / (1 - abar_s)) - math.log(abar_t / (1 - abar_t)))  # lambda_s - lambda_t
        if spec.order == 1 or previous_x0 is None:
            data = x0  # first order: DDIM
        else:
            r = previous_h / h
            data = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous_x0
        x = (sigma_s / sigma_t) * x - alpha_s * math.expm1(-h) * data
        previous_x0, previous_h = x0, h
    return SampleOutput(x, record.result())


SAMPLER_FUNCTIONS = {"ddpm": ddpm_sample, "ddim": ddim_sample, "dpm_solver": dpm_solver_sample}


def sample(denoiser: Denoiser, diffusion: GaussianDiffusion, noise: torch.Tensor, spec: SamplerSpec,
           generator=None, **options) -> SampleOutput:
    """Run the sampler ``spec.sampler`` names (:data:`SAMPLER_FUNCTIONS`); ``options`` are
    ``trajectory_every``, ``progress`` and ``start_step`` (SDEdit: ``noise`` is x_t at that timestep)."""
    return SAMPLER_FUNCTIONS[spec.sampler](denoiser, diffusion, noise, spec, generator, **options)


def slerp(a: torch.Tensor, b: torch.Tensor, weight: float) -> torch.Tensor:
    """Spherical interpolation between two start noises (treating each as one long vector).

    Gaussian noise lives near a sphere of radius sqrt(dim); straight-line mixing shrinks the norm
    (the midpoint of two independent draws has norm ~0.71x), spherical mixing keeps it, so every
    point of the path is a plausible start noise (Song et al. 2021, Sec. 5.3 / Fig. 6).
    """
    flat_a, flat_b = a.flatten().double(), b.flatten().double()
    cosine = torch.dot(flat_a, flat_b) / (flat_a.norm() * flat_b.norm())
    theta = torch.arccos(cosine.clamp(-1.0, 1.0))
    if float(theta) < 1e-6:
        return (1 - weight) * a + weight * b
    out = (torch.sin((1 - weight) * theta) * a.double() + torch.sin(weight * theta) * b.double()) / torch.sin(theta)
    return out.to(a.dtype)
