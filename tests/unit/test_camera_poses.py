"""CameraCtrl's camera maths: the Plücker ray map against a per-pixel reference written from the formula,
the basic motions against the geometry their names promise, and the RealEstate10K pose-file reader.

Geometry: world-to-camera [R | t], OpenCV camera axes (x right, y down, z forward). The camera centre is −Rᵀt;
its forward, right and down axes in the world are Rᵀ·(0,0,1), Rᵀ·(1,0,0), Rᵀ·(0,1,0); "up" is −y.
"""
import math

import numpy as np
import pytest
import torch

from animatediff.errors import AnimateDiffError
from animatediff.sampling.camera import (MOTIONS, RE10K_ASPECT, CameraPoses, camera_motion, plucker_embedding,
                                         read_pose_file)

FX, FY = 0.474812461, 0.844111024


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def random_poses(frames, seed, aspect=RE10K_ASPECT):
    rng = np.random.default_rng(seed)
    w2c = np.stack([np.hstack([random_rotation(rng), rng.normal(size=(3, 1))]) for _ in range(frames)])
    intrinsics = np.stack([rng.uniform(0.3, 1.2, frames), rng.uniform(0.5, 1.5, frames),
                           rng.uniform(0.4, 0.6, frames), rng.uniform(0.4, 0.6, frames)], axis=1)
    return CameraPoses(torch.from_numpy(intrinsics), torch.from_numpy(w2c), aspect)


def reference_plucker(poses, frames, height, width):
    """CameraCtrl's ray_condition for one pixel at a time, from the formula (FACTS §2), in numpy."""
    intrinsics, w2c = poses.intrinsics.numpy(), poses.world_to_camera.numpy()
    square = [np.vstack([m, [0, 0, 0, 1]]) for m in w2c]
    picked = [min(f, len(w2c) - 1) for f in frames]
    out = np.zeros((len(frames), 6, height, width))
    for k, p in enumerate(picked):
        c2w = np.eye(4) if k == 0 else square[picked[0]] @ np.linalg.inv(square[p])
        fx, fy, cx, cy = intrinsics[p]
        if poses.aspect > width / height:
            fx = height * poses.aspect * fx / width
        else:
            fy = width / poses.aspect * fy / height
        fx, fy, cx, cy = fx * width, fy * height, cx * width, cy * height
        for y in range(height):
            for x in range(width):
                d = np.array([(x + 0.5 - cx) / fx, (y + 0.5 - cy) / fy, 1.0])
                d = c2w[:3, :3] @ (d / np.linalg.norm(d))
                out[k, :, y, x] = [*np.cross(c2w[:3, 3], d), *d]
    return out


# (height, width, pose aspect): the pose wider than the frame (fx rescaled) and narrower (fy rescaled)
SIZES = [(3, 5, RE10K_ASPECT), (5, 3, RE10K_ASPECT), (2, 7, RE10K_ASPECT), (4, 4, 0.75), (3, 5, 2.5)]


@pytest.mark.parametrize("height, width, aspect", SIZES)
@pytest.mark.parametrize("frames", [[0, 1, 2, 3, 4, 5], [2, 5, 3], [4, 9, 12]])
def test_plucker_map_matches_a_per_pixel_reference(height, width, aspect, frames):
    poses = random_poses(6, seed=height * 100 + width + len(frames), aspect=aspect)
    got = plucker_embedding(poses, frames, height, width)
    assert got.dtype == torch.float32 and got.shape == (len(frames), 6, height, width)
    np.testing.assert_allclose(got.numpy(), reference_plucker(poses, frames, height, width), rtol=0, atol=2e-6)


