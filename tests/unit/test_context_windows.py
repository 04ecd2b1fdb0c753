"""Context-window schedules, fuse weights and long-animation noise (sampling/context.py, sampling/noise.py).

No ComfyUI: properties over many (frames, length, overlap, stride) combinations, and exact numbers.
"""
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from animatediff.errors import AnimateDiffError
from animatediff.sampling.context import (ContextSchedule, FuseMethod, check_settings, fuse_weights, rotation,
                                          window_weights, windows)
from animatediff.sampling.noise import NoiseType, shape_noise


@st.composite
def setups(draw, schedules=tuple(ContextSchedule.ALL)):
    length = draw(st.integers(1, 40))
    return dict(schedule=draw(st.sampled_from(schedules)), frames=draw(st.integers(1, 200)), length=length,
                overlap=draw(st.integers(0, length - 1)), stride=draw(st.integers(1, 4)),
                closed_loop=draw(st.booleans()), step=draw(st.integers(0, 300)))


def make(s, **changes):
    s = {**s, **changes}
    return windows(s["schedule"], s["frames"], s["length"], s["overlap"], s["stride"], s["closed_loop"], s["step"])


@settings(max_examples=600, deadline=None)
@given(setups())
def test_every_frame_is_covered_by_windows_no_longer_than_length_without_repeats(s):
    found = make(s)
    covered = set()
    for window in found:
        assert 1 <= len(window) <= s["length"]
        assert len(set(window)) == len(window)
        assert all(0 <= i < s["frames"] for i in window)
        covered |= set(window)
    assert covered == set(range(s["frames"]))
    assert len({tuple(w) for w in found}) == len(found)
    if s["frames"] <= s["length"]:
        assert found == [list(range(s["frames"]))]  # one window = no context windows at all
    elif s["schedule"] != ContextSchedule.BATCHED:
        assert all(len(w) == s["length"] for w in found)  # the motion module always sees a full window


@settings(max_examples=600, deadline=None)
@given(setups(), st.sampled_from(FuseMethod.ALL))
def test_each_frames_fused_weights_sum_to_one(s, method):
    found = make(s)
    weights = window_weights(found, s["frames"], method, s["overlap"])
    total = torch.zeros(s["frames"], dtype=torch.float64)
    for window, w in zip(found, weights):
        assert w.shape == (len(window),) and bool((w > 0).all())
        total.index_add_(0, torch.tensor(window), w)
    assert (total - 1).abs().max().item() <= 1e-12


@settings(max_examples=300, deadline=None)
@given(setups(schedules=(ContextSchedule.UNIFORM_STANDARD, ContextSchedule.STATIC, ContextSchedule.UNIFORM_LOOPED)))
def test_overlapping_schedules_leave_no_seam_between_neighbouring_frames(s):
    """With overlap, every pair of neighbouring frames sits side by side in some window (an open loop has
    one seam where its first and last window meet; it moves with the step)."""
    s = {**s, "stride": 1, "overlap": max(1, s["overlap"]), "length": max(2, s["length"])}
    found = make(s)
    pairs = {(w[j], w[j + 1]) for w in found for j in range(len(w) - 1)}
    missing = [i for i in range(s["frames"] - 1) if (i, i + 1) not in pairs]
    looped_open = s["schedule"] == ContextSchedule.UNIFORM_LOOPED and not s["closed_loop"]
    assert len(missing) <= (1 if looped_open else 0)


@settings(max_examples=300, deadline=None)
@given(setups(schedules=(ContextSchedule.UNIFORM_LOOPED,)))
def test_looped_windows_run_on_around_the_end_and_closed_loops_overlap_there(s):
    s = {**s, "stride": 1}
    frames = s["frames"]
    for step in range(8):
        for w in make(s, step=step):
            assert all((b - a) % frames == 1 for a, b in zip(w, w[1:]))  # consecutive on the ring
    if frames > s["length"] and s["closed_loop"] and s["overlap"] >= 1:
        for step in range(4):
            assert any(w[j:j + 2] == [frames - 1, 0] for w in make(s, step=step) for j in range(len(w) - 1))


