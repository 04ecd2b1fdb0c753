"""One real ComfyUI server (main.py --cpu on 127.0.0.1) with the pack and the full-size fixtures."""
import os
import pickle

import pytest
import torch

from comfy_server import ComfyServer
from make_fixtures import comfyui_path


class RunsCode:
    """Unpickling this would run a shell command that creates the marker file."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="session")
def hostile_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    marker = root / "code-was-executed"
    torch.save({"state_dict": {"weight": torch.zeros(2), "payload": RunsCode(marker)}}, root / "evil.ckpt")
    (root / "notes.ckpt").write_text("not a model\n")
    with open(root / "pickled.ckpt", "wb") as f:
        pickle.dump({"x": RunsCode(marker)}, f)
    return root, marker


@pytest.fixture(scope="session")
def server(fixtures_dir, hostile_files):
    hostile, _ = hostile_files
    models = {
        "checkpoints": {"sd15_random.safetensors": fixtures_dir / "sd15_random.safetensors"},
        "animatediff_models": {
            "mm_v1.ckpt": fixtures_dir / "mm_v1.ckpt",
            "mm_v2.safetensors": fixtures_dir / "mm_v2.safetensors",
            "mm_v3.ckpt": fixtures_dir / "mm_v3.ckpt",
            "evil.ckpt": hostile / "evil.ckpt",
            "pickled.ckpt": hostile / "pickled.ckpt",
            "notes.ckpt": hostile / "notes.ckpt",
            "a_checkpoint.safetensors": fixtures_dir / "sd15_random.safetensors",
        },
        "animatediff_motion_lora": {"motion_lora_zoom.safetensors": fixtures_dir / "motion_lora_zoom.safetensors",
                                    "motion_lora_pan.ckpt": fixtures_dir / "motion_lora_pan.ckpt"},
        "animatediff_adapters": {"v3_adapter.ckpt": fixtures_dir / "v3_adapter.ckpt"},
        "controlnet": {"controlnet_sd15_random.safetensors": fixtures_dir / "controlnet_sd15_random.safetensors"},
    }
    with ComfyServer(comfyui_path(), models) as running:
        yield running
