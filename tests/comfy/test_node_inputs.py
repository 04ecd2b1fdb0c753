"""What every node of the pack does with the inputs ComfyUI's own validation lets through."""
import pytest

from animatediff.errors import AnimateDiffError
from animatediff.nodes import NODE_CLASS_MAPPINGS
from animatediff.nodes.folders import register_model_folders
from animatediff.nodes.motion import ApplyMotionModule


@pytest.mark.parametrize("node_id", NODE_CLASS_MAPPINGS)
def test_every_float_input_is_refused_when_not_finite(node_id):
    """NaN passes ComfyUI's min/max check (every comparison with it is false)."""
    register_model_folders()  # the loaders list their folders' files
    cls = NODE_CLASS_MAPPINGS[node_id]
    inputs = {name: spec for group in cls.INPUT_TYPES().values() for name, spec in group.items()}
    floats = {name for name, spec in inputs.items() if spec[0] == "FLOAT"}
    assert floats <= set(getattr(getattr(cls, cls.FUNCTION), "finite_inputs", ())), node_id


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_value_that_is_not_a_number_is_named(base, motion, value):
    with pytest.raises(AnimateDiffError, match=f"motion_scale is {value}, not a finite number: give it a number"):
        ApplyMotionModule().apply(base, motion["v2"], None, value, "autoselect")
    ApplyMotionModule().apply(base, motion["v2"], None, 1.0, "autoselect")  # positional, as the tests call it


@pytest.mark.parametrize("node_id", NODE_CLASS_MAPPINGS)
def test_every_node_describes_itself_each_input_and_each_output(node_id):
    """What the editor shows on hovering, and what /object_info gives a service."""
    register_model_folders()
    cls = NODE_CLASS_MAPPINGS[node_id]
    assert cls.DESCRIPTION
    inputs = {name: spec for group in cls.INPUT_TYPES().values() for name, spec in group.items()}
    assert [name for name, spec in inputs.items() if len(spec) < 2 or not spec[1].get("tooltip")] == []
    assert len(getattr(cls, "OUTPUT_TOOLTIPS", ())) == len(cls.RETURN_TYPES)
