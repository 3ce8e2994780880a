"""Lateral symmetries of training patches: which transforms, how often, and never along z."""

import itertools

import pytest
import torch

from cycledecon.augment import lateral_symmetries
from cycledecon.psf.pupil import PupilPsf


def lateral_images(patch: torch.Tensor) -> list[torch.Tensor]:
    """The eight images of `patch` under flips of y and x and a y–x swap."""
    images = []
    for flip_y, flip_x, swap in itertools.product((False, True), repeat=3):
        dims = [d for d, chosen in ((1, flip_y), (2, flip_x)) if chosen]
        image = patch.flip(dims) if dims else patch
        images.append(image.transpose(1, 2) if swap else image)
    return images


def test_every_output_is_a_lateral_image_of_its_input_and_all_eight_occur():
    patches = torch.arange(64 * 3 * 4 * 4, dtype=torch.float32).reshape(64, 3, 4, 4)
    out, _ = lateral_symmetries(patches, torch.Generator().manual_seed(0), swap_yx=True)
    seen = set()
    for patch, result in zip(patches, out):
        matches = [i for i, image in enumerate(lateral_images(patch)) if torch.equal(image, result)]
        assert len(matches) == 1  # a distinct-valued patch has eight distinct images
        seen.add(matches[0])
    # 64 draws of 8 equally likely transforms miss one with probability < 8·(7/8)^64 ≈ 1e-3
    assert seen == set(range(8))


def test_z_order_is_kept():
    patches = torch.rand(16, 5, 6, 6)
    out, _ = lateral_symmetries(patches, torch.Generator().manual_seed(1), swap_yx=True)
    # lateral transforms permute voxels within a plane, so each plane keeps its sum
    torch.testing.assert_close(out.sum(dim=(2, 3)), patches.sum(dim=(2, 3)))


@pytest.mark.parametrize("shape, swap_yx", [((8, 3, 4, 6), True), ((8, 3, 4, 4), False)])
def test_no_swap_on_rectangular_patches_or_when_not_asked(shape, swap_yx):
    patches = torch.rand(*shape)
    out, _ = lateral_symmetries(patches, torch.Generator().manual_seed(2), swap_yx=swap_yx)
    assert out.shape == patches.shape
    for patch, result in zip(patches, out):
        flips = [patch.flip(d) if d else patch for d in ([], [1], [2], [1, 2])]
        assert any(torch.equal(f, result) for f in flips)


def test_room_to_the_faces_follows_its_patch():
    """A patch cut from a stack, transformed, is the same transform of the whole stack cut
    elsewhere: the returned room must be that cut's distance to the transformed stack's faces."""
    stack = torch.randperm(4 * 12 * 12, dtype=torch.float32).reshape(4, 12, 12)  # distinct values
    origins = [(0, y, x) for y in (0, 2, 5) for x in (1, 4, 7)] * 4
    shape = (4, 5, 5)
    patches = torch.stack([stack[:, y : y + 5, x : x + 5] for _, y, x in origins])
    room = torch.tensor([[(o, n - o - p) for o, p, n in zip(origin, shape, stack.shape)] for origin in origins])
    out, out_room = lateral_symmetries(patches, torch.Generator().manual_seed(3), swap_yx=True, room=room)
    for result, faces in zip(out, out_room):
        found = [[[o, n - o - p] for o, p, n in zip((0, y, x), shape, image.shape)]
                 for image in lateral_images(stack) for y in range(8) for x in range(8)
                 if torch.equal(image[:, y : y + 5, x : x + 5], result)]
        assert found == [faces.tolist()]


def test_an_aberrated_pupil_psf_is_invariant_under_the_transforms():
    """Why the augmentation is valid: the learnable pupil model's PSF, spherical aberration
    included, has the lateral symmetries (and not the axial one, which is never applied)."""
    model = PupilPsf((9, 17, 17), (0.25, 0.1, 0.1), 1.4, 520.0, 1.515)
    with torch.no_grad():
        model.spherical.copy_(torch.tensor([0.5, -0.3]))
        psf = model()
    for image in lateral_images(psf)[1:]:
        # the radial profile is sampled on the same radii in every quadrant: equal to rounding
        torch.testing.assert_close(image, psf, atol=1e-6 * float(psf.max()), rtol=0)
    assert not torch.allclose(psf.flip(0), psf, atol=1e-3 * float(psf.max()))
