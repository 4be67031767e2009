"""Samplers: DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), DDIM (Song et al. 2021) and
DPM-Solver++ (Lu et al. 2022, the multistep second-order "2M" form).

All three run the reverse process of one :class:`~ddpm_lib.diffusion.GaussianDiffusion` with any
network, take a ``torch.Generator`` (a seeded call repeats exactly), can clip the predicted x0 to
the data's real range, can record a trajectory (x_t and the predicted x0 at chosen steps) for
figures and sliders, and take ``labels`` and a classifier-free ``guidance`` weight for
class-conditional networks (w = 1 plain conditional, w = 0 unconditional; ``diffusion.py``).

Random numbers are drawn in a fixed order: the start noise x_T (unless given), then one standard
normal tensor per step whenever the step is stochastic. So DDIM with ``eta = 1`` over all T steps
consumes the same draws as DDPM with the posterior variance, and the two agree draw for draw.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .device import autocast, choose_precision
from .diffusion import GaussianDiffusion, check_labels
from .schedules import NoiseSchedule

SAMPLERS = ("ddpm", "ddim", "dpmpp")  # DDPM (all T steps), DDIM, DPM-Solver++
SPACINGS = ("trailing", "linspace", "leading", "logsnr")
DDPM_VARIANCES = ("posterior", "beta")
DPM_SOLVER_ORDERS = (1, 2)


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


def standardized_range(mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds of pixel values 0..1 after per-channel standardization: ((0 - mean) / std, (1 - mean) / std).

    Returns two tensors of shape (1, C, 1, 1), usable as ``clip_range`` for the samplers.
    """
    mean_t = torch.as_tensor(mean, dtype=torch.float64).reshape(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float64).reshape(1, -1, 1, 1)
    return (0.0 - mean_t) / std_t, (1.0 - mean_t) / std_t


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


def sampling_timesteps(schedule: NoiseSchedule, sample_steps: int, spacing: str = "trailing") -> list[int]:
    """The decreasing timesteps of a ``sample_steps``-step DDIM or DPM-Solver++ run: any of
    :data:`SPACINGS` (``ddim_timesteps``; ``"logsnr"``: :func:`logsnr_timesteps`)."""
    if spacing == "logsnr":
        return logsnr_timesteps(schedule, sample_steps)
    return ddim_timesteps(schedule.num_steps, sample_steps, spacing)


def _start_noise(shape, noise, generator, device) -> torch.Tensor:
    if noise is not None:
        if tuple(noise.shape) != tuple(shape):
            raise ValueError(f"start noise has shape {tuple(noise.shape)}, expected {tuple(shape)}")
        return noise.to(device)
    return torch.randn(shape, device=device, generator=generator)


def _model_device(model: Callable, fallback) -> torch.device:
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        for p in parameters():
            return p.device
    return torch.device(fallback)


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


def _prepare(model: Callable, shape: Sequence[int], labels, device) -> tuple[torch.device, torch.Tensor | None]:
    """The sampling device and the labels on it, checked once against the network."""
    device = torch.device(device) if device is not None else _model_device(model, "cpu")
    if labels is not None:
        labels = torch.as_tensor(labels)
        check_labels(model, labels, shape[0])
        labels = labels.to(device=device, dtype=torch.long)
    return device, labels


def _few_steps(model, diffusion, shape, steps, spacing, noise, generator, labels, device, trajectory_every):
    """What DDIM and DPM-Solver++ set up alike: the device and labels, the visited timesteps, the
    schedule's alphas_cumprod, the start noise and the trajectory recorder."""
    device, labels = _prepare(model, shape, labels, device)
    timesteps = sampling_timesteps(diffusion.schedule, steps, spacing)
    x = _start_noise(shape, noise, generator, device)
    return (device, labels, timesteps, diffusion.schedule.alphas_cumprod.cpu(), x,
            _Recorder(trajectory_every, len(timesteps)))