def test_first_frame_has_zero_moments_and_the_intrinsics_rays():
    # 16×24 from 16:9 intrinsics, as 256×384 is: the pose is wider, so fx_px = fx·H·(16/9) and fy_px = fy·H
    poses = random_poses(3, seed=7)
    poses = CameraPoses(torch.tensor([[FX, FY, 0.5, 0.5]] * 3, dtype=torch.float64), poses.world_to_camera,
                        RE10K_ASPECT)
    rays = plucker_embedding(poses, [1, 2], 16, 24)
    assert torch.equal(rays[0, :3], torch.zeros(3, 16, 24))
    fx_px, fy_px = FX * 16 * 16 / 9, FY * 16
    for y, x in [(0, 0), (15, 23), (7, 12), (3, 20)]:
        d = torch.tensor([(x + 0.5 - 12) / fx_px, (y + 0.5 - 8) / fy_px, 1.0], dtype=torch.float64)
        torch.testing.assert_close(rays[0, 3:, y, x], (d / d.norm()).float(), rtol=0, atol=1e-7)
    assert rays[0, 3:, 7, 12][0] > 0 and rays[0, 3:, 8, 11][0] < 0   # the optical axis runs between pixels


def test_a_static_path_gives_the_same_map_every_frame():
    rays = plucker_embedding(camera_motion("static", 4), [0, 1, 2, 3], 4, 6)
    assert torch.equal(rays, rays[:1].expand_as(rays)) and not rays[:, :3].any()


def test_frames_past_the_end_hold_the_last_pose():
    poses = random_poses(5, seed=3)
    held = CameraPoses(torch.cat([poses.intrinsics, poses.intrinsics[-1:].repeat(4, 1)]),
                       torch.cat([poses.world_to_camera, poses.world_to_camera[-1:].repeat(4, 1, 1)]), poses.aspect)
    frames = [2, 3, 4, 5, 6, 8]
    assert torch.equal(plucker_embedding(poses, frames, 3, 4), plucker_embedding(held, frames, 3, 4))
    rays = plucker_embedding(poses, [1, 4, 7, 30], 3, 4)
    assert torch.equal(rays[1], rays[2]) and torch.equal(rays[2], rays[3])


def test_a_window_is_relative_to_its_own_first_frame():
    poses = random_poses(7, seed=11)
    window = plucker_embedding(poses, [4, 5, 6], 3, 5)
    tail = CameraPoses(poses.intrinsics[4:], poses.world_to_camera[4:], poses.aspect)
    torch.testing.assert_close(window, plucker_embedding(tail, [0, 1, 2], 3, 5), rtol=0, atol=1e-6)
    assert not window[0, :3].any()
    whole = plucker_embedding(poses, list(range(7)), 3, 5)
    assert (whole[4:] - window).abs().max() > 0.1


def test_the_map_does_not_depend_on_where_the_world_frame_is():
    poses = random_poses(4, seed=5)
    g = np.vstack([np.hstack([random_rotation(np.random.default_rng(1)), [[3.0], [-2.0], [0.5]]]), [0, 0, 0, 1]])
    moved = torch.from_numpy(np.stack([np.vstack([m, [0, 0, 0, 1]]) @ np.linalg.inv(g)
                                       for m in poses.world_to_camera.numpy()])[:, :3])
    moved = CameraPoses(poses.intrinsics, moved, poses.aspect)
    torch.testing.assert_close(plucker_embedding(moved, [0, 1, 2, 3], 4, 3),
                               plucker_embedding(poses, [0, 1, 2, 3], 4, 3), rtol=0, atol=1e-6)


# --- generated motions ---------------------------------------------------------------------------------------

def axes(pose):
    """(centre, forward, right, down) of a (3, 4) world-to-camera pose, in world coordinates."""
    r, t = pose[:, :3], pose[:, 3]
    return -r.T @ t, r.T @ torch.tensor([0.0, 0, 1], dtype=torch.float64), r[0], r[1]


def angle_at(frame, speed):
    return frame / 16 * speed * math.pi / 3


def sideways_move(direction, distance):
    """A move without a turn: the centre goes `distance` (per 16 frames at speed 1) along `direction`."""
    def check(pose, frame, speed):
        centre, forward, right, down = axes(pose)
        torch.testing.assert_close(pose[:, :3], torch.eye(3, dtype=torch.float64), rtol=0, atol=0)
        torch.testing.assert_close(centre, frame / 16 * speed * distance * torch.tensor(direction, dtype=torch.float64))
    return check


def turn(check_axes):
    """A turn on the spot by (frame/16)·speed·60°: the centre stays, `check_axes(θ, forward, right, down)`."""
    def check(pose, frame, speed):
        centre, forward, right, down = axes(pose)
        torch.testing.assert_close(centre, torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12)
        check_axes(angle_at(frame, speed), forward, right, down)
    return check


