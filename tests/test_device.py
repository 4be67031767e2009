"""One rule for precision and compilation, whatever trains or samples: checked on faked cards."""

import pytest
import torch

from ddpm_lib import device as device_module
from ddpm_lib import experiment
from ddpm_lib.device import choose_precision, compile_supported
from ddpm_lib.engine import train
from ddpm_lib.math import sampling

CARDS = {  # name: (compute capability, precision, torch.compile)
    "H100": ((9, 0), "bf16", True),
    "A100": ((8, 0), "bf16", True),
    "T4": ((7, 5), "fp16", True),
    "P100": ((6, 0), "fp16", False),
}


@pytest.mark.parametrize("card", list(CARDS))
def test_each_card_trains_and_samples_in_the_same_precision(card, monkeypatch):
    capability, expected, compiles = CARDS[card]
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    # torch says bf16 is supported on a T4 too, where it is only emulated: the rule must not ask it
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    cuda = torch.device("cuda", 0)
    assert choose_precision(cuda) == expected
    assert compile_supported(cuda) is compiles
    # training and sampling decide through this very function: nothing else chooses a precision
    assert train.choose_precision is device_module.choose_precision
    assert experiment.choose_precision is device_module.choose_precision  # Run.sample


def test_the_cpu_runs_fp32_without_compile_and_a_setting_is_taken_as_given():
    cpu = torch.device("cpu")
    assert choose_precision(cpu) == "fp32" and not compile_supported(cpu)
    assert choose_precision(cpu, "bf16") == "bf16"
    with pytest.raises(ValueError, match="precision='fp8'"):
        choose_precision(cpu, "fp8")


def test_a_run_samples_in_the_precision_the_rule_picks(monkeypatch):
    from ddpm_lib.build import build_diffusion, build_model
    from ddpm_lib.config import get_profile
    from ddpm_lib.experiment import Run

    seen = []
    original = device_module.autocast

    def spy(device, precision, cache_enabled=True):
        seen.append(precision)
        return original(device, precision, cache_enabled)

    monkeypatch.setattr(sampling, "autocast", spy)
    monkeypatch.setattr("ddpm_lib.experiment.choose_precision", lambda device: "bf16")  # as on an H100
    config = get_profile("smoke")
    run = Run(config, build_model(config.model, 32).eval(), build_diffusion(config.diffusion), torch.full((3,), 0.5),
              torch.full((3,), 0.25), run_dir=None)
    run.sample(2, "DDIM-2")
    assert seen == ["bf16", "bf16"]  # the network's two calls, in the device's precision
