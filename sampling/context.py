"""Context windows: which frames the UNet sees together at each step, and how overlapping results mix.

Pure Python + torch (no ComfyUI). A window is a list of frame indices, in the order the motion module
sees them (positions 0..len-1); a looped window may run past the last frame back to frame 0.

Every schedule covers every frame at every step; windows are never longer than the context length and
never repeat a frame. `context_stride` > 1 adds windows of spaced frames (every 2nd, 4th, … frame) for
long-range coherence: spacing d tiles each of the d sub-sequences r, r+d, r+2d, … the way spacing 1 tiles
the whole video, and is used only while a sub-sequence still holds a full window (d · length ≤ frames).
"""
import math

import torch

from ..errors import AnimateDiffError


class ContextSchedule:
    UNIFORM_STANDARD = "uniform_standard"  # overlapping windows; their placement shifts every step, so seams move
    UNIFORM_LOOPED = "uniform_looped"      # like uniform_standard on a ring: windows may wrap from the end to 0
    STATIC = "static"                      # the same overlapping windows every step (last one pulled back)
    BATCHED = "batched"                    # back-to-back windows, no overlap (fastest; seams stay visible)
    ALL = [UNIFORM_STANDARD, UNIFORM_LOOPED, STATIC, BATCHED]


class FuseMethod:
    PYRAMID = "pyramid"                # weight rises towards the window's middle frames
    FLAT = "flat"                      # plain average of every window that holds the frame
    OVERLAP_LINEAR = "overlap_linear"  # weight 1 inside, linear ramps across the overlapping ends (a crossfade)
    ALL = [PYRAMID, FLAT, OVERLAP_LINEAR]


def check_settings(length: int, overlap: int, stride: int = 1, schedule: str = ContextSchedule.UNIFORM_STANDARD,
                   fuse_method: str = FuseMethod.PYRAMID):
    """Raises an AnimateDiffError that names the input a user has to change."""
    if length < 1:
        raise AnimateDiffError(f"context_length must be at least 1 (it is {length}); 16 is typical.")
    if overlap < 0:
        raise AnimateDiffError(f"context_overlap must be 0 or more (it is {overlap}); 4 is typical.")
    if overlap >= length:
        raise AnimateDiffError(f"context_overlap ({overlap}) must be smaller than context_length ({length}); "
                               f"a quarter of it (e.g. 4 for 16) is typical.")
    if stride < 1:
        raise AnimateDiffError(f"context_stride must be at least 1 (it is {stride}); 1 adds no spaced windows.")
    if schedule not in ContextSchedule.ALL:
        raise AnimateDiffError(f"schedule must be one of {ContextSchedule.ALL}, not {schedule!r}.")
    if fuse_method not in FuseMethod.ALL:
        raise AnimateDiffError(f"fuse_method must be one of {FuseMethod.ALL}, not {fuse_method!r}.")


def rotation(step: int) -> float:
    """0, 1/2, 1/4, 3/4, 1/8, 5/8, …: the base-2 van der Corput sequence. Consecutive steps put their seams
    far apart, and over many steps the seams visit every position evenly."""
    fraction, scale = 0.0, 0.5
    while step > 0:
        fraction += scale * (step & 1)
        step >>= 1
        scale /= 2
    return fraction


def _tile_line(n: int, length: int, overlap: int, offset: int) -> list[list[int]]:
    """Windows on positions 0..n-1 starting at offset + k·(length - overlap), every k; a window that would
    reach past either end is moved inside (so all keep full length) and duplicates are dropped.
    The unmoved windows overlap each other and reach both ends; moving one inside only adds positions."""
    if n <= length:
        return [list(range(n))]
    hop = length - overlap
    start = offset % hop - hop if offset % hop else 0  # the lattice start at or just before position 0
    starts = []
    while True:
        placed = min(max(start, 0), n - length)
        if not starts or starts[-1] != placed:
            starts.append(placed)
        if start + length >= n:
            return [list(range(s, s + length)) for s in starts]
        start += hop