def close(a, b):
    assert abs(a - b) < 1e-9, (a, b)


def pans_left(theta, forward, right, down):   # forward swings from +z towards −x, about the vertical
    close(math.atan2(-forward[0], forward[2]), theta)
    close(forward[1], 0)
    close(down[1], 1)


def pans_right(theta, forward, right, down):
    close(math.atan2(forward[0], forward[2]), theta)
    close(forward[1], 0)
    close(down[1], 1)


def tilts_up(theta, forward, right, down):    # forward lifts from +z towards −y (y is down)
    close(math.atan2(-forward[1], forward[2]), theta)
    close(forward[0], 0)
    close(right[0], 1)


def tilts_down(theta, forward, right, down):
    close(math.atan2(forward[1], forward[2]), theta)
    close(forward[0], 0)
    close(right[0], 1)


def rolls_clockwise(theta, forward, right, down):
    # seen from behind the camera (x right, y down, looking along +z), its up axis −down turns from
    # straight up (−y) towards the right (+x): clockwise
    up = -down
    close(math.atan2(up[0], -up[1]), theta)
    close(forward[2], 1)


def rolls_anticlockwise(theta, forward, right, down):
    up = -down
    close(math.atan2(-up[0], -up[1]), theta)
    close(forward[2], 1)


GEOMETRY = {
    "static": sideways_move((0, 0, 0), 0.0),
    "move forward": sideways_move((0, 0, 1), 3.0),
    "move back": sideways_move((0, 0, -1), 3.0),
    "move left": sideways_move((-1, 0, 0), 1.5),
    "move right": sideways_move((1, 0, 0), 1.5),
    "move up": sideways_move((0, -1, 0), 1.5),
    "move down": sideways_move((0, 1, 0), 1.5),
    "pan left": turn(pans_left),
    "pan right": turn(pans_right),
    "tilt up": turn(tilts_up),
    "tilt down": turn(tilts_down),
    # named for the picture, which turns the other way round from the camera
    "roll clockwise": turn(rolls_anticlockwise),
    "roll anticlockwise": turn(rolls_clockwise),
}


def test_every_motion_has_its_geometry_checked():
    assert list(MOTIONS) == list(GEOMETRY)


@pytest.mark.parametrize("motion", list(GEOMETRY))
@pytest.mark.parametrize("speed", [1.0, 2.0, 0.5])
def test_each_motion_does_what_its_name_says(motion, speed):
    poses = camera_motion(motion, 16, speed)
    assert len(poses) == 16 and poses.aspect == RE10K_ASPECT
    assert torch.equal(poses.intrinsics, torch.tensor([[FX, FY, 0.5, 0.5]] * 16, dtype=torch.float64))
    assert torch.equal(poses.world_to_camera[0], torch.eye(3, 4, dtype=torch.float64))
    for frame in (1, 8, 15):
        GEOMETRY[motion](poses.world_to_camera[frame], frame, speed)


def test_roll_clockwise_turns_the_picture_clockwise_on_screen_as_camera_augment_does():
    # a point straight above the view's centre (−y) drifts right on screen (x > 0): the camera rolls anticlockwise
    pose = camera_motion("roll clockwise", 16).world_to_camera[8]
    seen = pose[:, :3] @ torch.tensor([0.0, -1, 4], dtype=torch.float64) + pose[:, 3]
    assert seen[0] / seen[2] > 0.01 and seen[1] < 0


def test_magnitude_at_frame_15():
    # speed 1: 15/16 of 60° and of 1.5 units (move forward: 3 units); speed 2 twice as far
    for speed in (1, 2):
        centre, forward, _, _ = axes(camera_motion("move left", 16, speed).world_to_camera[15])
        close(centre[0], -15 / 16 * 1.5 * speed)
        centre, forward, _, _ = axes(camera_motion("pan right", 16, speed).world_to_camera[15])
        close(math.acos(forward[2]), math.radians(15 / 16 * 60 * speed))


