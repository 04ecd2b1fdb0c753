"""PIA's affinity: how close each frame stays to the picture, one number per frame, from the motion presets of
PIA's own code (its RANGE_LIST, named as its demo names them)."""

PRESETS = {
    "small motion": (1.0, 0.9, 0.85, 0.85, 0.85, 0.8),
    "moderate motion": (1.0, 0.8, 0.8, 0.8, 0.79, 0.78, 0.75),
    "large motion": (1.0, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.6, 0.5, 0.5),
    # back to the picture at frame 15: they close a loop of 16 frames
    "loop, small motion": (1.0, 0.9, 0.85, 0.85, 0.85, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.85, 0.85, 0.9, 1.0),
    "loop, moderate motion": (1.0, 0.8, 0.8, 0.8, 0.79, 0.78, 0.75, 0.75, 0.75, 0.75, 0.75, 0.78, 0.79, 0.8, 0.8,
                              1.0),
    "loop, large motion": (1.0, 0.8, 0.7, 0.7, 0.7, 0.7, 0.6, 0.5, 0.5, 0.6, 0.7, 0.7, 0.7, 0.7, 0.8, 1.0),
    # the picture's content in the prompt's style: the picture's frame too is only half bound to it
    "style transfer, small motion": (0.5, 0.4, 0.4, 0.4, 0.35, 0.3),
    "style transfer, moderate motion": (0.5, 0.4, 0.4, 0.4, 0.35, 0.35, 0.3, 0.25, 0.2),
    "style transfer, large motion": (0.5, 0.2),
}


def affinity(preset: str, frames: list[int], picture_frame: int) -> list[float]:
    """Frame f's value is the preset's entry at its distance from the picture's frame, the last entry beyond
    the preset's length."""
    values = PRESETS[preset]
    return [values[min(abs(f - picture_frame), len(values) - 1)] for f in frames]
