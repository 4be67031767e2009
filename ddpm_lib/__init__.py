"""ddpm_lib: DDPM and DDIM on Caltech-UCSD Birds at 64x64, the helper package of the course notebooks.

One module per concept: ``schedules`` (betas), ``diffusion`` (q(x_t | x_0), the loss), ``sampling``
(DDPM, DDIM), ``models`` (BaselineUNet, SmallUNet), ``ema``, ``train``, ``config`` (profiles),
``paths``, ``data`` (CUB and the synthetic replica).
"""

from .config import Config, get_profile
from .diffusion import GaussianDiffusion
from .ema import EMA
from .models import BaselineUNet, SmallUNet, count_parameters
from .sampling import ddim_sample, ddpm_sample
from .schedules import NoiseSchedule, get_named_schedule

__version__ = "0.1.0"

__all__ = [
    "EMA", "BaselineUNet", "Config", "GaussianDiffusion", "NoiseSchedule", "SmallUNet",
    "count_parameters", "ddim_sample", "ddpm_sample", "get_named_schedule", "get_profile",
]