@torch.no_grad()
def ddpm_sample(
    model: Callable,
    diffusion: GaussianDiffusion,
    shape: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    clip_range: tuple | None = None,
    variance: str = "posterior",
    trajectory_every: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
) -> SampleOutput:
    """DDPM ancestral sampling over all T steps (Ho et al. 2020, Algorithm 2).

    Each step draws x_{t-1} ~ N(mu_tilde(x_t, x0_hat), sigma_t^2 I), where mu_tilde is the posterior
    mean of Eq. 7 with the network's x0 estimate; with an eps-network and no clipping this is
    exactly Algorithm 2's ``1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps)``.

    Args:
        model: a network ``model(x_t, cond)`` (see ``diffusion.py`` for ``cond``).
        diffusion: the diffusion the network was trained with.
        shape: (B, C, H, W) of the images to draw.
        generator: the random generator (on the sampling device) for reproducible draws.
        noise: optional start noise x_T of ``shape``; drawn from ``generator`` when omitted.
        clip_range: optional (low, high) bounds for the predicted x0 (``standardized_range``).
        variance: ``"posterior"`` (beta_tilde_t, Eq. 7) or ``"beta"`` (beta_t); Ho et al. found
            both similar.
        trajectory_every: record x_t and the predicted x0 every this many steps (and at the last).
        device: where to sample; by default the model's device.
        labels: species indices (B,) in 0..K-1 for a class-conditional network (None: unconditional).
        guidance: classifier-free guidance weight w: eps_uncond + w (eps_cond - eps_uncond);
            1 = plain conditional, 0 = unconditional.
    Returns:
        ``SampleOutput`` with images (B, C, H, W) in the standardized data space.
    """
    if variance not in DDPM_VARIANCES:
        raise ValueError(f"unknown DDPM variance {variance!r}; use one of {DDPM_VARIANCES}")
    device, labels = _prepare(model, shape, labels, device)
    schedule = diffusion.schedule
    x = _start_noise(shape, noise, generator, device)
    variances = schedule.posterior_variance if variance == "posterior" else schedule.betas
    total = schedule.num_steps
    record = _Recorder(trajectory_every, total)
    for index, step in enumerate(_progress(range(total - 1, -1, -1), progress, "DDPM")):
        t = torch.full((shape[0],), step, device=device, dtype=torch.long)
        _, x0 = diffusion.predict_eps_x0(model, x, t, clip_range, labels, guidance)
        record(index, step, x, x0)
        mean = diffusion.q_posterior_mean(x0, x, t)
        z = torch.randn(x.shape, device=device, dtype=x.dtype, generator=generator)
        sigma = float(variances[step]) ** 0.5 if step > 0 else 0.0  # no noise on the last step
        x = mean + sigma * z
    return SampleOutput(x, record.result())


