"""Random lateral symmetries of training patches, drawn per patch.

A widefield PSF of a rotationally symmetric pupil (the `pupil` model, whose aberrations are
spherical terms only) is unchanged by flipping y or x and, with square pixels, by swapping them,
so those transforms turn each patch into eight equally valid ones for both domains. z is never
flipped: spherical aberration makes the PSF asymmetric along the optical axis.
"""

from __future__ import annotations

import torch


def lateral_symmetries(
    patches: torch.Tensor, generator: torch.Generator, swap_yx: bool, room: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each patch of (n, z, y, x) flipped in y and/or x and, when `swap_yx`, transposed in (y, x),
    each with probability 1/2 drawn from `generator`.

    `room` (n, 3, 2), each patch's distance to its stack's faces (z, y, x; before, after), is
    transformed with its patch, so it still says where the stack ends; returned as given when None.
    """
    n, _, height, width = patches.shape
    swap_yx = swap_yx and height == width
    draws = torch.randint(2, (n, 3), generator=generator).bool().tolist()
    out, out_room = [], []
    for i, (patch, (flip_y, flip_x, swap)) in enumerate(zip(patches, draws)):
        dims = [d for d, chosen in ((1, flip_y), (2, flip_x)) if chosen]
        patch = patch.flip(dims) if dims else patch
        out.append(patch.transpose(1, 2) if swap and swap_yx else patch)
        if room is not None:
            faces = room[i].clone()
            for axis in dims:
                faces[axis] = faces[axis].flip(0)
            out_room.append(faces[[0, 2, 1]] if swap and swap_yx else faces)
    return torch.stack(out).contiguous(), torch.stack(out_room) if room is not None else None
