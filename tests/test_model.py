"""Unit tests of the model library: U-Net, PSF layer, discriminators, losses, config, model files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cycledecon.config.train import DiscriminatorConfig, GeneratorConfig, parse_config
from cycledecon.errors import CycledeconError
from cycledecon.model import UNet3d, build_model, load_model, receptive_field, save_model
from cycledecon.model.cyclegan import Faces
from cycledecon.model.discriminator import PatchDiscriminator3d
from cycledecon.model.unet import NearestUpConv3d, max_pool_2x
from cycledecon.noise import NoiseModel
from cycledecon.psf.layer import PsfLayer, convolve_spectrum_valid, fft_convolve, fft_convolve_valid, with_centre
from cycledecon.psf.pupil import PupilPsf
from cycledecon.psf.theory import gaussian_psf
from helpers import FREE_KERNEL_TRAIN, deep_update


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def small_config(**overrides):
    section = {"generator": {"depth": 2, "base_channels": 4},
               "discriminator": {"base_channels": 4, "layers": 2},
               "psf": {"shape_voxels": [5, 7, 7]}}
    return parse_config(deep_update(deep_update(FREE_KERNEL_TRAIN, section), overrides))


@pytest.mark.parametrize("shape", [(16, 32, 32), (15, 33, 31), (5, 7, 9)])
def test_generator_keeps_odd_and_even_shapes(shape):
    g = UNet3d(GeneratorConfig(depth=2, base_channels=4)).eval()
    assert g(torch.rand(2, 1, *shape)).shape == (2, 1, *shape)


@pytest.mark.parametrize("shape", [(3, 4, 5), (1, 6, 2)])
def test_folded_up_convolution_is_nearest_upsampling_then_the_convolution(shape):
    """Exact in float64 (sums regrouped only), gradients included, at the borders too."""
    up = NearestUpConv3d(3, 2).double()
    volume = torch.randn(2, 3, *shape, dtype=torch.float64, requires_grad=True)
    expected = up.conv(F.interpolate(volume, scale_factor=2, mode="nearest"))
    got = up(volume)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    weights = torch.randn_like(expected)
    grads = [torch.autograd.grad((out * weights).sum(), (volume, up.conv.weight, up.conv.bias))
             for out in (got, expected)]  # fmt: skip
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_a_generator_saved_with_upsample_then_conv_modules_loads_unchanged():
    """Models saved before the folded up-convolution kept its weights under `up.N.1.*`."""
    g = UNet3d(GeneratorConfig(depth=2, base_channels=4)).eval()
    old = {k.replace(".conv.", ".1.") if k.startswith("up.") else k: v for k, v in g.state_dict().items()}
    assert any(k.startswith("up.0.1.") for k in old)
    loaded = UNet3d(GeneratorConfig(depth=2, base_channels=4)).eval()
    loaded.load_state_dict(old)
    volume = torch.rand(1, 1, 8, 16, 16)
    torch.testing.assert_close(loaded(volume), g(volume), rtol=0, atol=0)
    # inside a larger model, as a training checkpoint holds it
    outer = torch.nn.ModuleDict({"g": UNet3d(GeneratorConfig(depth=2, base_channels=4))})
    outer.load_state_dict({f"g.{k}": v for k, v in old.items()})
    torch.testing.assert_close(outer["g"].eval()(volume), g(volume), rtol=0, atol=0)


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
@pytest.mark.parametrize("activation", ["leaky_relu", "relu"])
def test_in_place_activations_give_the_out_of_place_output_and_gradients(norm, activation):
    """G's activations overwrite their input; autograd must still see the values it saved."""
    g = UNet3d(GeneratorConfig(depth=2, base_channels=4, norm=norm, activation=activation))
    assert all(m.inplace for m in g.modules() if isinstance(m, (torch.nn.LeakyReLU, torch.nn.ReLU)))
    reference = UNet3d(g.config)
    reference.load_state_dict(g.state_dict())
    for m in reference.modules():
        if isinstance(m, (torch.nn.LeakyReLU, torch.nn.ReLU)):
            m.inplace = False
    volume = torch.rand(2, 1, 8, 16, 16)
    outputs = [net(volume) for net in (g, reference)]
    for out in outputs:
        (out**2).sum().backward()
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    for p, q in zip(g.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)


