"""CameraCtrl's camera input: a camera path (read from a RealEstate10K pose file or generated from a basic
motion) and the Plücker ray map its pose encoder reads, six channels per pixel per frame.

Conventions are RealEstate10K's, as CameraCtrl was trained on them: world-to-camera [R | t] with OpenCV
camera axes (x right, y down, z forward); the camera centre is −Rᵀt and its forward axis in the world Rᵀ·(0,0,1).
"""
import math
from dataclasses import dataclass

import torch

from ..errors import AnimateDiffError

RE10K_ASPECT = 1280 / 720
# CameraCtrl's demo intrinsics (a RealEstate10K clip's), given to generated motions
DEFAULT_INTRINSICS = (0.474812461, 0.844111024, 0.5, 0.5)


@dataclass(frozen=True, eq=False)  # identity equality: == on tensors has no single truth value
class CameraPoses:
    """A camera path, one pose per frame, in RealEstate10K's convention."""
    intrinsics: torch.Tensor       # (F, 4) float64: fx, fy, cx, cy; fx, cx: fractions of the width, fy, cy: height
    world_to_camera: torch.Tensor  # (F, 3, 4) float64: [R | t], OpenCV camera axes (x right, y down, z forward)
    aspect: float                  # width / height of the frames the intrinsics were measured on (RealEstate10K: 16:9)

    def __len__(self) -> int:
        return self.world_to_camera.shape[0]

    def every(self, step: int) -> "CameraPoses":
        """Every step-th pose, from the first."""
        return CameraPoses(self.intrinsics[::step].clone(), self.world_to_camera[::step].clone(), self.aspect)