@torch.no_grad()
def ddim_sample(
    model: Callable,
    diffusion: GaussianDiffusion,
    shape: Sequence[int],
    *,
    steps: int = 50,
    eta: float = 0.0,
    spacing: str = "trailing",
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    clip_range: tuple | None = None,
    trajectory_every: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
) -> SampleOutput:
    """DDIM sampling with ``steps`` network calls (Song et al. 2021, Eq. 12).

    For consecutive visited timesteps t > s (s = -1 means the clean image, abar = 1):

        x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z,
        sigma = eta * sqrt((1 - abar_s) / (1 - abar_t)) * sqrt(1 - abar_t / abar_s)   (Eq. 16).

    ``eta = 0`` is deterministic given the start noise; ``eta = 1`` over all T steps is DDPM with
    the posterior variance.

    Args:
        steps: number of sampling steps S, 1..T (the study used 5).
        eta: stochasticity in [0, 1].
        spacing: how the S timesteps are chosen (:func:`sampling_timesteps`).
        Other arguments as in :func:`ddpm_sample`.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"DDIM eta must lie in [0, 1], got {eta}")
    device, labels, timesteps, alphas_cumprod, x, record = _few_steps(
        model, diffusion, shape, steps, spacing, noise, generator, labels, device, trajectory_every)
    for index, step in enumerate(_progress(timesteps, progress, f"DDIM-{steps}")):
        next_step = timesteps[index + 1] if index + 1 < len(timesteps) else -1
        abar_t = float(alphas_cumprod[step])
        abar_s = float(alphas_cumprod[next_step]) if next_step >= 0 else 1.0
        t = torch.full((shape[0],), step, device=device, dtype=torch.long)
        eps, x0 = diffusion.predict_eps_x0(model, x, t, clip_range, labels, guidance)
        record(index, step, x, x0)
        sigma = eta * ((1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)) ** 0.5  # Eq. 16
        direction = max(1 - abar_s - sigma**2, 0.0) ** 0.5  # "direction pointing to x_t"
        x = abar_s**0.5 * x0 + direction * eps  # Eq. 12
        if eta > 0:
            z = torch.randn(x.shape, device=device, dtype=x.dtype, generator=generator)
            x = x + sigma * z
    return SampleOutput(x, record.result())


@torch.no_grad()
def dpm_solver_sample(
    model: Callable,
    diffusion: GaussianDiffusion,
    shape: Sequence[int],
    *,
    steps: int = 20,
    order: int = 2,
    spacing: str = "trailing",
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    clip_range: tuple | None = None,
    trajectory_every: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
) -> SampleOutput:
    """DPM-Solver++ with ``steps`` network calls: the multistep data-prediction solver of the
    probability-flow ODE (Lu et al. 2022, Algorithm 2, "2M").

    In lambda = log(alpha / sigma) (alpha = sqrt(abar), sigma = sqrt(1 - abar)), for visited steps
    t_{i-1} > t_i with h_i = lambda_{t_i} - lambda_{t_{i-1}} and the network's x0 estimates D:

        x_{t_i} = (sigma_{t_i} / sigma_{t_{i-1}}) x_{t_{i-1}} - alpha_{t_i} (exp(-h_i) - 1) D_i,
        D_i = (1 + 1 / (2 r_i)) x0_{i-1} - 1 / (2 r_i) x0_{i-2},   r_i = h_{i-1} / h_i   (order 2),

    with D_i = x0_{i-1} on the first step (no earlier estimate yet) and on the last step, into the
    clean image (sigma = 0, lambda = infinity: the "lower_order_final" the paper recommends for few
    steps). ``order=1`` is DDIM with eta = 0, written in lambda.

    Args:
        steps: network calls S, 1..T (exactly S, whatever the order).
        order: 2 (DPM-Solver++(2M)) or 1.
        spacing: ``"trailing"`` (time-uniform, DDIM's default, so the two compare on the same
            timesteps), ``"logsnr"`` (uniform in lambda, the paper's choice for low resolutions; with
            the exact denoiser it is far better at 5-10 steps on the linear schedule, but crowds the
            first steps of the cosine one, whose clipped betas make lambda fall steeply near T), or
            any other DDIM spacing (:func:`sampling_timesteps`).
        Other arguments as in :func:`ddpm_sample` (there is no eta: the solver is deterministic).
    """
    if order not in DPM_SOLVER_ORDERS:
        raise ValueError(f"DPM-Solver++ order={order!r}: use one of {DPM_SOLVER_ORDERS}")
    device, labels, timesteps, alphas_cumprod, x, record = _few_steps(
        model, diffusion, shape, steps, spacing, noise, generator, labels, device, trajectory_every)
    previous_x0, previous_h = None, None
    for index, step in enumerate(_progress(timesteps, progress, f"DPM-Solver++-{steps}")):
        t = torch.full((shape[0],), step, device=device, dtype=torch.long)
        _, x0 = diffusion.predict_eps_x0(model, x, t, clip_range, labels, guidance)
        record(index, step, x, x0)
        if index + 1 == len(timesteps):  # the last step lands on the clean image: x = D = x0
            x = x0
            break
        abar_t, abar_s = float(alphas_cumprod[step]), float(alphas_cumprod[timesteps[index + 1]])
        alpha_s, sigma_s, sigma_t = abar_s**0.5, (1 - abar_s) ** 0.5, (1 - abar_t) ** 0.5
        h = 0.5 * (math.log(abar_s / (1 - abar_s)) - math.log(abar_t / (1 - abar_t)))  # lambda_s - lambda_t
        if order == 1 or previous_x0 is None:
            data = x0  # first order: DDIM
        else:
            r = previous_h / h
            data = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous_x0
        x = (sigma_s / sigma_t) * x - alpha_s * math.expm1(-h) * data
        previous_x0, previous_h = x0, h
    return SampleOutput(x, record.result())


def run_sampler(sampler: str, model: Callable, diffusion: GaussianDiffusion, shape: Sequence[int], *,
                steps: int = 50, eta: float = 0.0, **common) -> SampleOutput:
    """Dispatch to :func:`ddpm_sample` (``"ddpm"``, all T steps), :func:`ddim_sample` (``"ddim"``,
    ``steps``, ``eta``) or :func:`dpm_solver_sample` (``"dpmpp"``, ``steps``); ``common`` holds the
    arguments they share (generator, noise, clip_range, labels, guidance, ...)."""
    if sampler == "ddpm":
        return ddpm_sample(model, diffusion, shape, **common)
    if sampler == "ddim":
        return ddim_sample(model, diffusion, shape, steps=steps, eta=eta, **common)
    if sampler == "dpmpp":
        return dpm_solver_sample(model, diffusion, shape, steps=steps, **common)
    raise ValueError(f"sampler={sampler!r}: use one of {SAMPLERS}")


def sampler_label(sampler: str, steps: int, num_steps: int, eta: float = 0.0, guidance: float | None = None) -> str:
    """How a sampler setting is named in tables: ``DDPM-1000``, ``DDIM-50``, ``DDIM-20 eta 0.5``,
    ``DPM-Solver++-20``, with `` w 3`` for guided sampling."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r}: use one of {SAMPLERS}")
    label = {"ddpm": f"DDPM-{num_steps}", "ddim": f"DDIM-{steps}", "dpmpp": f"DPM-Solver++-{steps}"}[sampler]
    if sampler == "ddim" and eta:
        label += f" eta {eta:g}"
    if guidance is not None:
        label += f" w {guidance:g}"
    return label


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


