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
def server_models(fixtures_dir, hostile_files) -> dict:
    hostile, _ = hostile_files
    return {
        "checkpoints": {"sd15_random.safetensors": fixtures_dir / "sd15_random.safetensors"},
        "animatediff_models": {
            "mm_v1.ckpt": fixtures_dir / "mm_v1.ckpt",
            "mm_v2.safetensors": fixtures_dir / "mm_v2.safetensors",
            "mm_v3.ckpt": fixtures_dir / "mm_v3.ckpt",
            "AnimateLCM_sd15_t2v.safetensors": fixtures_dir / "mm_animatelcm.safetensors",
            "AnimateLCM_sd15_i2v.safetensors": fixtures_dir / "mm_animatelcm_i2v.safetensors",
            "pia.safetensors": fixtures_dir / "mm_pia.safetensors",
            "mm_sdxl_v10_beta.safetensors": fixtures_dir / "mm_sdxl.safetensors",
            "CameraCtrl_pruned.safetensors": fixtures_dir / "cameractrl.safetensors",
            "evil.ckpt": hostile / "evil.ckpt",
            "pickled.ckpt": hostile / "pickled.ckpt",
            "notes.ckpt": hostile / "notes.ckpt",
            "a_checkpoint.safetensors": fixtures_dir / "sd15_random.safetensors",
        },
        "animatediff_motion_lora": {"motion_lora_zoom.safetensors": fixtures_dir / "motion_lora_zoom.safetensors",
                                    "motion_lora_pan.ckpt": fixtures_dir / "motion_lora_pan.ckpt"},
        "animatediff_adapters": {"v3_adapter.ckpt": fixtures_dir / "v3_adapter.ckpt"},
        "controlnet": {"controlnet_sd15_random.safetensors": fixtures_dir / "controlnet_sd15_random.safetensors",
                       "sparsectrl_rgb.safetensors": fixtures_dir / "sparsectrl_rgb.safetensors"},
    }


@pytest.fixture(scope="session")
def server(server_models):
    with ComfyServer(comfyui_path(), server_models) as running:
        yield running


# glibc keeps freed blocks under its mmap threshold for reuse, and raises that threshold (up to 32 MiB) as large
# blocks are freed: the RSS of a server that loads and frees models then swings by a GiB with timing (+19.5 %
# between two identical rounds once in CI, -3.4 % here). Pinned at its 128 KiB default, every block above it
# is mapped on its own and returned on free, so RSS counts live memory. Slower (~1 min on the load test), so
# only the server that measures memory runs this way.
LIVE_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}


@pytest.fixture(scope="module")
def live_memory_server(server_models):
    """A server of its own whose RSS counts the memory it holds, not what the allocator kept for later."""
    with ComfyServer(comfyui_path(), server_models, env=LIVE_MEMORY_ENV) as running:
        yield running