def read_pose_file(text: str, aspect: float = RE10K_ASPECT, name: str = "the pose file") -> CameraPoses:
    """RealEstate10K camera file: the source URL, then per frame
    `timestamp fx fy cx cy 0 0 r11 r12 r13 t1 r21 r22 r23 t2 r31 r32 r33 t3`. The first line is skipped when it
    is not a pose line (neither 19 fields nor all numbers: the URL); so are blank lines."""
    rows = []
    lines = [(number, line.split()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    for index, (number, fields) in enumerate(lines):
        if index == 0 and len(fields) != 19 and not all(_is_number(f) for f in fields):
            continue
        if len(fields) != 19:
            count = f"{len(fields)} number{'s' if len(fields) != 1 else ''}"
            raise AnimateDiffError(f"{name}, line {number}: {count}, but a RealEstate10K pose line has "
                                   "19 (timestamp fx fy cx cy 0 0, then the 3×4 world-to-camera matrix row by row).")
        bad = next((f for f in fields if not _is_number(f)), None)
        if bad is not None:
            raise AnimateDiffError(f"{name}, line {number}: {bad!r} is not a number.")
        rows.append(_checked_row([float(f) for f in fields], number, name))
    if not rows:
        raise AnimateDiffError(f"{name} has no pose lines: after the source URL it needs one line of 19 numbers "
                               "per frame (RealEstate10K's camera file format).")
    values = torch.tensor(rows, dtype=torch.float64)
    return CameraPoses(values[:, 1:5].clone(), values[:, 7:].reshape(-1, 3, 4).clone(), float(aspect))


def _is_number(field: str) -> bool:
    try:
        float(field)
        return True
    except ValueError:
        return False


def _checked_row(row: list[float], number: int, name: str) -> list[float]:
    where = f"{name}, line {number}"
    if not all(math.isfinite(x) for x in row):
        raise AnimateDiffError(f"{where}: a value is not finite (nan or inf).")
    if row[1] <= 0 or row[2] <= 0:
        raise AnimateDiffError(f"{where}: the focal lengths fx, fy (2nd and 3rd numbers) must be positive, "
                               f"not {row[1]:g}, {row[2]:g}.")
    if not (0 <= row[3] <= 1 and 0 <= row[4] <= 1):
        raise AnimateDiffError(f"{where}: the principal point cx, cy (4th and 5th numbers) is {row[3]:g}, {row[4]:g}; "
                               "RealEstate10K gives it, and fx, fy, as fractions of the frame's width and height "
                               "(about 0.5), not in pixels.")
    rotation = torch.tensor(row[7:], dtype=torch.float64).reshape(3, 4)[:, :3]
    # The files round to 6-7 significant digits: be tolerant, catch only what is not a rotation at all.
    off = (rotation @ rotation.T - torch.eye(3, dtype=torch.float64)).abs().max().item()
    det = torch.linalg.det(rotation).item()
    if abs(det - 1) > 1e-3 or off > 1e-3:
        raise AnimateDiffError(f"{where}: the matrix's left 3×3 is not a rotation (determinant {det:.4f}, "
                               f"|R·Rᵀ − I| up to {off:.4f}); the numbers after `0 0` must be [R | t] row by row.")
    return row


# The basic motions: CameraCtrl's/MotionCtrl's demo presets, renamed for what the camera does (rolls: for what
# the picture does). Frame i of 16
# turns the world-to-camera rotation by (i/16)·speed·(π/3)·a about x, y, z (R = Rz·Ry·Rx) and sets its
# translation to (i/16)·speed·1.5·t; the camera centre is then −Rᵀt. Every preset's sign does what its new name
# says (checked in tests/unit/test_camera_poses.py).
MOTIONS = {
    #                       rotation a      translation t      demo name
    "static":              ((0, 0, 0),     (0, 0, 0)),        # Static
    "move forward":        ((0, 0, 0),     (0, 0, -2)),       # Zoom In (a dolly, not a change of focal length)
    "move back":           ((0, 0, 0),     (0, 0, 2)),        # Zoom Out
    "move left":           ((0, 0, 0),     (1, 0, 0)),        # Pan Left (a truck: the camera slides, not turns)
    "move right":          ((0, 0, 0),     (-1, 0, 0)),       # Pan Right
    "move up":             ((0, 0, 0),     (0, 1, 0)),        # Pan Up (y is down: the centre goes to −y)
    "move down":           ((0, 0, 0),     (0, -1, 0)),       # Pan Down
    "pan left":            ((0, 1, 0),     (0, 0, 0)),        # Tilt Left (a turn about the vertical axis)
    "pan right":           ((0, -1, 0),    (0, 0, 0)),        # Tilt Right
    "tilt up":             ((-1, 0, 0),    (0, 0, 0)),        # Tilt Up
    "tilt down":           ((1, 0, 0),     (0, 0, 0)),        # Tilt Down
    # Clockwise as the picture turns on screen, as Camera Augment and AnimateDiff's MotionLoRAs name rolls; the
    # camera turns the other way, so these are the demo's two rolls with their names swapped.
    "roll clockwise":      ((0, 0, 1),     (0, 0, 0)),        # Roll Anticlockwise
    "roll anticlockwise":  ((0, 0, -1),    (0, 0, 0)),        # Roll Clockwise
}


def camera_motion(motion: str, frames: int, speed: float = 1.0, after: CameraPoses | None = None) -> CameraPoses:
    """`frames` poses of a basic motion, starting at rest. With `after`, the motion continues from after's last
    pose, in that camera's own frame (so "move forward" after "pan left" moves along the new heading), and is
    appended to after's frames: its first frame is one step on, so the camera does not pause at the join."""
    if motion not in MOTIONS:
        raise AnimateDiffError(f"camera motion {motion!r} is not one of: {', '.join(MOTIONS)}.")
    if frames < 1:
        raise AnimateDiffError(f"a camera motion needs at least 1 frame, not {frames}.")
    rotate, translate = (torch.tensor(v, dtype=torch.float64) for v in MOTIONS[motion])
    first = 0 if after is None else 1
    progress = (torch.arange(first, first + frames, dtype=torch.float64) / 16 * speed)[:, None]
    angles = progress * (math.pi / 3) * rotate
    steps = _square(torch.cat([_rotation(angles), (progress * 1.5 * translate)[:, :, None]], dim=2))
    if after is None:
        intrinsics = torch.tensor(DEFAULT_INTRINSICS, dtype=torch.float64).expand(frames, 4).clone()
        return CameraPoses(intrinsics, steps[:, :3], RE10K_ASPECT)
    # M_i · W_last: the step is expressed in the last camera's axes, as a world-to-camera change
    appended = (steps @ _square(after.world_to_camera[-1]))[:, :3]
    return CameraPoses(torch.cat([after.intrinsics, after.intrinsics[-1:].expand(frames, 4)]),
                       torch.cat([after.world_to_camera, appended]), after.aspect)


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """(F, 3) angles about x, y, z → (F, 3, 3) Rz·Ry·Rx, right-handed, as the demo presets were made."""
    rx, ry, rz = (_about_axis(axis, angles[:, axis]) for axis in range(3))
    return rz @ ry @ rx


def _about_axis(axis: int, angle: torch.Tensor) -> torch.Tensor:
    i, j = (axis + 1) % 3, (axis + 2) % 3  # cyclic order: a positive turn takes axis i towards axis j
    r = torch.eye(3, dtype=torch.float64).repeat(len(angle), 1, 1)
    r[:, i, i] = r[:, j, j] = angle.cos()
    r[:, i, j], r[:, j, i] = -angle.sin(), angle.sin()
    return r


def _square(rt: torch.Tensor) -> torch.Tensor:
    """(..., 3, 4) [R | t] → (..., 4, 4) with the row (0, 0, 0, 1)."""
    bottom = torch.zeros(*rt.shape[:-2], 1, 4, dtype=rt.dtype)
    bottom[..., 0, 3] = 1
    return torch.cat([rt, bottom], dim=-2)


def plucker_embedding(poses: CameraPoses, frames: list[int], height: int, width: int, device=None,
                      grid: tuple[int, int] | None = None) -> torch.Tensor:
    """(len(frames), 6, height, width) float32 ray map (o × d, d) at pixel resolution, for these frame numbers
    of the video, relative to the first of them: CameraCtrl was trained on 16-frame clips each relative to its
    first frame, so each context window gets its own. A path shorter than the video holds its last pose.
    `grid` (≥ height, width): the map over more pixels of the same camera, past the frame's bottom and right.
    The poses are composed in float64; the map, made for every call of a sampling run, on `device`."""
    if not frames or height < 1 or width < 1:
        raise AnimateDiffError(f"a camera ray map needs frames and a size, not {len(frames)} frames of "
                               f"{width}×{height}.")
    picked = torch.tensor([min(f, len(poses) - 1) for f in frames])
    world_to_camera = _square(poses.world_to_camera[picked])
    # c2w'_k = w2c_first · c2w_k; the first is exactly I (its moments exactly 0), as in CameraCtrl
    relative = world_to_camera[0] @ torch.linalg.inv(world_to_camera)
    relative[0] = torch.eye(4, dtype=torch.float64)
    relative = relative.to(device, torch.float32)
    fx, fy, cx, cy = (p.to(device, torch.float32)[:, None, None]
                      for p in _pixel_intrinsics(poses.intrinsics[picked], poses.aspect, height, width))
    rows, columns = grid or (height, width)
    v, u = torch.meshgrid(torch.arange(rows, dtype=torch.float32, device=device) + 0.5,
                          torch.arange(columns, dtype=torch.float32, device=device) + 0.5, indexing="ij")  # centres
    x, y = (u - cx) / fx, (v - cy) / fy
    d = torch.stack([x, y, torch.ones_like(x)], dim=1)  # (frames, xyz, H, W)
    d = torch.einsum("fij,fjhw->fihw", relative[:, :3, :3], d / d.norm(dim=1, keepdim=True))  # first camera's axes
    o = relative[:, :3, 3, None, None].expand_as(d)
    return torch.cat([torch.linalg.cross(o, d, dim=1), d], dim=1)


def _pixel_intrinsics(intrinsics: torch.Tensor, aspect: float, height: int, width: int):
    """fx, fy, cx, cy in pixels of a width × height frame cut from the pose's frames: CameraCtrl's rescale keeps
    pixels square as if the source were resized to cover the frame and centre-cropped."""
    fx, fy, cx, cy = intrinsics.unbind(-1)
    if aspect > width / height:
        fx = fx * height * aspect / width
    else:
        fy = fy * width / aspect / height
    return fx * width, fy * height, cx * width, cy * height