def prepare_for_sampling(model: torch.nn.Module, device, channels_last: bool = True,
                         compile_network: bool = False) -> Callable:
    """The network ready for fast sampling on ``device``: eval mode, channels_last on CUDA and,
    optionally, compiled (``torch.compile``, where the card supports it; the first call then takes
    a while)."""
    from .device import compile_supported

    device = torch.device(device)
    model = model.to(device).eval()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # shapes stay fixed while sampling: pick the fastest convs
    if device.type == "cuda" and channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile_network and compile_supported(device):
        return torch.compile(model)
    return model


@torch.no_grad()
def sample_many(
    model: Callable,
    diffusion: GaussianDiffusion,
    num_samples: int,
    image_shape: Sequence[int],
    *,
    sampler: str = "ddim",
    steps: int = 50,
    eta: float = 0.0,
    batch_size: int | None = None,
    precision: str = "auto",
    generator: torch.Generator | None = None,
    clip_range: tuple | None = None,
    device=None,
    progress: bool = False,
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
) -> torch.Tensor:
    """Draw ``num_samples`` images in batches of ``batch_size`` (default: all at once).

    The network runs in the precision :func:`ddpm_lib.device.choose_precision` picks for the device
    (bf16 where native, fp16 on a T4 or P100, fp32 on the CPU), exactly as training does; the
    sampler's arithmetic stays in float32.

    Args:
        image_shape: (C, H, W).
        sampler: one of :data:`SAMPLERS` (``steps`` for DDIM and DPM-Solver++, ``eta`` for DDIM).
        labels: (num_samples,) species indices for a class-conditional network; ``guidance`` w.
    Returns:
        float32 images (num_samples, C, H, W) in the standardized data space, on ``device``.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r}: use one of {SAMPLERS}")
    device, labels = _prepare(model, (num_samples,), labels, device)
    precision = choose_precision(device, precision)
    batch_size = batch_size or num_samples
    chunks = []
    for start in range(0, num_samples, batch_size):
        count = min(batch_size, num_samples - start)
        batch_labels = labels[start:start + count] if labels is not None else None
        with autocast(device, precision):
            out = run_sampler(sampler, model, diffusion, (count, *image_shape), steps=steps, eta=eta,
                              generator=generator, clip_range=clip_range, device=device, progress=progress,
                              labels=batch_labels, guidance=guidance)
        chunks.append(out.images.float())
    return torch.cat(chunks)
