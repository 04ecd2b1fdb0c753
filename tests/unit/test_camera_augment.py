"""Camera augmentation: exact crop geometry, checked on images whose pixels encode their own coordinates.

Channel 0 of pixel (row j, column i) holds x = (i + 0.5) / W and channel 1 holds y = (j + 0.5) / H, a
linear ramp, so bilinear resampling returns exactly the (normalised) source coordinate a pixel was taken
from, wherever it lies between the outermost pixel centres. Expected coordinates are written out from the
geometry documented in lora/augment.py, independently of its code.
"""
import math

import pytest
import torch

from animatediff.lora.augment import CameraMotion, camera_clip

SIZE = 64


def coordinate_image(width=SIZE, height=SIZE):
    x = ((torch.arange(width, dtype=torch.float64) + 0.5) / width).expand(height, width)
    y = ((torch.arange(height, dtype=torch.float64) + 0.5) / height)[:, None].expand(height, width)
    return torch.stack((x, y, torch.zeros_like(x)), dim=-1)


def output_positions(n=SIZE):
    """Output pixel centres as a fraction of the window, 0..1."""
    return (torch.arange(n, dtype=torch.float64) + 0.5) / n


def sampled(clip, frame):
    """(x, y) source coordinates each output pixel of `frame` shows, inner pixels only (the outermost row
    and column may fall outside the outer pixel centres, where the ramp is clamped)."""
    return clip[frame, 1:-1, 1:-1, 0], clip[frame, 1:-1, 1:-1, 1]


def grid(x_of_u, y_of_v):
    p = output_positions()[1:-1]
    return x_of_u(p).expand(len(p), len(p)), y_of_v(p)[:, None].expand(len(p), len(p))


@pytest.mark.parametrize("motion, speed", [(CameraMotion.PAN_RIGHT, 0.25), (CameraMotion.PAN_LEFT, 0.25),
                                           (CameraMotion.TILT_DOWN, 0.2), (CameraMotion.TILT_UP, 0.2)])
def test_pan_and_tilt_slide_a_shrunk_window_edge_to_edge(motion, speed):
    clip = camera_clip(coordinate_image(), motion, 16, speed, SIZE, SIZE)
    assert clip.shape == (16, SIZE, SIZE, 3)
    start, end = {CameraMotion.PAN_RIGHT: (0, speed), CameraMotion.PAN_LEFT: (speed, 0),
                  CameraMotion.TILT_DOWN: (0, speed), CameraMotion.TILT_UP: (speed, 0)}[motion]
    horizontal = motion in (CameraMotion.PAN_RIGHT, CameraMotion.PAN_LEFT)
    for frame, offset in ((0, start), (15, end), (5, start + (end - start) * 5 / 15)):
        moving = lambda p: offset + (1 - speed) * p  # noqa: E731  window of 1−speed starting at `offset`
        still = lambda p: p  # noqa: E731
        want_x, want_y = grid(moving, still) if horizontal else grid(still, moving)
        got_x, got_y = sampled(clip, frame)
        torch.testing.assert_close(got_x, want_x, atol=1e-6, rtol=0)
        torch.testing.assert_close(got_y, want_y, atol=1e-6, rtol=0)


@pytest.mark.parametrize("motion", [CameraMotion.ZOOM_IN, CameraMotion.ZOOM_OUT])
def test_zoom_scales_a_centred_window(motion):
    speed = 0.5
    clip = camera_clip(coordinate_image(), motion, 8, speed, SIZE, SIZE)
    first, last = (1.0, 1 - speed) if motion == CameraMotion.ZOOM_IN else (1 - speed, 1.0)
    for frame, k in ((0, first), (7, last)):
        centred = lambda p: 0.5 + k * (p - 0.5)  # noqa: E731
        want_x, want_y = grid(centred, centred)
        got_x, got_y = sampled(clip, frame)
        torch.testing.assert_close(got_x, want_x, atol=1e-6, rtol=0)
        torch.testing.assert_close(got_y, want_y, atol=1e-6, rtol=0)
    # frame 0 of zoom-in is the source itself
    if motion == CameraMotion.ZOOM_IN:
        torch.testing.assert_close(clip[0], coordinate_image(), atol=1e-6, rtol=0)


def test_quarter_roll_clockwise_turns_the_picture_by_90_degrees():
    clip = camera_clip(coordinate_image(), CameraMotion.ROLL_CLOCKWISE, 5, 0.25, SIZE, SIZE)
    k = 1 / math.sqrt(2)  # the fixed window whose diagonal fits the source
    p = output_positions()[1:-1] - 0.5
    dy, dx = torch.meshgrid(p, p, indexing="ij")
    # frame 0: unrotated centred window
    torch.testing.assert_close(clip[0, 1:-1, 1:-1, 0], 0.5 + k * dx, atol=1e-6, rtol=0)
    # last frame, a quarter turn clockwise: what was above the centre is now right of it, so the pixel at
    # offset (dx, dy) shows the source at (dy, −dx)
    torch.testing.assert_close(clip[4, 1:-1, 1:-1, 0], 0.5 + k * dy, atol=1e-6, rtol=0)
    torch.testing.assert_close(clip[4, 1:-1, 1:-1, 1], 0.5 - k * dx, atol=1e-6, rtol=0)
    anti = camera_clip(coordinate_image(), CameraMotion.ROLL_ANTICLOCKWISE, 5, 0.25, SIZE, SIZE)
    torch.testing.assert_close(anti[4, 1:-1, 1:-1, 0], 0.5 - k * dy, atol=1e-6, rtol=0)
    torch.testing.assert_close(anti[4, 1:-1, 1:-1, 1], 0.5 + k * dx, atol=1e-6, rtol=0)


def test_other_aspect_uses_the_largest_centred_window():
    """A 64×32 output from a 64×64 source: the base window is the centred 64×32 band (rows 16..48)."""
    clip = camera_clip(coordinate_image(), CameraMotion.PAN_RIGHT, 3, 0.5, 64, 32)
    assert clip.shape == (3, 32, 64, 3)
    u = (torch.arange(64, dtype=torch.float64) + 0.5) / 64
    v = (torch.arange(32, dtype=torch.float64) + 0.5) / 32
    torch.testing.assert_close(clip[2, 1:-1, 1:-1, 0], (0.5 + 0.5 * u[1:-1]).expand(30, 62), atol=1e-6, rtol=0)
    torch.testing.assert_close(clip[2, 1:-1, 1:-1, 1], (0.25 + 0.5 * v[1:-1])[:, None].expand(30, 62),
                               atol=1e-6, rtol=0)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="speed"):
        camera_clip(coordinate_image(), CameraMotion.ZOOM_IN, 4, 1.0, SIZE, SIZE)
    with pytest.raises(ValueError, match="unknown camera motion"):
        camera_clip(coordinate_image(), "dolly", 4, 0.2, SIZE, SIZE)