@pytest.mark.parametrize("norm", ["batch", "none"])
@pytest.mark.parametrize("depth", [1, 2])
def test_receptive_field_bounds_the_reach_of_one_voxel(norm, depth):
    config = GeneratorConfig(depth=depth, base_channels=2, norm=norm)
    radius = receptive_field(config)
    g = UNet3d(config).double().eval()
    size = 2 * max(radius) + 8
    base = torch.rand(1, 1, size, size, size, dtype=torch.float64)
    poked = base.clone()
    centre = size // 2
    poked[..., centre, centre, centre] += 1.0
    with torch.no_grad():
        changed = (g(poked) - g(base)).abs()[0, 0] > 1e-12  # float64: untouched voxels agree exactly
    for axis in range(3):
        hit = np.flatnonzero(changed.numpy().any(axis=tuple(a for a in range(3) if a != axis)))
        reach = max(centre - hit.min(), hit.max() - centre)
        assert reach <= radius[axis]
        # The bound is tight: random weights reach it (or one voxel short, by pooling alignment).
        assert reach >= radius[axis] - 1


def test_receptive_field_grows_with_depth_and_accepts_a_dict():
    # 2 convs (2) + pool (1) + 2 convs at spacing 2 (4) + 3 convs on the way up (3)
    assert receptive_field({"depth": 1}) == (10, 10, 10)
    assert receptive_field({"depth": 3}) > receptive_field({"depth": 2})


def test_fft_convolution_matches_conv3d():
    kernel = torch.rand(9, 15, 15)
    kernel /= kernel.sum()
    volume = torch.rand(2, 1, 16, 32, 31)
    padded = F.pad(volume, (7, 7, 7, 7, 4, 4), mode="reflect")
    expected = F.conv3d(padded, kernel.flip(0, 1, 2)[None, None])  # conv3d correlates: flip
    # float32 rounding of ~2000-term sums of values in [0, 1]: errors of a few 1e-6 at most.
    assert torch.allclose(fft_convolve(volume, kernel), expected, atol=1e-5)


def test_valid_fft_convolution_matches_conv3d_on_the_centre():
    kernel = torch.rand(9, 15, 13)
    kernel /= kernel.sum()
    volume = torch.rand(2, 1, 20, 40, 36)
    margin = (5, 9, 8)  # at least the radius (4, 7, 6) on each axis
    expected = F.conv3d(volume, kernel.flip(0, 1, 2)[None, None])  # valid: (12, 26, 24)
    crop = [m - r for m, r in zip(margin, (4, 7, 6))]
    expected = expected[..., crop[0] : expected.shape[-3] - crop[0], crop[1] : expected.shape[-2] - crop[1],
                        crop[2] : expected.shape[-1] - crop[2]]
    result = fft_convolve_valid(volume, kernel, margin)
    assert result.shape == (2, 1, 10, 22, 20)
    assert torch.allclose(result, expected, atol=1e-5)  # float32 sums of ~1700 terms in [0, 1]
    with pytest.raises(ValueError, match="context margin"):
        fft_convolve_valid(volume, kernel, (3, 9, 8))


