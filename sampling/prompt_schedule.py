"""Prompt travel: `frame: prompt` keyframes turned into one mixing weight per (frame, prompt)."""
import bisect
import re

import torch

from ..errors import AnimateDiffError

KEYFRAME = re.compile(r"^\s*(\d+)\s*:\s*(.*\S)\s*$")
EMPTY_KEYFRAME = re.compile(r"^\s*(\d+)\s*:\s*$")
SHOWN = 80  # characters of a bad line a message repeats


class Interpolation:
    LINEAR = "linear"  # each frame mixes the keyframes before and after it by distance
    NONE = "none"      # each frame takes the last keyframe at or before it
    ALL = [LINEAR, NONE]


def parse_keyframes(text: str) -> list[tuple[int, str]]:
    """`0: a calm sea` lines, sorted by frame; blank lines and `#` comments are skipped."""
    keyframes = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = KEYFRAME.match(line)
        if not match:
            shown = line.strip()
            shown = shown if len(shown) <= SHOWN else shown[:SHOWN] + "…"
            if EMPTY_KEYFRAME.match(line):
                raise AnimateDiffError(f"AnimateDiff_PromptSchedule: line {number} ({shown!r}) has no prompt after "
                                       "its frame: write the prompt after the colon, or remove the line.")
            negative = " Frames count from 0; there are no negative frames." if re.match(r"\s*-\d", line) else ""
            raise AnimateDiffError(f"AnimateDiff_PromptSchedule: line {number} ({shown!r}) is not "
                                   f"`frame: prompt`, e.g. `0: a calm sea` then `32: a storm`.{negative}")
        frame = int(match.group(1))
        if frame in keyframes:
            raise AnimateDiffError(f"AnimateDiff_PromptSchedule: frame {frame} has two prompts (line {number}).")
        keyframes[frame] = match.group(2)
    if not keyframes:
        raise AnimateDiffError("AnimateDiff_PromptSchedule: text has no `frame: prompt` line.")
    return sorted(keyframes.items())


def keyframe_weights(frames_at: list[int], frames: int, interpolation: str) -> torch.Tensor:
    """(frames, keyframes) weights, each row summing to one; before the first keyframe and after the last,
    that keyframe's prompt holds."""
    if interpolation not in Interpolation.ALL:
        raise AnimateDiffError(f"interpolation must be one of {Interpolation.ALL}, not {interpolation!r}.")
    beyond = [f for f in frames_at if f >= frames]
    if beyond:
        raise AnimateDiffError(f"AnimateDiff_PromptSchedule: keyframe {beyond[0]} is past the last frame "
                               f"({frames - 1}): raise `frames` or move the keyframe.")
    weights = torch.zeros(frames, len(frames_at), dtype=torch.float64)
    for frame in range(frames):
        following = bisect.bisect_right(frames_at, frame)  # first keyframe after this frame
        last = following - 1                                # last keyframe at or before it
        if last < 0:
            weights[frame, 0] = 1.0
        elif following == len(frames_at) or interpolation == Interpolation.NONE:
            weights[frame, last] = 1.0
        else:
            t = (frame - frames_at[last]) / (frames_at[following] - frames_at[last])
            weights[frame, last], weights[frame, following] = 1.0 - t, t
    return weights