def test_looped_windows_wrap_at_a_known_case():
    assert windows(ContextSchedule.UNIFORM_LOOPED, 40, 16, 4, closed_loop=True, step=0) == [
        list(range(0, 16)), list(range(12, 28)), list(range(24, 40)), [36, 37, 38, 39, *range(12)]]
    assert windows(ContextSchedule.UNIFORM_LOOPED, 40, 16, 4, closed_loop=False, step=0) == [
        list(range(0, 16)), list(range(12, 28)), list(range(24, 40))]


@settings(max_examples=300, deadline=None)
@given(setups(schedules=(ContextSchedule.STATIC, ContextSchedule.BATCHED)))
def test_static_and_batched_windows_are_the_same_at_every_step(s):
    first = make(s, step=0)
    assert all(make(s, step=step) == first for step in (1, 2, 3, 17, 255))


@settings(max_examples=300, deadline=None)
@given(setups(schedules=(ContextSchedule.UNIFORM_STANDARD, ContextSchedule.UNIFORM_LOOPED)))
def test_uniform_windows_move_from_step_to_step(s):
    """(Windows one frame apart, overlap = length - 1, already sit at every position: not drawn here.)"""
    length = max(2, s["length"])
    s = {**s, "frames": max(s["frames"], 2 * length), "length": length, "overlap": min(s["overlap"], length - 2)}
    placements = [make(s, step=step) for step in range(8)]
    assert any(p != placements[0] for p in placements)
    if s["schedule"] == ContextSchedule.UNIFORM_STANDARD:
        assert placements[1] != placements[0]


def test_static_windows_pull_the_last_back_to_full_length():
    assert windows(ContextSchedule.STATIC, 40, 16, 4) == [list(range(0, 16)), list(range(12, 28)), list(range(24, 40))]
    assert windows(ContextSchedule.BATCHED, 40, 16, 4) == [list(range(0, 16)), list(range(16, 32)), list(range(32, 40))]
    # uniform_standard at step 1 shifts the lattice by half a hop (6): seams at other frames than step 0's
    assert windows(ContextSchedule.UNIFORM_STANDARD, 40, 16, 4, step=1) == [
        list(range(0, 16)), list(range(6, 22)), list(range(18, 34)), list(range(24, 40))]


@settings(max_examples=200, deadline=None)
@given(setups(schedules=(ContextSchedule.UNIFORM_STANDARD, ContextSchedule.STATIC)))
def test_stride_adds_windows_of_evenly_spaced_frames(s):
    s = {**s, "frames": max(s["frames"], 4 * s["length"]), "stride": 3}
    spacings = Counter(w[1] - w[0] for w in make(s) if len(w) > 1)
    assert all(all(b - a == w[1] - w[0] for a, b in zip(w, w[1:])) for w in make(s) if len(w) > 1)
    if s["length"] > 1:
        assert set(spacings) == {1, 2, 4}
    assert make({**s, "stride": 1}) == [w for w in make(s) if len(w) < 2 or w[1] - w[0] == 1]


def test_rotation_is_the_base_2_van_der_corput_sequence():
    assert [rotation(i) for i in range(8)] == [0, 0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875]


def test_fuse_weight_shapes():
    assert fuse_weights(FuseMethod.PYRAMID, 6).tolist() == [1, 2, 3, 3, 2, 1]
    assert fuse_weights(FuseMethod.PYRAMID, 5).tolist() == [1, 2, 3, 2, 1]
    assert fuse_weights(FuseMethod.FLAT, 4).tolist() == [1, 1, 1, 1]
    assert fuse_weights(FuseMethod.OVERLAP_LINEAR, 8, 3).tolist() == [0.25, 0.5, 0.75, 1, 1, 0.75, 0.5, 0.25]


def test_overlap_linear_crossfades_and_pyramid_favours_middles():
    found = windows(ContextSchedule.STATIC, 28, 16, 4)  # [0..15], [12..27]: overlap 12..15
    linear = window_weights(found, 28, FuseMethod.OVERLAP_LINEAR, 4)
    assert linear[0][12:].tolist() == pytest.approx([0.8, 0.6, 0.4, 0.2], abs=1e-12)
    assert linear[1][:4].tolist() == pytest.approx([0.2, 0.4, 0.6, 0.8], abs=1e-12)
    assert linear[0][:12].tolist() == [1.0] * 12
    pyramid = window_weights(found, 28, FuseMethod.PYRAMID, 4)
    # frame 12: 4th from the end of window 0 (weight 4), 1st of window 1 (weight 1)
    assert pyramid[0][12].item() == pytest.approx(4 / 5, abs=1e-12)
    flat = window_weights(found, 28, FuseMethod.FLAT, 4)
    assert flat[1][:4].tolist() == [0.5] * 4


