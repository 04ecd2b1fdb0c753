"""Rule-based camera augmentation (paper §4.3): a reference clip of a camera motion made from one still.

Every frame is a crop window of the source, resampled bilinearly (grid_sample) to width × height.
Geometry, with s = i / (frames − 1) running 0 → 1 over the clip and the *base window* being the largest
centred window of the source with the output's aspect ratio (size W0 × H0):

- zoom_in:  window scale k = 1 − speed·s (1 → 1−speed), centred: the view closes in.
- zoom_out: k = 1 − speed·(1 − s) (1−speed → 1), centred.
- pan_right: window (1−speed)·W0 wide, full height, left edge from 0 to speed·W0 (the view moves right,
  the content left); pan_left: from speed·W0 to 0.
- tilt_down: window (1−speed)·H0 high, top edge from 0 to speed·H0; tilt_up: from speed·H0 to 0.
- roll_clockwise / roll_anticlockwise: the picture turns clockwise / anticlockwise on screen by
  speed·360°·s (speed 0.25: a quarter turn). The window is a fixed centred one of scale
  min(W0, H0) / sqrt(W0² + H0²), whose diagonal fits the inscribed circle, so no corner ever leaves the source.

Coordinates are continuous pixel units (pixel j covers [j, j+1)); output pixel u samples the window at
u + 0.5 of its width. Pure torch.
"""
import math

import torch


class CameraMotion:
    ZOOM_IN = "zoom_in"
    ZOOM_OUT = "zoom_out"
    PAN_LEFT = "pan_left"
    PAN_RIGHT = "pan_right"
    TILT_UP = "tilt_up"
    TILT_DOWN = "tilt_down"
    ROLL_CLOCKWISE = "roll_clockwise"
    ROLL_ANTICLOCKWISE = "roll_anticlockwise"
    ALL = [ZOOM_IN, ZOOM_OUT, PAN_LEFT, PAN_RIGHT, TILT_UP, TILT_DOWN, ROLL_CLOCKWISE, ROLL_ANTICLOCKWISE]


def crop_windows(motion: str, frames: int, speed: float, width: float, height: float):
    """Per frame (centre x, centre y, window width, window height, clockwise angle in radians), in the
    coordinates of a `width` × `height` base window."""
    out = []
    for i in range(frames):
        s = i / (frames - 1) if frames > 1 else 0.0
        cx, cy, w, h, angle = width / 2, height / 2, width, height, 0.0
        if motion in (CameraMotion.ZOOM_IN, CameraMotion.ZOOM_OUT):
            k = 1 - speed * (s if motion == CameraMotion.ZOOM_IN else 1 - s)
            w, h = k * width, k * height
        elif motion in (CameraMotion.PAN_LEFT, CameraMotion.PAN_RIGHT):
            w = (1 - speed) * width
            left = speed * width * (s if motion == CameraMotion.PAN_RIGHT else 1 - s)
            cx = left + w / 2
        elif motion in (CameraMotion.TILT_UP, CameraMotion.TILT_DOWN):
            h = (1 - speed) * height
            top = speed * height * (s if motion == CameraMotion.TILT_DOWN else 1 - s)
            cy = top + h / 2
        elif motion in (CameraMotion.ROLL_CLOCKWISE, CameraMotion.ROLL_ANTICLOCKWISE):
            k = min(width, height) / math.hypot(width, height)
            w, h = k * width, k * height
            angle = 2 * math.pi * speed * s * (1 if motion == CameraMotion.ROLL_CLOCKWISE else -1)
        else:
            raise ValueError(f"unknown camera motion {motion!r}; one of {', '.join(CameraMotion.ALL)}")
        out.append((cx, cy, w, h, angle))
    return out


def camera_clip(image: torch.Tensor, motion: str, frames: int, speed: float, width: int, height: int):
    """(H, W, 3) still -> (frames, height, width, 3) clip of the camera motion."""
    if not 0 <= speed < 1:
        raise ValueError(f"speed {speed} must be in [0, 1): it is the fraction of the frame the camera moves over")
    src_h, src_w = image.shape[0], image.shape[1]
    # base window: the largest centred window of the source with the output's aspect ratio
    scale = min(src_w / width, src_h / height)
    base_w, base_h = width * scale, height * scale
    base_x, base_y = (src_w - base_w) / 2, (src_h - base_h) / 2
    u = (torch.arange(width, dtype=torch.float64) + 0.5) / width - 0.5    # −0.5..0.5 across the window
    v = (torch.arange(height, dtype=torch.float64) + 0.5) / height - 0.5
    v, u = torch.meshgrid(v, u, indexing="ij")
    grids = []
    for cx, cy, w, h, angle in crop_windows(motion, frames, speed, base_w, base_h):
        dx, dy = u * w, v * h
        # Content turning clockwise by θ on screen (y down): output offset d shows source offset R(−θ)·d.
        cos, sin = math.cos(angle), math.sin(angle)
        sx = base_x + cx + cos * dx + sin * dy
        sy = base_y + cy - sin * dx + cos * dy
        # grid_sample's normalised coordinates with align_corners=False: −1 and 1 are the source's outer edges
        grids.append(torch.stack((2 * sx / src_w - 1, 2 * sy / src_h - 1), dim=-1))
    grid = torch.stack(grids).to(image.dtype)
    source = image.movedim(-1, 0).unsqueeze(0).expand(frames, -1, -1, -1)
    clip = torch.nn.functional.grid_sample(source, grid, mode="bilinear", padding_mode="border",
                                           align_corners=False)
    return clip.movedim(1, -1)
