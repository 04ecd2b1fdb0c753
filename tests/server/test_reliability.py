"""A shared server stays right: interrupts leave no trace, an animated branch never leaks into a plain one, a
replaced model file is read again.

Outputs are compared with a second, fresh server (ComfyUI caches node outputs by their inputs, so the
same graph on the same server would not be recomputed).
"""
import time

import pytest
import safetensors.torch
import torch

from comfy_server import ComfyServer, execution_error
from make_fixtures import comfyui_path

pytestmark = pytest.mark.slow


def graph(seed, frames=4, size=32, steps=2, motion=None, prefix="latents/out", ids="", motion_lora=None):
    """checkpoint → [motion module [+ MotionLoRA]] → KSampler → SaveLatent, as an API prompt; `ids` keeps node
    ids apart."""
    g = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15_random.safetensors"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a red fox running"}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "blurry"}},
        f"latent{ids}": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": frames}},
    }
    model = ["ckpt", 0]
    if motion:
        g[f"mm{ids}"] = {"class_type": "AnimateDiff_LoadMotionModule", "inputs": {"model_name": motion}}
        g[f"apply{ids}"] = {"class_type": "AnimateDiff_ApplyMotionModule",
                            "inputs": {"model": model, "motion_model": [f"mm{ids}", 0]}}
        if motion_lora:
            g[f"lora{ids}"] = {"class_type": "AnimateDiff_MotionLoRA",
                               "inputs": {"lora_name": motion_lora, "strength": 1.0}}
            g[f"apply{ids}"]["inputs"]["motion_lora"] = [f"lora{ids}", 0]
        model = [f"apply{ids}", 0]
    g[f"sample{ids}"] = {"class_type": "KSampler", "inputs": {
        "model": model, "seed": seed, "steps": steps, "cfg": 7.5, "sampler_name": "euler", "scheduler": "normal",
        "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": [f"latent{ids}", 0], "denoise": 1.0}}
    g[f"save{ids}"] = {"class_type": "SaveLatent", "inputs": {"samples": [f"sample{ids}", 0], "filename_prefix": prefix}}
    return g


def latents(server, entry) -> dict[str, torch.Tensor]:
    assert execution_error(entry) is None, execution_error(entry)
    found = {}
    for node_id, out in entry["outputs"].items():
        for item in out.get("latents", []):
            path = server.output_dir / item["subfolder"] / item["filename"]
            found[node_id] = safetensors.torch.load_file(str(path))["latent_tensor"]
    return found


ANIMATED = dict(seed=9001, motion="mm_v2.safetensors")
PLAIN = dict(seed=9002)


@pytest.fixture(scope="module")
def reference(fixtures_dir):
    """What a fresh server makes of the graphs the tests then run on the long-lived one."""
    models = {"checkpoints": {"sd15_random.safetensors": fixtures_dir / "sd15_random.safetensors"},
              "animatediff_models": {"mm_v2.safetensors": fixtures_dir / "mm_v2.safetensors"}}
    with ComfyServer(comfyui_path(), models) as fresh:
        yield {name: latents(fresh, fresh.run(graph(**spec)))["save"] for name, spec in
               {"animated": ANIMATED, "plain": PLAIN, "plain_alone": dict(seed=9003)}.items()}


def test_an_interrupted_animation_leaves_no_trace(server, reference):
    long_run = graph(seed=9100, frames=16, size=64, steps=40, motion="mm_v1.ckpt")
    log_start = len(server.log())
    prompt_id = server.queue(long_run)
    deadline = time.time() + 300
    while time.time() < deadline:  # until sampling has started: its first progress line lands in the log
        if "/40 [" in server.log()[log_start:]:
            break
        time.sleep(0.5)
    status, _ = server.request("POST", "/interrupt", {})
    assert status == 200
    entry = server.wait(prompt_id)
    assert [m[0] for m in entry["status"]["messages"]][-1] == "execution_interrupted"
    # the motion module's layers and schedule are gone from the base model, and the animated path is intact
    assert torch.equal(latents(server, server.run(graph(**PLAIN)))["save"], reference["plain"])
    assert torch.equal(latents(server, server.run(graph(**ANIMATED)))["save"], reference["animated"])


def test_a_plain_branch_beside_an_animated_one_is_unchanged(server, reference):
    both = {**graph(seed=9003, prefix="latents/plain"),
            **graph(seed=9004, motion="mm_v3.ckpt", ids="_animated", prefix="latents/animated")}
    out = latents(server, server.run(both))
    assert torch.equal(out["save"], reference["plain_alone"])
    assert (out["save_animated"] - reference["plain_alone"]).abs().max() > 0


def test_a_replaced_motion_lora_file_is_read_again(server, fixtures_dir):
    """Train MotionLoRA replaces its file when a save_name is used again: a MotionLoRA node that read the file
    before must read it again, not hand on what ComfyUI cached from the old file."""
    trained = safetensors.torch.load_file(str(fixtures_dir / "motion_lora_zoom.safetensors"))
    retrained = {name: (2 * tensor if ".up." in name else tensor) for name, tensor in trained.items()}
    path = server.models_dir / "animatediff_motion_lora" / "retrained.safetensors"
    prompt = graph(seed=9005, motion="mm_v2.safetensors", motion_lora="retrained.safetensors")

    def sample_with(weights):
        safetensors.torch.save_file(weights, str(path))
        return latents(server, server.run(prompt))["save"]

    first = sample_with(trained)
    second = sample_with(retrained)
    again = sample_with(trained)
    assert (second - first).abs().max() > 0
    assert torch.equal(again, first)
