"""Prompt travel keyframes: parsing and per-frame weights."""
import pytest
import torch

from animatediff.errors import AnimateDiffError
from animatediff.sampling.prompt_schedule import keyframe_weights, parse_keyframes


def test_keyframes_parse_in_frame_order_with_comments_and_blank_lines():
    text = "# storm at the end\n\n32: a storm, lightning \n0:a calm sea\n"
    assert parse_keyframes(text) == [(0, "a calm sea"), (32, "a storm, lightning")]


@pytest.mark.parametrize("text,message", [("a calm sea", "line 1"), ("0: a\n0: b", "frame 0 has two prompts"),
                                          ("", "no `frame: prompt`"),
                                          ("0: a\n-1: b", "line 2 .* there are no negative frames"),
                                          ("0: a\n 12 :  ", r"line 2 \('12 :'\) has no prompt after its frame"),
                                          ("0: a\n" + "b" * 5000, r"line 2 \('b{80}…'\) is not")])
def test_bad_schedules_say_which_line(text, message):
    with pytest.raises(AnimateDiffError, match=message):
        parse_keyframes(text)


def test_linear_weights_blend_by_distance_and_hold_outside_the_keyframes():
    w = keyframe_weights([2, 6], 9, "linear")
    expected = [[1, 0], [1, 0], [1, 0], [0.75, 0.25], [0.5, 0.5], [0.25, 0.75], [0, 1], [0, 1], [0, 1]]
    assert torch.equal(w, torch.tensor(expected, dtype=torch.float64))


def test_none_holds_each_prompt_until_the_next_keyframe():
    w = keyframe_weights([0, 3, 5], 7, "none")
    assert w.argmax(dim=1).tolist() == [0, 0, 0, 1, 1, 2, 2] and torch.equal(w.sum(1), torch.ones(7, dtype=torch.float64))


def test_a_keyframe_past_the_last_frame_is_refused():
    with pytest.raises(AnimateDiffError, match="keyframe 64 is past the last frame \\(63\\)"):
        keyframe_weights([0, 64], 64, "linear")
