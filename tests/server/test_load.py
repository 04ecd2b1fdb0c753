"""Thirty animated prompts queued through /prompt: all finish, each seed gives one answer, and the server's
memory does not grow per prompt."""
import psutil
import pytest
import torch

from test_reliability import graph, latents

pytestmark = pytest.mark.slow

MOTIONS = ["mm_v1.ckpt", "mm_v2.safetensors", "mm_v3.ckpt"]


def variant(i):
    """Prompt i of 15 distinct ones: versions, context windows and MotionLoRAs mixed."""
    g = graph(seed=7000 + i, frames=6 if i % 3 else 20, size=32, steps=1, motion=MOTIONS[i % 3],
              prefix=f"latents/load{i}")
    if i % 2:  # MotionLoRA stack of one or two
        g["lora1"] = {"class_type": "AnimateDiff_MotionLoRA",
                      "inputs": {"lora_name": "motion_lora_zoom.safetensors", "strength": 0.8}}
        if i % 4 == 1:
            g["lora2"] = {"class_type": "AnimateDiff_MotionLoRA", "inputs": {
                "lora_name": "motion_lora_pan.ckpt", "strength": -0.5, "prev_motion_lora": ["lora1", 0]}}
        g["apply"]["inputs"]["motion_lora"] = ["lora2" if "lora2" in g else "lora1", 0]
    if i % 3 == 0:  # 20 frames in windows of 8
        g["windows"] = {"class_type": "AnimateDiff_ContextWindows", "inputs": {
            "model": ["apply", 0], "context_length": 8, "context_overlap": 2, "schedule": "uniform_standard",
            "fuse_method": "pyramid"}}
        g["sample"]["inputs"]["model"] = ["windows", 0]
    return g


def test_thirty_mixed_prompts_complete_deterministically_without_memory_growth(live_memory_server):
    """Two rounds of the same 15 prompts, each round queued at once. Memory is compared between the ends of
    the rounds: by the end of the first every model has been loaded once, so growth after it is per prompt.
    Both rounds end on the same prompt, so the server holds the same models then."""
    server = live_memory_server
    process = psutil.Process(server.process.pid)
    rounds, rss = [], []
    for _ in range(2):
        ids = [server.queue(variant(i)) for i in range(15)]
        rounds.append([latents(server, server.wait(prompt_id, timeout=3600))["save"] for prompt_id in ids])
        rss.append(process.memory_info().rss)
    for i, (first, second) in enumerate(zip(*rounds)):
        assert torch.equal(first, second), f"variant {i} differs between runs"
        assert torch.isfinite(first).all()
    growth = (rss[1] - rss[0]) / rss[0]
    print(f"\nserver RSS after 15 prompts: {rss[0] / 2**30:.2f} GiB, after 30: {rss[1] / 2**30:.2f} GiB ({growth:+.1%})")
    assert growth < 0.02
