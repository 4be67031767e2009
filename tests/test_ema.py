"""EMA of the weights against the closed form of repeated averaging."""

import pytest
import torch

from ddpm_lib.engine.ema import EMA


def test_ema_follows_the_closed_form_of_a_constant_target():
    model = torch.nn.Linear(3, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)  # the trained weights jump to 1 and stay there
    for _ in range(10):
        ema.update(model)
    # after n updates towards a constant 1 from 0: 1 - decay ** n
    assert torch.allclose(ema.model.weight, torch.full((1, 3), 1 - 0.9**10), atol=1e-6)
    assert not ema.model.weight.requires_grad


def test_float_buffers_are_averaged_like_the_weights_and_integer_ones_copied():
    model = torch.nn.BatchNorm1d(2)
    ema = EMA(model, decay=0.9)
    start_mean, start_var = ema.model.running_mean.clone(), ema.model.running_var.clone()  # 0 and 1
    model.train()
    model(torch.randn(16, 2) * 3 + 5)
    ema.update(model)
    # the same closed form as the weights: ema = decay * ema + (1 - decay) * current
    assert torch.allclose(ema.model.running_mean, 0.9 * start_mean + 0.1 * model.running_mean)
    assert torch.allclose(ema.model.running_var, 0.9 * start_var + 0.1 * model.running_var)
    assert not torch.allclose(ema.model.running_mean, model.running_mean)  # averaged, not copied
    assert ema.model.num_batches_tracked.dtype == torch.long and int(ema.model.num_batches_tracked) == 1  # copied
    restored = EMA(torch.nn.BatchNorm1d(2), decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert torch.equal(restored.model.running_var, ema.model.running_var) and restored.num_updates == 1


def test_warmup_starts_with_a_small_decay():
    ema = EMA(torch.nn.Linear(1, 1), decay=0.999, warmup=True)
    assert float(ema.current_decay()) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="decay"):
        EMA(torch.nn.Linear(1, 1), decay=1.0)
