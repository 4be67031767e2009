"""The forward process q(x_t | x_0), conversions between eps / x0 / v, and the training loss.

One :class:`GaussianDiffusion` object serves training and every sampler (``sampling.py``). It
takes any network as a callable ``model(x_t, cond) -> prediction``, where ``cond`` is what the
network was built to see (its ``conditioning`` attribute):

* ``"timestep"`` (the default, e.g. ``BaselineUNet``): the integer timestep t as a float, shape (B,);
* ``"noise_variance"`` (``SmallUNet``, after the Keras example): ``1 - alphas_cumprod[t]``, shape (B,).

So every network works with every schedule. Shapes: images (B, C, H, W); timesteps (B,) integers
in 0..T-1 (see ``schedules.py`` for the indexing).

Class-conditional networks (``num_classes`` set, notebook 07) are called ``model(x_t, cond, labels)``
with species indices 0..K-1, and index K, "no label", for the unconditional prediction they learn
through label dropout. Classifier-free guidance (Ho & Salimans 2022) combines the two in eps space,

    eps = eps_uncond + w (eps_cond - eps_uncond),

so w = 1 is plain conditional sampling and w = 0 unconditional sampling; for w other than 0 and 1
both predictions come from one network call on a doubled batch (:meth:`GaussianDiffusion.predict_eps_x0`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ddpm_lib.math.schedules import NoiseSchedule
from ddpm_lib.utils import unwrap_model

PREDICTION_TYPES = ("eps", "x0", "v")
LOSS_TYPES = ("mse", "mae")
CONDITIONING_TYPES = ("timestep", "noise_variance")


def network_num_classes(model: Callable) -> int | None:
    """The number of classes a network is conditioned on (its ``num_classes``), None if unconditional."""
    return getattr(unwrap_model(model), "num_classes", None)


def check_labels(model: Callable, labels: torch.Tensor | None, batch_size: int) -> None:
    """Raise a clear ``ValueError`` when ``labels`` do not suit ``model`` and a batch of ``batch_size``."""
    if labels is None:
        return
    num_classes = network_num_classes(model)
    if num_classes is None:
        raise ValueError("labels were given, but the network is unconditional (trained without model.num_classes); "
                         "drop the labels or use a conditional run")
    if labels.ndim != 1 or labels.shape[0] != batch_size:
        raise ValueError(f"labels must have shape ({batch_size},), one species index per image, "
                         f"got {tuple(labels.shape)}")
    if labels.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer species indices, got {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1} (the network knows {num_classes} species), "
                         f"got values from {int(labels.min())} to {int(labels.max())}")


def network_conditioning(model: Callable) -> str:
    """The conditioning a network expects: its ``conditioning`` attribute, else ``"timestep"``.

    Looks through wrappers (``DistributedDataParallel.module``, ``torch.compile``'s ``_orig_mod``).
    """
    kind = getattr(unwrap_model(model), "conditioning", "timestep")
    if kind not in CONDITIONING_TYPES:
        raise ValueError(f"unknown network conditioning {kind!r}; use one of {CONDITIONING_TYPES}")
    return kind


class GaussianDiffusion:
    """A discrete Gaussian diffusion with T steps (Ho et al. 2020).

    Args:
        schedule: the noise schedule (``schedules.get_named_schedule``).
        prediction: what the network predicts: ``"eps"`` (the noise, Ho et al.), ``"x0"`` or
            ``"v"`` (Salimans & Ho 2022, ``v = sqrt(abar) eps - sqrt(1 - abar) x0``).
        loss: ``"mse"`` (Ho et al., Eq. 14) or ``"mae"`` (the Keras example's choice).
    """

    def __init__(self, schedule: NoiseSchedule, prediction: str = "eps", loss: str = "mse"):
        if prediction not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction {prediction!r}; use one of {PREDICTION_TYPES}")
        if loss not in LOSS_TYPES:
            raise ValueError(f"unknown loss {loss!r}; use one of {LOSS_TYPES}")
        self.schedule = schedule
        self.prediction = prediction
        self.loss = loss

    @property
    def num_steps(self) -> int:
        """T, the number of diffusion steps."""
        return self.schedule.num_steps

    def to(self, device: torch.device | str) -> GaussianDiffusion:
        """Move the schedule's tensors to ``device`` (in place); returns self."""
        self.schedule = self.schedule.to(device)
        return self

    # ----- the forward process --------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample from q(x_t | x_0) = N(sqrt(abar_t) x0, (1 - abar_t) I) (Ho et al., Eq. 4).

        Args:
            x0: clean images, (B, C, H, W), standardized.
            t: timesteps in 0..T-1, (B,).
            noise: standard normal noise shaped like x0.
        """
        s = self.schedule
        return s.at("sqrt_alphas_cumprod", t, x0) * x0 + s.at(
            "sqrt_one_minus_alphas_cumprod", t, x0
        ) * noise

    def q_posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean of q(x_{t-1} | x_t, x_0) (Ho et al., Eq. 7); its variance is
        ``schedule.posterior_variance[t]``."""
        s = self.schedule
        return s.at("posterior_mean_coef1", t, x_t) * x0 + s.at("posterior_mean_coef2", t, x_t) * x_t

    # ----- conversions between eps, x0 and v --------------------------------------------------
    def predict_x0_from_eps(self, x_t, t, eps):
        """x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) (Ho et al., Eq. 4 solved for x0)."""
        s = self.schedule
        return s.at("sqrt_recip_alphas_cumprod", t, x_t) * x_t - s.at(
            "sqrt_recipm1_alphas_cumprod", t, x_t
        ) * eps

    def predict_eps_from_x0(self, x_t, t, x0):
        """eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)."""
        s = self.schedule
        return (s.at("sqrt_recip_alphas_cumprod", t, x_t) * x_t - x0) / s.at(
            "sqrt_recipm1_alphas_cumprod", t, x_t
        )

    def v_from_x0_eps(self, x0, t, eps):
        """v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022, Sec. 4)."""
        s = self.schedule
        return s.at("sqrt_alphas_cumprod", t, x0) * eps - s.at(
            "sqrt_one_minus_alphas_cumprod", t, x0
        ) * x0

    def predict_x0_from_v(self, x_t, t, v):
        """x0 = sqrt(abar) x_t - sqrt(1 - abar) v."""
        s = self.schedule
        return s.at("sqrt_alphas_cumprod", t, x_t) * x_t - s.at(
            "sqrt_one_minus_alphas_cumprod", t, x_t
        ) * v

    def predict_eps_from_v(self, x_t, t, v):
        """eps = sqrt(1 - abar) x_t + sqrt(abar) v."""
        s = self.schedule
        return s.at("sqrt_one_minus_alphas_cumprod", t, x_t) * x_t + s.at(
            "sqrt_alphas_cumprod", t, x_t
        ) * v

    # ----- the network ------------------------------------------------------------------------
    def network_condition(self, model: Callable, t: torch.Tensor) -> torch.Tensor:
        """What ``model`` is conditioned on at timesteps ``t``: float t, or 1 - abar_t; (B,)."""
        if network_conditioning(model) == "noise_variance":
            return (1.0 - self.schedule.alphas_cumprod.to(t.device)[t]).float()
        return t.float()

    def model_output(self, model: Callable, x_t: torch.Tensor, t: torch.Tensor,
                     labels: torch.Tensor | None = None) -> torch.Tensor:
        """The raw network output for x_t at timesteps t, as float32-or-wider like x_t.

        ``labels`` go to class-conditional networks only (None: their "no label" index).
        """
        cond = self.network_condition(model, t)
        if network_num_classes(model) is None:
            return model(x_t, cond).to(x_t.dtype)
        return model(x_t, cond, labels).to(x_t.dtype)

    def guided_output(self, model: Callable, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None,
                      guidance: float | None) -> torch.Tensor:
        """The network output with classifier-free guidance weight w (Ho & Salimans 2022).

        w = 1 or None (or no labels) is one plain call; w = 0 one call with the "no label" index; any other w
        one call on the doubled batch [x_t with labels, x_t with "no label"], combined as
        ``out_uncond + w (out_cond - out_uncond)``. eps, x0 and v are each affine in the output with
        the same x_t term, so this is exactly eps_uncond + w (eps_cond - eps_uncond) for eps-, x0-
        and v-networks alike. The samplers check the labels once (:func:`check_labels`), not per step.
        """
        if labels is None or guidance is None or guidance == 1.0:
            return self.model_output(model, x_t, t, labels)
        if guidance == 0.0:
            return self.model_output(model, x_t, t, None)
        null = torch.full_like(labels, network_num_classes(model))
        out = self.model_output(model, torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([labels, null]))
        out_cond, out_uncond = out.chunk(2)
        return out_uncond + guidance * (out_cond - out_uncond)

    def predict_eps_x0(
        self,
        model: Callable,
        x_t: torch.Tensor,
        t: torch.Tensor,
        clip_range: tuple | None = None,
        labels: torch.Tensor | None = None,
        guidance: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's estimates of (eps, x0) at x_t, whatever it was trained to predict.

        Args:
            clip_range: optional (low, high) bounds for x0, floats or tensors broadcastable to x_t
                (e.g. per channel, (1, C, 1, 1)): the real range of the standardized data. When
                given, x0 is clamped and eps recomputed from the clamped x0 so the two agree.
            labels: species indices (B,) for a class-conditional network, or None.
            guidance: the classifier-free guidance weight w (:meth:`guided_output`); None: none.
        """
        out = self.guided_output(model, x_t, t, labels, guidance)
        if self.prediction == "eps":
            eps, x0 = out, self.predict_x0_from_eps(x_t, t, out)
        elif self.prediction == "x0":
            eps, x0 = self.predict_eps_from_x0(x_t, t, out), out
        else:
            eps, x0 = self.predict_eps_from_v(x_t, t, out), self.predict_x0_from_v(x_t, t, out)
        if clip_range is not None:
            low, high = clip_range
            x0 = torch.maximum(torch.minimum(x0, torch.as_tensor(high).to(x0)), torch.as_tensor(low).to(x0))
            eps = self.predict_eps_from_x0(x_t, t, x0)
        return eps, x0

    # ----- training ---------------------------------------------------------------------------
    def sample_timesteps(self, batch_size: int, device, generator=None) -> torch.Tensor:
        """Timesteps drawn uniformly from all T steps, 0..T-1 (Ho et al., Algorithm 1, line 3)."""
        return torch.randint(0, self.num_steps, (batch_size,), device=device, generator=generator)

    def training_target(self, x0, t, noise) -> torch.Tensor:
        """What the network should output for this (x0, t, noise)."""
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return x0
        return self.v_from_x0_eps(x0, t, noise)

    def training_loss(
        self,
        model: Callable,
        x0: torch.Tensor,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The simple loss of Ho et al. (Algorithm 1): ``|| target - model(x_t, t) ||`` averaged.

        Args:
            x0: clean standardized images, (B, C, H, W).
            t: timesteps (B,); drawn uniformly from 0..T-1 when omitted.
            noise: the eps used for x_t; drawn when omitted.
            labels: species indices (B,) for a class-conditional network (0..K, K = "no label").
        Returns:
            a scalar: mean squared error (``loss="mse"``) or mean absolute error (``"mae"``).
        """
        if t is None:
            t = self.sample_timesteps(x0.shape[0], x0.device, generator)
        if noise is None:
            noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        x_t = self.q_sample(x0, t, noise)
        prediction = self.model_output(model, x_t, t, labels).float()
        target = self.training_target(x0, t, noise).float()
        if self.loss == "mse":
            return F.mse_loss(prediction, target)
        return F.l1_loss(prediction, target)