def test_unknown_motion_and_no_frames_are_refused():
    with pytest.raises(AnimateDiffError, match="'zoom in' is not one of: static, move forward"):
        camera_motion("zoom in", 16)
    with pytest.raises(AnimateDiffError, match="at least 1 frame"):
        camera_motion("static", 0)


# --- appending -----------------------------------------------------------------------------------------------

def test_appending_continues_from_the_last_pose_one_step_on():
    before = random_poses(5, seed=2)
    poses = camera_motion("tilt up", 8, after=before)
    assert len(poses) == 13 and poses.aspect == before.aspect
    assert torch.equal(poses.world_to_camera[:5], before.world_to_camera)
    # no pause at the join: the first appended pose is the motion's frame 1 from after's last pose
    step = np.vstack([camera_motion("tilt up", 2).world_to_camera[1].numpy(), [0, 0, 0, 1]])
    last = np.vstack([before.world_to_camera[4].numpy(), [0, 0, 0, 1]])
    np.testing.assert_allclose(poses.world_to_camera[5].numpy(), (step @ last)[:3], rtol=0, atol=1e-12)
    assert torch.equal(poses.intrinsics[:5], before.intrinsics)
    assert torch.equal(poses.intrinsics[5:], before.intrinsics[4:].expand(8, 4))


def test_appending_composes_in_the_camera_frame():
    before = random_poses(3, seed=4)
    own = camera_motion("roll anticlockwise", 7, speed=1.5).world_to_camera
    poses = camera_motion("roll anticlockwise", 6, speed=1.5, after=before)
    last = np.vstack([before.world_to_camera[-1].numpy(), [0, 0, 0, 1]])
    for i in range(6):
        expected = np.vstack([own[i + 1].numpy(), [0, 0, 0, 1]]) @ last
        np.testing.assert_allclose(poses.world_to_camera[3 + i].numpy(), expected[:3], rtol=0, atol=1e-12)


def test_move_forward_after_pan_left_moves_along_the_new_heading():
    turned = camera_motion("pan left", 16)
    poses = camera_motion("move forward", 16, after=turned)
    start, heading, _, _ = axes(turned.world_to_camera[-1])
    close(math.atan2(-heading[0], heading[2]), angle_at(15, 1))   # 56.25° to the left
    for i in (1, 8, 15):
        centre, forward, _, _ = axes(poses.world_to_camera[15 + i])
        torch.testing.assert_close(centre - start, i / 16 * 3.0 * heading, rtol=0, atol=1e-12)
        torch.testing.assert_close(forward, heading, rtol=0, atol=1e-12)


def test_an_appended_motion_looks_the_same_as_on_its_own():
    # relative to its first frame, a motion's rays do not depend on where it started
    alone = plucker_embedding(camera_motion("move right", 16), list(range(16)), 3, 4)
    after = camera_motion("move right", 15, after=camera_motion("tilt down", 16, speed=0.7))
    torch.testing.assert_close(plucker_embedding(after, list(range(15, 31)), 3, 4), alone, rtol=0, atol=1e-6)


def test_a_larger_grid_extends_the_frames_rays_past_its_bottom_and_right():
    poses = random_poses(3, seed=7)
    frame = plucker_embedding(poses, [0, 1, 2], 5, 7)
    torch.testing.assert_close(plucker_embedding(poses, [0, 1, 2], 5, 7, grid=(8, 9))[..., :5, :7], frame,
                               rtol=0, atol=1e-6)


# --- pose files ------------------------------------------------------------------------------------------------

def pose_line(timestamp, rotation, translation, digits=9):
    numbers = [FX, FY, 0.5, 0.5, 0.0, 0.0]
    for row in range(3):
        numbers += [*rotation[row], translation[row]]
    return f"{timestamp} " + " ".join(f"{x:.{digits}f}" for x in numbers)


def realistic_file(frames=16, digits=9, url="https://www.youtube.com/watch?v=0vFQRKKFWxw"):
    """A RealEstate10K camera file: the URL, then a slow drift and turn, rounded as the files are."""
    lines = [url] if url else []
    for i in range(frames):
        rotation = np.eye(3)
        for axis, a in enumerate([0.002 * i, -0.01 * i, 0.001 * i]):   # a small general rotation, Rz·Ry·Rx
            c, s = math.cos(a), math.sin(a)
            j, k = (axis + 1) % 3, (axis + 2) % 3
            m = np.eye(3)
            m[j, j] = m[k, k] = c
            m[j, k], m[k, j] = -s, s
            rotation = m @ rotation
        lines.append(pose_line(45712000 + 33367 * i, rotation.tolist(), [0.01 * i, -0.003 * i, -0.05 * i], digits))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("digits", [9, 6])
