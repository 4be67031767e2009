"""Both U-Nets: shapes, sizes, conditioning, precision modes, and capacity to fit a batch."""

import pytest
import torch

from ddpm_lib.math.diffusion import GaussianDiffusion
from ddpm_lib.math.schedules import get_named_schedule
from ddpm_lib.models import BaselineUNet, SmallUNet, count_parameters
from ddpm_lib.models.blocks import noise_variance_embedding, timestep_embedding


def test_small_unet_has_the_keras_parameter_count():
    assert count_parameters(SmallUNet()) == 1_950_627  # the Keras DDIM example's model.summary()


def test_attention_adds_parameters_only_at_the_two_lowest_resolutions():
    plain, attended = SmallUNet(), SmallUNet(attention=True)
    attention_layers = [m for m in attended.modules() if type(m).__name__ == "SelfAttention"]
    # two blocks at 16x16 on the way down, two in the middle (8x8), two at 16x16 on the way up
    assert len(attention_layers) == 6
    assert {layer.qkv.in_channels for layer in attention_layers} == {96, 128}
    assert count_parameters(attended) > count_parameters(plain)


def test_the_time_projection_of_each_block_is_nonlinear_at_an_unchanged_size():
    """Ho et al.: dense(silu(temb)) in every block; without the SiLU the MLP's last layer and the
    block's projection would collapse into one linear map of the embedding."""
    assert count_parameters(BaselineUNet()) == 26_623_363  # the same size as without the SiLU
    model = BaselineUNet(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, image_size=16)
    seen = {}
    block = model.down[0][0].residual
    block.embedding.register_forward_pre_hook(lambda module, inputs: seen.update(input=inputs[0]))
    with torch.no_grad():
        model(torch.randn(2, 3, 16, 16), torch.tensor([3.0, 700.0]))
        embedding = model.time_mlp(timestep_embedding(torch.tensor([3.0, 700.0]), 16))
    assert (embedding < 0).any()  # so SiLU changes it
    assert torch.allclose(seen["input"], torch.nn.functional.silu(embedding), atol=1e-6)


def test_baseline_unet_default_size_and_attention_placement():
    model = BaselineUNet()
    assert 20e6 <= count_parameters(model) <= 40e6
    sizes = {}

    def hook(module, inputs, output):
        sizes.setdefault(output.shape[-1], 0)
        sizes[output.shape[-1]] += 1

    for module in model.modules():
        if type(module).__name__ == "SelfAttention":
            module.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64), torch.tensor([10.0]))
    assert set(sizes) == {16, 8}  # attention at 16x16 and 8x8 only


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("name", ["small", "small_attention", "baseline"])
def test_output_shape_equals_input_shape(name, size):
    model = {"small": lambda: SmallUNet(),
             "small_attention": lambda: SmallUNet(attention=True),
             "baseline": lambda: BaselineUNet(base_channels=32, image_size=size)}[name]()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert model(x, torch.tensor([0.1, 0.9])).shape == x.shape


def test_zero_initialised_outputs_predict_zero_at_start():
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.count_nonzero(SmallUNet()(x, torch.rand(2))) == 0
        assert torch.count_nonzero(BaselineUNet(base_channels=32, image_size=32)(x, torch.tensor([1.0, 2.0]))) == 0


def test_sizes_that_do_not_divide_are_refused():
    with pytest.raises(ValueError, match="divisible by 8"):
        SmallUNet()(torch.randn(1, 3, 36, 36), torch.rand(1))


def test_noise_variance_embedding_matches_the_keras_formula():
    variance = torch.tensor([0.0, 0.25, 1.0])
    embedding = noise_variance_embedding(variance, 32)
    frequencies = torch.logspace(0, 3, 16, dtype=torch.float64)  # 16 log-spaced from 1 to 1000
    angles = 2 * torch.pi * variance.double()[:, None] * frequencies[None]
    # float32 angles up to 2 pi 1000 carry ~5e-4 rounding; a wrong formula is off by O(1)
    assert torch.allclose(embedding.double(), torch.cat([angles.sin(), angles.cos()], 1), atol=2e-3)


@pytest.mark.parametrize("name", ["small", "baseline"])
def test_channels_last_and_bf16_autocast_agree_with_fp32(name):
    torch.manual_seed(0)
    model = SmallUNet(widths=(16, 32, 48)) if name == "small" else BaselineUNet(base_channels=32, image_size=32)
    for p in model.parameters():  # leave the zero init so outputs are not trivially zero
        if p.ndim > 1 and p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.02)
    model.eval()
    x, cond = torch.randn(2, 3, 32, 32), torch.tensor([0.3, 0.7])
    with torch.no_grad():
        reference = model(x, cond)
        model_cl = model.to(memory_format=torch.channels_last)
        channels_last = model_cl(x.to(memory_format=torch.channels_last), cond)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model_cl(x.to(memory_format=torch.channels_last), cond)
    assert torch.allclose(channels_last, reference, atol=1e-4)
    scale = reference.abs().mean()
    assert (bf16.float() - reference).abs().mean() < 0.05 * scale


@pytest.mark.parametrize("name", ["small", "baseline"])
def test_a_tiny_network_overfits_one_batch(name):
    torch.manual_seed(0)
    if name == "small":
        model = SmallUNet(widths=(16, 32), block_depth=1)
    else:
        model = BaselineUNet(base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                             attention_resolutions=(8,), image_size=16, dropout=0.0)
    diffusion = GaussianDiffusion(get_named_schedule("linear", 1000))
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 3, 16, 16, generator=g)
    noise = torch.randn(8, 3, 16, 16, generator=g)
    t = torch.randint(0, 1000, (8,), generator=g)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        loss = diffusion.training_loss(model, x0, t, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