@pytest.mark.parametrize("length,overlap,stride,problem", [
    (0, 0, 1, "context_length must be at least 1"), (-3, 0, 1, "context_length must be at least 1"),
    (16, -1, 1, "context_overlap must be 0 or more"),
    (16, 16, 1, r"context_overlap \(16\) must be smaller than context_length \(16\)"),
    (8, 12, 1, r"context_overlap \(12\) must be smaller"), (16, 4, 0, "context_stride must be at least 1")])
def test_bad_settings_name_the_input(length, overlap, stride, problem):
    with pytest.raises(AnimateDiffError, match=problem):
        check_settings(length, overlap, stride)
    with pytest.raises(AnimateDiffError, match=problem):
        windows(ContextSchedule.STATIC, 40, length, overlap, stride)


def test_unknown_names_are_refused():
    with pytest.raises(AnimateDiffError, match="schedule must be one of"):
        windows("sideways", 40, 16, 4)
    with pytest.raises(AnimateDiffError, match="fuse_method must be one of"):
        fuse_weights("median", 16)


# --- noise for long animations -----------------------------------------------------------------------

def frame_noise(frames=64, seed=0):
    return torch.randn(frames, 4, 3, 2, generator=torch.Generator().manual_seed(seed))


def source_frames(shaped, noise):
    """For each frame of `shaped`, the frame of `noise` it is an exact copy of (every frame's noise differs)."""
    flat, pool = shaped.flatten(1), noise.flatten(1)
    matches = [(pool == row).all(dim=1).nonzero().flatten().tolist() for row in flat]
    assert all(len(m) == 1 for m in matches)
    return [m[0] for m in matches]


def test_default_noise_is_unchanged():
    noise = frame_noise()
    assert shape_noise(NoiseType.DEFAULT, noise, 16, 4, 1) is noise


@pytest.mark.parametrize("length,overlap", [(16, 4), (16, 8), (16, 12), (8, 0), (12, 5)])
def test_free_noise_reuses_the_first_window_with_local_shuffles(length, overlap):
    noise = frame_noise(70)
    shaped = shape_noise(NoiseType.FREE_NOISE, noise, length, overlap, seed=3)
    source = source_frames(shaped, noise)
    hop = length - overlap
    assert source[:length] == list(range(length))   # the first window keeps its own noise
    assert set(source) <= set(range(length))        # every later frame reuses one of the first window's
    for start in range(length, 70, hop):            # each hop-sized chunk: the chunk a window earlier, shuffled
        chunk = source[start:start + hop]
        assert sorted(chunk) == sorted(source[start - length:start - length + len(chunk)])
    shuffled = sum(source[s:s + hop] != source[s - length:s - length + hop] for s in range(length, 70 - hop, hop))
    assert shuffled >= 2  # really shuffled, not a plain repeat
    if length % hop == 0:  # then every window on the hop grid holds exactly a permutation of the first window
        for start in range(0, 70 - length + 1, hop):
            assert sorted(source[start:start + length]) == list(range(length))
    assert torch.equal(shape_noise(NoiseType.FREE_NOISE, noise, length, overlap, seed=3), shaped)  # repeatable
    assert not torch.equal(shape_noise(NoiseType.FREE_NOISE, noise, length, overlap, seed=4), shaped)


def test_repeated_context_and_constant_noise():
    noise = frame_noise(40)
    assert source_frames(shape_noise(NoiseType.REPEATED_CONTEXT, noise, 16, 4), noise) == [i % 16 for i in range(40)]
    assert source_frames(shape_noise(NoiseType.CONSTANT, noise, 16, 4), noise) == [0] * 40
    short = frame_noise(10)
    assert torch.equal(shape_noise(NoiseType.FREE_NOISE, short, 16, 4), short)
    assert torch.equal(shape_noise(NoiseType.REPEATED_CONTEXT, short, 16, 4), short)
    with pytest.raises(ValueError, match="noise_type must be one of"):
        shape_noise("pink", noise)