def _tile_ring(n: int, length: int, overlap: int, offset: int, closed_loop: bool) -> list[list[int]]:
    """Windows of consecutive positions on a ring of n, from `offset` on. Open: just enough windows to cover
    the ring once (no overlap where the last meets the first). Closed: one more hop, so the loop's seam
    overlaps like every other."""
    if n <= length:
        return [list(range(n))]
    hop = length - overlap
    count = math.ceil(n / hop) if closed_loop else math.ceil((n - overlap) / hop)
    return [[(offset + k * hop + j) % n for j in range(length)] for k in range(count)]


def _tile_batches(n: int, length: int) -> list[list[int]]:
    return [list(range(s, min(s + length, n))) for s in range(0, n, length)]


def _tile(schedule, n, length, overlap, closed_loop, step):
    if schedule == ContextSchedule.UNIFORM_STANDARD:
        return _tile_line(n, length, overlap, round(rotation(step) * (length - overlap)))
    if schedule == ContextSchedule.UNIFORM_LOOPED:
        return _tile_ring(n, length, overlap, round(rotation(step) * n) % n, closed_loop)
    if schedule == ContextSchedule.STATIC:
        return _tile_line(n, length, overlap, 0)
    if schedule == ContextSchedule.BATCHED:
        return _tile_batches(n, length)
    raise AnimateDiffError(f"schedule must be one of {ContextSchedule.ALL}, not {schedule!r}.")


def windows(schedule: str, frames: int, length: int, overlap: int, stride: int = 1, closed_loop: bool = False,
            step: int = 0) -> list[list[int]]:
    """The windows for sampling step `step` (0-based). `closed_loop` only matters for uniform_looped."""
    check_settings(length, overlap, stride, schedule)
    if frames <= length:
        return [list(range(frames))]
    found, seen = [], set()
    for spacing in (2 ** level for level in range(stride)):
        if spacing > 1 and spacing * length > frames:
            break
        for first in range(spacing):
            frames_here = list(range(first, frames, spacing))
            for window in _tile(schedule, len(frames_here), length, overlap, closed_loop, step):
                indices = [frames_here[p] for p in window]
                if tuple(indices) not in seen:
                    seen.add(tuple(indices))
                    found.append(indices)
    return found


def fuse_weights(method: str, window_len: int, overlap: int = 0) -> torch.Tensor:
    """Unnormalised, strictly positive weights of a window's frames by their position in it (float64)."""
    position = torch.arange(window_len, dtype=torch.float64)
    from_edge = torch.minimum(position, window_len - 1 - position)  # 0 at both ends
    if method == FuseMethod.PYRAMID:
        return from_edge + 1
    if method == FuseMethod.FLAT:
        return torch.ones(window_len, dtype=torch.float64)
    if method == FuseMethod.OVERLAP_LINEAR:
        # (1..overlap)/(overlap+1) across each end: where two windows overlap by `overlap` frames their
        # weights add up to one, i.e. a linear crossfade; 1 in between
        return torch.clamp((from_edge + 1) / (overlap + 1), max=1.0)
    raise AnimateDiffError(f"fuse_method must be one of {FuseMethod.ALL}, not {method!r}.")


def window_weights(window_list: list[list[int]], frames: int, method: str, overlap: int = 0) -> list[torch.Tensor]:
    """Per window, the weight of each of its frames in the fused result; each frame's weights sum to one."""
    raw = [fuse_weights(method, len(w), overlap) for w in window_list]
    total = torch.zeros(frames, dtype=torch.float64)
    for window, weights in zip(window_list, raw):
        total.index_add_(0, torch.tensor(window), weights)
    if bool((total == 0).any()):
        missing = torch.nonzero(total == 0).flatten().tolist()
        raise AnimateDiffError(f"internal error: frames {missing[:8]} are in no context window.")
    return [weights / total[window] for window, weights in zip(window_list, raw)]