def test_a_realestate10k_file_reads_back_its_values(digits):
    text = realistic_file(digits=digits)
    poses = read_pose_file(text)
    assert len(poses) == 16 and poses.aspect == RE10K_ASPECT
    rows = [[float(x) for x in line.split()] for line in text.splitlines()[1:]]
    assert poses.intrinsics.dtype == torch.float64 and poses.world_to_camera.dtype == torch.float64
    assert torch.equal(poses.intrinsics, torch.tensor([r[1:5] for r in rows], dtype=torch.float64))
    assert torch.equal(poses.world_to_camera, torch.tensor([r[7:] for r in rows], dtype=torch.float64).view(16, 3, 4))


def test_no_url_line_blank_lines_crlf_and_an_aspect_are_fine():
    text = realistic_file(frames=4, url=None).replace("\n", "\r\n\r\n")
    poses = read_pose_file(text, aspect=1.5)
    assert len(poses) == 4 and poses.aspect == 1.5
    assert torch.equal(poses.world_to_camera, read_pose_file(realistic_file(frames=4)).world_to_camera)


def with_line(n, change):
    """The realistic file with pose line `n` (1-based, after the URL) passed through `change(fields)`."""
    lines = realistic_file(frames=5).splitlines()
    fields = lines[n].split()
    lines[n] = " ".join(str(x) for x in change(fields))
    return "\n".join(lines)


def setting(index, value):
    return lambda fields: fields[:index] + [value] + fields[index + 1:]


def scaled_rotation(factor):
    return lambda f: f[:7] + [float(x) * factor if i % 4 != 3 else x for i, x in enumerate(f[7:])]


BAD_FILES = [
    (with_line(3, lambda f: f[:-1]), "line 4: 18 numbers"),
    (with_line(2, lambda f: f + ["0.1"]), "line 3: 20 numbers"),
    ("0 0.5 0.8 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1\n", "line 1: 18 numbers"),
    (with_line(1, setting(9, "0.1.2")), "line 2: '0.1.2' is not a number"),
    (realistic_file(frames=3, url=None).replace(" 0.500000000", " 0.5OO", 1), "line 1: '0.5OO' is not a number"),
    (with_line(5, setting(18, "nan")), "line 6: a value is not finite"),
    (with_line(2, setting(3, "inf")), "line 3: a value is not finite"),
    (with_line(4, setting(1, "0")), "line 5: the focal lengths"),
    (with_line(1, setting(2, "-0.84")), "line 2: the focal lengths"),
    (with_line(2, setting(3, "320")), "line 3: the principal point cx, cy .* is 320, 0.5.*not in pixels"),
    ("0 0.5 0.8 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0 7\n", "line 1: 20 numbers"),
    ("0\n0 0.5 0.8 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0\n", "line 1: 1 number, but"),
    (with_line(2, scaled_rotation(1.01)), "line 3: the matrix's left 3×3 is not a rotation"),
    (with_line(3, scaled_rotation(-1.0)), "line 4: the matrix's left 3×3 is not a rotation \\(determinant -1"),
    (with_line(1, setting(8, "0.01")), "line 2: the matrix's left 3×3 is not a rotation"),
    ("https://www.youtube.com/watch?v=0vFQRKKFWxw\n\n", "has no pose lines"),
    ("", "has no pose lines"),
]


@pytest.mark.parametrize("text, message", BAD_FILES)
def test_bad_pose_files_say_what_and_where(text, message):
    with pytest.raises(AnimateDiffError, match=message) as error:
        read_pose_file(text, name="orbit.txt")
    assert str(error.value).startswith("orbit.txt")


def test_rounding_noise_in_a_rotation_is_accepted():
    text = with_line(2, scaled_rotation(1.0002))
    assert len(read_pose_file(text)) == 5
