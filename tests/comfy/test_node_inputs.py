"""What every node of the pack does with the inputs ComfyUI's own validation lets through."""
import os

import folder_paths
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


# node id → (model folder, input): the nodes that read a model file by its name
FILE_LOADERS = {
    "AnimateDiff_LoadMotionModule": ("animatediff_models", "model_name"),
    "AnimateDiff_MotionLoRA": ("animatediff_motion_lora", "lora_name"),
    "AnimateDiff_DomainAdapter": ("animatediff_adapters", "adapter_name"),
    "AnimateDiff_LoadSparseCtrl": ("controlnet", "sparse_ctrl_name"),
    "AnimateDiff_LoadCameraCtrl": ("animatediff_models", "cameractrl_name"),
}


def test_the_file_loaders_are_every_node_that_picks_a_model_file():
    register_model_folders()
    picks = {node_id for node_id, cls in NODE_CLASS_MAPPINGS.items()
             for group in cls.INPUT_TYPES().values() for name, spec in group.items()
             if isinstance(spec[0], list) and name.endswith("_name") and name != "sampler_name"}
    assert picks == set(FILE_LOADERS)


@pytest.mark.parametrize("node_id", FILE_LOADERS)
def test_a_loader_runs_again_once_its_file_is_replaced(node_id, tmp_path, monkeypatch):
    """IS_CHANGED is part of ComfyUI's cache key: the same stamp keeps the loaded model, a new one reloads."""
    folder, name_input = FILE_LOADERS[node_id]
    monkeypatch.setitem(folder_paths.folder_names_and_paths, folder, ([str(tmp_path)], {".safetensors"}))
    path = tmp_path / "model.safetensors"
    changed = NODE_CLASS_MAPPINGS[node_id].IS_CHANGED
    path.write_bytes(b"first")
    os.utime(path, ns=(10**18, 10**18))
    stamp = changed(**{name_input: path.name})
    assert changed(**{name_input: path.name}) == stamp
    path.write_bytes(b"again")  # same size, as a retrained MotionLoRA has
    os.utime(path, ns=(10**18 + 1, 10**18 + 1))
    assert changed(**{name_input: path.name}) != stamp
    assert changed(**{name_input: "missing.safetensors"}) == ""
