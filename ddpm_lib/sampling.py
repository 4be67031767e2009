"""Samplers: DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) and DDIM (Song et al. 2021).

Both run the reverse process of one :class:`~ddpm_lib.diffusion.GaussianDiffusion` with any
network, take a ``torch.Generator`` (a seeded call repeats exactly), can clip the predicted x0 to
the data's real range, and can record a trajectory (x_t and the predicted x0 at chosen steps) for
figures and sliders.

Random numbers are drawn in a fixed order: the start noise x_T (unless given), then one standard
normal tensor per step whenever the step is stochastic. So DDIM with ``eta = 1`` over all T steps
consumes the same draws as DDPM with the posterior variance, and the two agree draw for draw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .diffusion import GaussianDiffusion

SPACINGS = ("trailing", "linspace", "leading")
DDPM_VARIANCES = ("posterior", "beta")


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


def ddim_timesteps(num_steps: int, sample_steps: int, spacing: str = "trailing") -> list[int]:
    """The decreasing timesteps a ``sample_steps``-step DDIM visits out of ``num_steps`` (T).

    * ``"trailing"`` (default; Lin et al. 2024, Table 2): T-1, T-1-T/S, ...: always starts at the
      noisiest step, where the start noise really is pure noise.
    * ``"linspace"``: evenly from T-1 down to 0, both ends included.
    * ``"leading"`` (Song et al.'s code): 0, T/S, 2T/S, ... reversed; it never visits T-1.
    With ``sample_steps == num_steps`` all three give T-1, ..., 0.
    """
    if spacing not in SPACINGS:
        raise ValueError(f"unknown DDIM spacing {spacing!r}; use one of {SPACINGS}")
    if not 1 <= sample_steps <= num_steps:
        raise ValueError(f"DDIM needs 1 <= sample_steps <= T = {num_steps}, got {sample_steps}")
    if spacing == "trailing":
        steps = torch.round(torch.arange(num_steps, 0, -num_steps / sample_steps, dtype=torch.float64)) - 1
    elif spacing == "linspace":
        steps = torch.linspace(num_steps - 1, 0, sample_steps, dtype=torch.float64).round()
    else:
        steps = (torch.arange(sample_steps, dtype=torch.float64) * (num_steps // sample_steps)).flip(0)
    return [int(s) for s in steps]


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
    Returns:
        ``SampleOutput`` with images (B, C, H, W) in the standardized data space.
    """
    if variance not in DDPM_VARIANCES:
        raise ValueError(f"unknown DDPM variance {variance!r}; use one of {DDPM_VARIANCES}")
    device = torch.device(device) if device is not None else _model_device(model, "cpu")
    schedule = diffusion.schedule
    x = _start_noise(shape, noise, generator, device)
    variances = schedule.posterior_variance if variance == "posterior" else schedule.betas
    total = schedule.num_steps
    record = _Recorder(trajectory_every, total)
    for index, step in enumerate(_progress(range(total - 1, -1, -1), progress, "DDPM")):
        t = torch.full((shape[0],), step, device=device, dtype=torch.long)
        _, x0 = diffusion.predict_eps_x0(model, x, t, clip_range)
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
        spacing: how the S timesteps are chosen (``ddim_timesteps``).
        Other arguments as in :func:`ddpm_sample`.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"DDIM eta must lie in [0, 1], got {eta}")
    device = torch.device(device) if device is not None else _model_device(model, "cpu")
    schedule = diffusion.schedule
    timesteps = ddim_timesteps(schedule.num_steps, steps, spacing)
    alphas_cumprod = schedule.alphas_cumprod.cpu()
    x = _start_noise(shape, noise, generator, device)
    record = _Recorder(trajectory_every, len(timesteps))
    for index, step in enumerate(_progress(timesteps, progress, f"DDIM-{steps}")):
        next_step = timesteps[index + 1] if index + 1 < len(timesteps) else -1
        abar_t = float(alphas_cumprod[step])
        abar_s = float(alphas_cumprod[next_step]) if next_step >= 0 else 1.0
        t = torch.full((shape[0],), step, device=device, dtype=torch.long)
        eps, x0 = diffusion.predict_eps_x0(model, x, t, clip_range)
        record(index, step, x, x0)
        sigma = eta * ((1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)) ** 0.5  # Eq. 16
        direction = max(1 - abar_s - sigma**2, 0.0) ** 0.5  # "direction pointing to x_t"
        x = abar_s**0.5 * x0 + direction * eps  # Eq. 12
        if eta > 0:
            z = torch.randn(x.shape, device=device, dtype=x.dtype, generator=generator)
            x = x + sigma * z
    return SampleOutput(x, record.result())


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
    optionally, compiled (``torch.compile``; the first call then takes a while)."""
    device = torch.device(device)
    model = model.to(device).eval()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # shapes stay fixed while sampling: pick the fastest convs
    if device.type == "cuda" and channels_last:
        model = model.to(memory_format=torch.channels_last)
    if device.type == "cuda" and compile_network:
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
) -> torch.Tensor:
    """Draw ``num_samples`` images in batches of ``batch_size`` (default: all at once), with bf16
    autocast on GPUs that support it ("auto"), fp32 otherwise. The sampler's arithmetic stays in
    float32; only the network runs in bf16.

    Args:
        image_shape: (C, H, W).
        sampler: ``"ddim"`` (``steps``, ``eta``) or ``"ddpm"`` (all T steps).
    Returns:
        float32 images (num_samples, C, H, W) in the standardized data space, on ``device``.
    """
    if sampler not in ("ddim", "ddpm"):
        raise ValueError(f"sampler={sampler!r}: use 'ddim' or 'ddpm'")
    device = torch.device(device) if device is not None else _model_device(model, "cpu")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    batch_size = batch_size or num_samples
    chunks = []
    for start in range(0, num_samples, batch_size):
        shape = (min(batch_size, num_samples - start), *image_shape)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            if sampler == "ddim":
                out = ddim_sample(model, diffusion, shape, steps=steps, eta=eta, generator=generator,
                                  clip_range=clip_range, device=device, progress=progress)
            else:
                out = ddpm_sample(model, diffusion, shape, generator=generator, clip_range=clip_range,
                                  device=device, progress=progress)
        chunks.append(out.images.float())
    return torch.cat(chunks)
