"""Thirty animated prompts queued at once through /prompt: all finish, each seed gives one answer, and the
server's memory does not grow per prompt."""
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


def test_thirty_mixed_prompts_complete_deterministically_without_memory_growth(server):
    process = psutil.Process(server.process.pid)
    first = latents(server, server.run(variant(0)))["save"]
    rss_after_first = process.memory_info().rss
    ids = [server.queue(variant(i % 15)) for i in range(1, 30)]
    results = [latents(server, server.wait(prompt_id, timeout=3600))["save"] for prompt_id in ids]
    rss_after_last = process.memory_info().rss
    by_variant = {0: [first]}
    for i, result in zip(range(1, 30), results):
        by_variant.setdefault(i % 15, []).append(result)
    for i, outputs in by_variant.items():
        assert len(outputs) == 2 and torch.equal(outputs[0], outputs[1]), f"variant {i} differs between runs"
        assert torch.isfinite(outputs[0]).all()
    growth = (rss_after_last - rss_after_first) / rss_after_first
    print(f"\nserver RSS after prompt 1: {rss_after_first / 2**30:.2f} GiB, after prompt 30: "
          f"{rss_after_last / 2**30:.2f} GiB ({growth:+.1%})")
    assert growth < 0.10