def test_valid_convolution_gradients_match_finite_differences():
    """The hand-written backward (correlations by FFT) against numerical derivatives, in float64,
    for the volume, the kernel, and a kernel applied to a fixed spectrum (the intensity reference)."""
    generator = torch.Generator().manual_seed(0)
    volume = torch.rand(2, 1, 9, 10, 11, dtype=torch.float64, generator=generator, requires_grad=True)
    kernel = torch.rand(3, 5, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    margin = (2, 2, 3)  # more than the radius (1, 2, 1) on two axes: the window is not the valid centre
    assert torch.autograd.gradcheck(lambda v, k: fft_convolve_valid(v, k, margin), (volume, kernel))
    spectrum = torch.fft.rfftn(volume.detach(), dim=(-3, -2, -1))
    assert torch.autograd.gradcheck(lambda k: convolve_spectrum_valid(spectrum, (9, 10, 11), k, margin), (kernel,))


def test_valid_convolution_with_a_centre_equals_the_composed_volume_and_its_gradients():
    """A centre given to the convolution is placed in the volumes' middles first: the result must be
    the convolution of the composed volume, and the gradients (the centre's from its own window, the
    volume's with the middle left out) must match finite differences, in float64."""
    generator = torch.Generator().manual_seed(1)
    volume = torch.rand(2, 1, 9, 10, 11, dtype=torch.float64, generator=generator, requires_grad=True)
    centre = torch.rand(2, 1, 5, 4, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    kernel = torch.rand(3, 5, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    margin = (2, 2, 3)
    composed = with_centre(volume.detach(), centre.detach())
    assert torch.equal(composed[..., 2:7, 3:7, 3:8], centre.detach())
    torch.testing.assert_close(fft_convolve_valid(volume, kernel, margin, centre),
                               fft_convolve_valid(composed, kernel, margin), rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda v, c, k: fft_convolve_valid(v, k, margin, c), (volume, centre, kernel))
    fft_convolve_valid(volume, kernel, margin, centre).sum().backward()
    assert float(volume.grad[..., 2:7, 3:7, 3:8].abs().max()) == 0  # the middle came from the centre


def test_light_from_the_margin_reaches_the_patch():
    """A bead just outside the patch shines into it through the PSF, as in the microscope; the
    reflect-padded blur of the patch alone cannot know it is there."""
    layer = PsfLayer(gaussian_psf((7, 9, 9), (1.5, 2.0, 2.0)), learnable=False)
    volume = torch.zeros(1, 1, 14, 18, 18)
    volume[0, 0, 2, 9, 9] = 1.0  # in the z margin (3 voxels), 1 voxel above the patch
    with torch.no_grad():
        with_context = layer(volume, (3, 4, 4))
        patch_only = layer(volume[..., 3:11, 4:14, 4:14])
    assert with_context.shape == patch_only.shape == (1, 1, 8, 10, 10)
    # the patch's first plane lies 1 voxel below the bead: it receives the kernel's value there
    assert float(with_context[0, 0, 0, 5, 5]) == pytest.approx(float(layer.kernel()[4, 4, 4]), abs=1e-6)
    assert float(with_context[0, 0, 0, 5, 5]) > 1e-3 and float(patch_only.abs().max()) == 0


def test_cycle_model_with_margin_and_pupil_trains_every_part():
    config = small_config(psf={"parameterization": "pupil"})
    pupil = PupilPsf((5, 9, 9), (0.3, 0.1, 0.1), 1.0, 520.0, 1.33)
    model = build_model(config, pupil.numpy(), margin=(2, 4, 4), pupil=pupil)
    y, x = torch.rand(2, 1, 12, 24, 24), torch.rand(2, 1, 12, 24, 24)
    total, terms, (fake_a, fake_b) = model.generator_losses(y, x, config.loss)
    assert fake_a.shape == fake_b.shape == (2, 1, 8, 16, 16)  # the centres
    assert "psf_center" not in terms  # a pupil's kernel is centred by construction
    total.backward()
    assert float(pupil.log_na_scale.grad.abs()) > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.g.parameters())
    groups = model.f_param_groups(config.optim)
    assert groups[0]["lr"] == config.optim.lr_pupil and set(map(id, groups[0]["params"])) == {
        id(p) for p in pupil.parameters()}
    assert groups[1]["params"] == []  # no free logits to learn
    assert model.cycle_loss(y, x) > 0


class ShapeRecorder(torch.nn.Module):
    """A stand-in G that records the shapes it is given and adds the input's mean (so its output
    on the patch depends on the context around it)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(volume.shape[-3:]))
        return self.scale * volume + volume.mean(dim=(-3, -2, -1), keepdim=True)


def test_generator_context_feeds_g_the_ring_and_scores_the_patch():
    config = small_config(generator_context=[1, 2, 2])
    model = build_model(config, gaussian_psf((3, 5, 5), (1.0, 1.5, 1.5)), margin=(2, 4, 4))
    model.g = ShapeRecorder()
    y, x = torch.rand(2, 1, 12, 24, 24), torch.rand(2, 1, 12, 24, 24)
    total, terms, (fake_a, fake_b) = model.generator_losses(y, x, config.loss)
    # G sees patch (8, 16, 16) + ring on each side, in all three of its passes (identity included)
    assert set(model.g.shapes) == {(10, 20, 20)} and len(model.g.shapes) == 2 + (config.loss.identity > 0)
    assert fake_a.shape == fake_b.shape == (2, 1, 8, 16, 16)
    total.backward()
    assert float(model.g.scale.grad.abs()) > 0
    # what G returns on the patch depends on the ring it saw: the context is really used
    bare = build_model(small_config(), gaussian_psf((3, 5, 5), (1.0, 1.5, 1.5)), margin=(2, 4, 4))
    bare.g = ShapeRecorder()
    with torch.no_grad():
        ringed = model.deblur(model.g, model.with_ring(y))
        centre_only = bare.deblur(bare.g, bare.with_ring(y))
    assert bare.g.shapes == [(8, 16, 16)] and not torch.allclose(ringed, centre_only)


def test_ring_past_a_face_is_the_mirror_inference_pads_with():
    """Where G's ring reaches past the stack (room < ring), it holds the inside reflected at the face,
    exactly as numpy's reflect padding (inference's) would; where the stack goes on it is untouched."""
    model = build_model(small_config(generator_context=[2, 3, 3]), gaussian_psf((3, 5, 5), (1.0, 1.5, 1.5)),
                        margin=(3, 4, 4))
    ringed = torch.rand(2, 1, 12, 22, 22)  # patch (8, 16, 16) with a (2, 3, 3) ring
    room = torch.tensor([[[0, 5], [1, 9], [9, 2]], [[9, 9], [9, 9], [9, 9]]])
    out = model.past_faces(ringed, room, "mirror")
    # the first patch's ring reaches 2 voxels past the stack before it in z and y, 1 after it in x
    inside = ringed[0, 0, 2:, 2:, :21].numpy()
    expected = np.pad(inside, [(2, 0), (2, 0), (0, 1)], mode="reflect")
    np.testing.assert_array_equal(out[0, 0].numpy(), expected)
    assert not torch.equal(out[0], ringed[0])
    assert torch.equal(out[1], ringed[1])  # room on every side: nothing changes
    zeroed = model.past_faces(ringed, room, "zero")
    np.testing.assert_array_equal(zeroed[0, 0].numpy(), np.pad(inside, [(2, 0), (2, 0), (0, 1)]))
    assert torch.equal(zeroed[1], ringed[1])
    repeated = model.past_faces(ringed, room, "edge")  # deconvolve.face_padding_mode: edge
    np.testing.assert_array_equal(repeated[0, 0].numpy(), np.pad(inside, [(2, 0), (2, 0), (0, 1)], mode="edge"))
    assert torch.equal(repeated[1], ringed[1])


def test_generator_losses_refill_the_ring_past_the_faces():
    config = small_config(generator_context=[1, 2, 2])
    model = build_model(config, gaussian_psf((3, 5, 5), (1.0, 1.5, 1.5)), margin=(2, 4, 4))
    model.g = ShapeRecorder()
    y, x = torch.rand(2, 1, 12, 24, 24), torch.rand(2, 1, 12, 24, 24)
    far, at_face = torch.full((2, 3, 2), 9), torch.zeros((2, 3, 2), dtype=torch.long)
    with torch.no_grad():
        plain = model.generator_losses(y, x, config.loss)[1]
        for fill, changed in (("mirror", ["cycle_sharp"]), ("zero", ["cycle_sharp", "cycle_blurred"])):
            far_terms = model.generator_losses(y, x, config.loss, Faces(fill, far, far))[1]
            face_terms = model.generator_losses(y, x, config.loss, Faces(fill, at_face, at_face))[1]
            for name in ("cycle_sharp", "cycle_blurred"):
                assert float(far_terms[name]) == pytest.approx(float(plain[name]), rel=1e-6)
                # the stand-in G mixes its whole input (ring included) into every voxel through its mean
                moved = abs(float(face_terms[name]) - float(plain[name])) > 1e-5 * float(plain[name])
                assert moved == (name in changed), (fill, name)


@pytest.mark.parametrize("distance", ["l1", "l2"])
def test_sharp_cycle_distance_is_the_configured_one(distance):
    config = small_config(loss={"cycle_sharp_distance": distance})
    model = build_model(config, gaussian_psf((3, 5, 5), (1.0, 1.5, 1.5)), margin=(2, 4, 4))
    y, x = torch.rand(2, 1, 12, 24, 24), torch.rand(2, 1, 12, 24, 24)
    with torch.no_grad():
        _, terms, _ = model.generator_losses(y, x, config.loss)
        residual = model.g(model.forward_blur(x)) - model.centre(x)
    expected = residual.pow(2).mean() if distance == "l2" else residual.abs().mean()
    assert float(terms["cycle_sharp"]) == pytest.approx(float(expected), rel=1e-5)


def test_blur_over_the_ring_is_exact_and_a_kernel_too_large_for_it_is_refused():
    """F(x) over patch + ring is the valid convolution there: its patch equals F(x) of the patch."""
    config = small_config(generator_context=[1, 2, 2])
    model = build_model(config, gaussian_psf((3, 5, 5), (1.0, 1.5, 1.5)), margin=(2, 4, 4))
    x = torch.rand(2, 1, 12, 24, 24)
    with torch.no_grad():
        over_ring = model.forward_blur(x, model.g_margin)
        patch = model.forward_blur(x)
    assert over_ring.shape == (2, 1, 10, 20, 20)
    torch.testing.assert_close(over_ring[..., 1:-1, 2:-2, 2:-2], patch, atol=1e-6, rtol=0)
    wide = build_model(config, gaussian_psf((5, 9, 9), (1.0, 1.5, 1.5)), margin=(2, 4, 4))
    with pytest.raises(ValueError, match="context margin"):
        wide.generator_losses(x, x, config.loss)
    with pytest.raises(ValueError, match="generator context"):
        build_model(small_config(generator_context=[3, 0, 0]), gaussian_psf((3, 5, 5), (1.0, 1.5, 1.5)),
                    margin=(2, 4, 4))


def test_psf_layer_of_a_delta_is_its_kernel():
    layer = PsfLayer(gaussian_psf((5, 7, 9), (1.0, 1.5, 2.0)), symmetric=False)
    with torch.no_grad():
        layer.logits.add_(0.3 * torch.randn_like(layer.logits))  # make it asymmetric
    delta = torch.zeros(1, 1, 21, 21, 21)
    delta[..., 10, 10, 10] = 1.0
    with torch.no_grad():
        image = layer(delta)[0, 0, 8:13, 7:14, 6:15]
    assert torch.allclose(image, layer.kernel(), atol=1e-6)


def test_kernel_stays_a_normalized_psf_after_wild_optimizer_steps():
    layer = PsfLayer(gaussian_psf((5, 7, 7), (1.0, 1.5, 1.5)))
    optimizer = torch.optim.SGD(layer.parameters(), lr=100.0)
    for _ in range(5):
        optimizer.zero_grad()
        (layer(torch.rand(1, 1, 8, 12, 12)) * torch.randn(1, 1, 8, 12, 12)).sum().backward()
        optimizer.step()
        kernel = layer.kernel().detach()
        assert kernel.min() >= 0
        assert abs(float(kernel.sum()) - 1.0) < 1e-5  # float32 sum of 245 terms
    assert torch.equal(kernel, kernel.flip(-1)) and torch.equal(kernel, kernel.flip(-2))


def test_centre_penalty_sees_a_shifted_kernel():
    centred = PsfLayer(gaussian_psf((7, 7, 7), (1.0, 1.0, 1.0)), symmetric=False)
    shifted = PsfLayer(np.roll(gaussian_psf((7, 7, 7), (1.0, 1.0, 1.0)), 1, axis=0), symmetric=False)
    with torch.no_grad():
        assert float(centred.center_penalty()) < 1e-10
        assert float(shifted.center_penalty()) > 0.05  # offset ≈ 1 voxel = 1/3 radius → ≈ 0.1


@pytest.mark.parametrize("kind", ["psf_layer", "two_generators"])
def test_gradients_reach_every_network(kind):
    config = small_config(model=kind, loss={"adversarial_b": 1.0})
    model = build_model(config, gaussian_psf((5, 7, 7), (1.0, 1.5, 1.5)))
    y, x = torch.rand(2, 1, 8, 16, 16), torch.rand(2, 1, 8, 16, 16)
    total, terms, fakes = model.generator_losses(y, x, config.loss)
    total.backward()
    for net in (model.g, model.f):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert ("psf_center" in terms) == (kind == "psf_layer")
    d_total, _ = model.discriminator_losses(y, x, *fakes, config.loss)
    d_total.backward()
    for net in (model.d_a, model.d_b):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_unet_deepest_level_runs_in_float32_under_bf16_autocast():
    g = UNet3d(GeneratorConfig(depth=2, base_channels=4))
    seen = {}
    for name in ("bottom", "head"):
        getattr(g, name).register_forward_hook(lambda module, inputs, output, name=name: seen.update({name: output.dtype}))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g(torch.rand(2, 1, 8, 16, 16))
    assert seen == {"bottom": torch.float32, "head": torch.bfloat16}  # the other levels stay bf16


def test_discriminators_run_in_float32_under_bf16_autocast():
    d = PatchDiscriminator3d(DiscriminatorConfig(base_channels=4, layers=2))
    volume = torch.rand(2, 1, 8, 16, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = d(volume)
    assert scores.dtype == torch.float32  # under bf16 the last convolution would return bfloat16


def test_an_unused_sharp_discriminator_is_neither_trained_nor_able_to_poison_the_loss():
    config = small_config()  # adversarial_b 0 by default
    model = build_model(config, gaussian_psf((5, 7, 7), (1.0, 1.5, 1.5)))
    with torch.no_grad():
        for p in model.d_b.parameters():
            p.fill_(float("nan"))  # a diverged D_B
    y, x = torch.rand(2, 1, 8, 16, 16), torch.rand(2, 1, 8, 16, 16)
    total, terms, fakes = model.generator_losses(y, x, config.loss)
    d_total, d_terms = model.discriminator_losses(y, x, *fakes, config.loss)
    assert torch.isfinite(total) and torch.isfinite(d_total)
    assert "adv_b" not in terms and "d_b" not in d_terms
    d_total.backward()
    assert all(p.grad is None for p in model.d_b.parameters())


def test_frozen_psf_has_no_trainable_parameters():
    model = build_model(small_config(psf={"shape_voxels": [5, 7, 7], "learnable": False}),
                        gaussian_psf((5, 7, 7), (1.0, 1.5, 1.5)))
    assert not any(p.requires_grad for p in model.f.parameters())


@pytest.mark.parametrize("sigma", [(1.0, 1.5, 1.5), (2.0, 3.0, 3.0)])
def test_intensity_map_follows_the_kernel_in_closed_form(sigma):
    layer = PsfLayer(gaussian_psf((5, 7, 7), sigma))
    sharp = torch.rand(16, 1, 8, 16, 16) ** 6  # sparse, like references
    blurred = 0.2 + 3.0 * torch.rand(16, 1, 8, 16, 16)
    volume = torch.rand(1, 1, 8, 16, 16)
    with torch.no_grad():
        assert torch.equal(layer(volume), fft_convolve(volume, layer.kernel()))  # unmatched: plain blur
        layer.match_intensity(sharp, blurred)
        fake = layer(layer.sharp_reference)
    assert len(layer.sharp_reference) == 8
    # H of the reference sample has the blurred domain's moments whatever the kernel's width
    # (float32 moments of 16k values: ~1e-6 relative)
    assert float(fake.mean()) == pytest.approx(float(blurred.mean()), rel=1e-4)
    assert float(fake.std()) == pytest.approx(float(blurred.std()), rel=1e-4)
    gain, _ = layer.intensity()
    assert float(gain.detach()) > 1.0  # the blur lowered the sparse peaks; the gain restores them
    gain.backward()  # the map stays a function of the kernel, so the adversarial loss sees it
    assert layer.logits.grad is not None and float(layer.logits.grad.abs().sum()) > 0


def test_intensity_map_with_a_margin_uses_the_references_spectrum_and_matches_the_direct_blur():
    """With a context margin the reference is transformed once; the map must equal the one from
    blurring the reference directly (float32 FFTs of the same size: equal to ~1e-6)."""
    margin = (2, 3, 3)
    layer = PsfLayer(gaussian_psf((5, 7, 7), (1.0, 1.5, 1.5)))
    sharp = torch.rand(8, 1, 12, 22, 22) ** 6
    layer.match_intensity(sharp, 0.2 + torch.rand(8, 1, 8, 16, 16), margin=margin)
    assert layer.reference_spectrum is not None
    gain, offset = layer.intensity()
    direct = fft_convolve_valid(layer.sharp_reference, layer.kernel(), margin)
    mean, std = layer.blurred_moments
    torch.testing.assert_close(gain, std / direct.std(), rtol=1e-5, atol=0)
    torch.testing.assert_close(offset, mean - gain * direct.mean(), rtol=1e-5, atol=1e-6)
    gain.backward()  # still a function of the kernel
    assert float(layer.logits.grad.abs().sum()) > 0


@pytest.mark.parametrize(("noise_variance", "signal_variance"), [(0.25, 0.5), (2.0, 0.075)])
def test_intensity_map_leaves_the_noise_out_of_the_matched_contrast(noise_variance, signal_variance):
    """H(x) gets its noise from the noise model, so it matches the blurred variance less the noise
    (0.75 − 0.25), and keeps a tenth of it (MIN_SIGNAL_SHARE) when the noise estimate exceeds it."""
    layer = PsfLayer(gaussian_psf((5, 7, 7), (1.0, 1.5, 1.5)))
    sharp = torch.rand(16, 1, 8, 16, 16) ** 6
    blurred = torch.randn(16, 1, 8, 16, 16)
    blurred = 1.0 + 0.75**0.5 * (blurred - blurred.mean()) / blurred.std()  # variance exactly 0.75
    with torch.no_grad():
        layer.match_intensity(sharp, blurred, noise_variance)
        fake = layer(layer.sharp_reference)
    assert float(fake.mean()) == pytest.approx(1.0, rel=1e-4)
    assert float(fake.var()) == pytest.approx(signal_variance, rel=1e-3)


def test_noise_model_is_drawn_on_the_blurred_branch():
    config = small_config()
    kernel = gaussian_psf((5, 7, 7), (1.0, 1.5, 1.5))
    x = torch.rand(2, 1, 8, 16, 16)
    quiet = build_model(config, kernel)
    noisy = build_model(config, kernel, NoiseModel(gain=0.0, floor=0.01))
    with torch.no_grad():
        assert torch.equal(quiet.blur(x), quiet.f(x))
        residual = noisy.blur(x) - noisy.f(x)
    assert float(residual.std()) == pytest.approx(0.1, rel=0.05)  # 4096 draws: ~1 % sampling error


@pytest.mark.parametrize(
    ("section", "key"),
    [({"optim": {"lr_gg": 1.0}}, "train.optim.lr_gg"),
     ({"optim": {"steps": "many"}}, "train.optim.steps"),
     ({"psf": {"shape_voxels": [4, 7, 7]}}, "train.psf.shape_voxels"),
     ({"model": "transformer"}, "train.model"),
     ({"generator": {"residual": 1}}, "train.generator.residual"),
     ({"optim": {"generator_ema": 1.0}}, "train.optim.generator_ema"),
     ({"optim": {"generator_grad_clip": -1.0}}, "train.optim.generator_grad_clip"),
     ({"generator_context": [0, -1, 0]}, "train.generator_context"),
     ({"loss": {"cycle_sharp_distance": "l3"}}, "train.loss.cycle_sharp_distance")],
)
def test_bad_config_names_the_key(section, key):
    with pytest.raises(CycledeconError, match=key.replace(".", r"\.")):
        parse_config(section)


def test_config_round_trips_through_a_plain_dict():
    config = small_config()
    assert parse_config(config.to_dict()) == config


def _save_tiny_model(path):
    config = small_config()
    generator = UNet3d(config.generator)
    metadata = {"generator": config.to_dict()["generator"], "receptive_field": [23, 23, 23],
                "patch_shape": [8, 16, 16], "channels": 1, "normalization": {"method": "percentile"},
                "voxel_size": [0.3, 0.1, 0.1]}
    save_model(path, generator, metadata, gaussian_psf((5, 7, 7), (1.0, 1.5, 1.5)))
    return generator.eval()


def test_model_file_round_trip(tmp_path):
    saved = _save_tiny_model(tmp_path / "model.pt")
    generator, metadata = load_model(tmp_path / "model.pt", "cpu")
    volume = torch.rand(1, 1, 8, 16, 16)
    with torch.no_grad():
        assert torch.equal(generator(volume), saved(volume))
    assert not generator.training
    assert metadata["patch_shape"] == [8, 16, 16] and metadata["learned_psf"].shape == (5, 7, 7)
    assert not list(tmp_path.glob(".*"))  # the atomic write left no temporary behind


def test_load_model_rejects_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(CycledeconError, match="no such model file"):
        load_model(tmp_path / "absent.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00not a torch file at all")
    with pytest.raises(CycledeconError, match="garbage.pt: not a cycledecon model"):
        load_model(tmp_path / "garbage.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CycledeconError, match="foreign.pt: not a cycledecon model"):
        load_model(tmp_path / "foreign.pt")
    _save_tiny_model(tmp_path / "model.pt")
    truncated = (tmp_path / "model.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(truncated[: len(truncated) // 2])
    with pytest.raises(CycledeconError, match="truncated.pt: not a cycledecon model"):
        load_model(tmp_path / "truncated.pt")
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    del payload["metadata"]["generator"]
    torch.save(payload, tmp_path / "incomplete.pt")
    with pytest.raises(CycledeconError, match="incomplete.pt: not a cycledecon model .metadata lacks generator"):
        load_model(tmp_path / "incomplete.pt")


def test_gaussian_phase_learns_widths_then_hands_over_the_same_kernel():
    layer = PsfLayer(gaussian_psf((7, 9, 9), (1.2, 1.5, 1.5)), gaussian_phase=True)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.1)
    target = torch.as_tensor(gaussian_psf((7, 9, 9), (2.0, 0.8, 0.8)))
    for _ in range(60):
        optimizer.zero_grad()
        ((layer.kernel() - target) ** 2).sum().backward()
        optimizer.step()
    # Three widths suffice to fit a Gaussian target (the initial ones are off by 40–90 %).
    assert torch.allclose(layer.log_sigma.exp(), torch.tensor([2.0, 0.8, 0.8]), rtol=0.1)
    before = layer.kernel().detach()
    layer.release()
    after = layer.kernel().detach()
    assert not layer.gaussian_phase
    # Hand-over only renormalizes after clamping logits at log(1e-12): differences ≪ 1e-6.
    assert torch.allclose(before, after, atol=1e-6)


def test_smoothness_penalty_prefers_a_smooth_kernel():
    smooth = PsfLayer(gaussian_psf((5, 7, 7), (1.0, 1.5, 1.5)), symmetric=False)
    rough = PsfLayer(gaussian_psf((5, 7, 7), (1.0, 1.5, 1.5))
                     * np.random.default_rng(0).uniform(0.2, 1.8, (5, 7, 7)), symmetric=False)
    with torch.no_grad():
        assert float(smooth.smooth_penalty()) < float(rough.smooth_penalty())


def test_exported_generator_is_the_moving_average_of_its_weights():
    model = build_model(small_config(optim={"generator_ema": 0.5, "decay_start": 0}),
                        gaussian_psf((5, 7, 7), (1.0, 1.5, 1.5)))
    psf = small_config().psf
    history = []
    for step in range(1, 4):
        with torch.no_grad():
            for p in model.g.parameters():
                p.add_(torch.randn_like(p))
        history.append([p.detach().clone() for p in model.g.parameters()])
        model.after_step(step, psf)
    # EMA with decay 0.5 that starts at the first weights: 0.25·w1 + 0.25·w2 + 0.5·w3
    expected = [0.25 * a + 0.25 * b + 0.5 * c for a, b, c in zip(*history)]
    for averaged, wanted, last in zip(model.deblurrer.parameters(), expected, history[-1]):
        assert torch.allclose(averaged, wanted, atol=1e-6)
        assert not torch.allclose(averaged, last)
    plain = build_model(small_config(optim={"generator_ema": 0.0}), gaussian_psf((5, 7, 7), (1.0, 1.0, 1.0)))
    assert plain.deblurrer is plain.g


def test_weight_average_starts_where_the_learning_rates_decay():
    """Weights before the decay start (here a blown-up G, as after a loss spike) never enter the
    average; until the average has started, the exported G is the last one."""
    config = small_config(optim={"generator_ema": 0.5, "steps": 4, "decay_start": 2})
    model = build_model(config, gaussian_psf((5, 7, 7), (1.0, 1.5, 1.5)))
    for step in range(1, 5):
        with torch.no_grad():
            for p in model.g.parameters():
                p.copy_(torch.full_like(p, 1e6 if step == 1 else float(step)))
        model.after_step(step, config.psf)
        if step <= 2:
            assert model.deblurrer is model.g
    # steps 3 and 4 averaged: 0.5·3 + 0.5·4
    for averaged in model.deblurrer.parameters():
        assert torch.allclose(averaged, torch.full_like(averaged, 3.5))


@pytest.mark.parametrize("dtype, layout", [(torch.float32, torch.contiguous_format),
                                           (torch.bfloat16, torch.channels_last_3d)])  # fmt: skip
def test_max_pool_2x_equals_max_pool3d_with_and_without_gradients(dtype, layout):
    """Exactly equal values (a maximum is exact in any precision); with gradients the pooling is
    max_pool3d's, whose backward gives a tied maximum's gradient to one voxel (the integers 0–3 drawn
    here tie often, so a pairwise-maximum backward would split it and differ)."""
    volume = torch.randint(0, 4, (2, 3, 4, 6, 8)).to(dtype).contiguous(memory_format=layout)
    with torch.no_grad():
        assert torch.equal(max_pool_2x(volume), F.max_pool3d(volume, 2))
    ours, theirs = volume.clone().requires_grad_(), volume.clone().requires_grad_()
    max_pool_2x(ours).sum().backward()
    F.max_pool3d(theirs, 2).sum().backward()
    assert torch.equal(ours.grad, theirs.grad)
