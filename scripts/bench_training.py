"""MotionLoRA training's memory: what one step keeps for backward, with the motion layers' activations kept or
recomputed in backward (what Train MotionLoRA does), alternating; seconds per step and, on a GPU, the peak."""
import statistics
import time

import torch


class KeptForBackward:
    """The bytes autograd keeps for backward inside `with`, counted once per storage; the parameters of `modules`
    (the weights) left out."""

    def __init__(self, *modules: torch.nn.Module):
        self.weights = {p.untyped_storage().data_ptr() for m in modules for p in m.parameters()}
        self.storages = {}
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self._keep, lambda tensor: tensor)

    def _keep(self, tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self.weights:
            self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    def __enter__(self):
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self.hooks.__exit__(*exc)

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())


def training_memory(base, motion, frames, latent, rounds, rank=64):
    """One training step (forward and backward at t=500, a LoRA of `rank` on every temporal attention) on
    `frames` frames at latent×latent, through the pack's own training path. The bytes autograd keeps are counted
    by storage, the model's and the LoRA's weights left out."""
    import comfy.model_management

    from animatediff.lora.training import EPSILON, MotionLoRAWeights, alphas_cumprod, diffusion_loss
    from animatediff.lora.training import temporal_attention_layers
    from animatediff.patching.motion import apply_motion_model
    from animatediff.patching.schedule import trained_schedule
    from animatediff.patching.training import frozen, unet_of

    patched = apply_motion_model(base, motion, 1.0, trained_schedule(motion.spec))
    comfy.model_management.load_models_gpu([patched, *patched.get_nested_additional_models()])
    device, cuda = patched.load_device, patched.load_device.type == "cuda"
    generator = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, frames, 4, latent, latent, generator=generator).to(device)
    context = torch.randn(1, 77, 768, generator=generator)
    results = {recompute: {"kept_bytes": [], "seconds": [], "cuda_peak_bytes": []} for recompute in (False, True)}
    with torch.inference_mode(False), torch.enable_grad():
        weights = MotionLoRAWeights(temporal_attention_layers(motion.model), rank, generator).to(device)
        with frozen(patched.model.diffusion_model, motion.model), weights.attached():
            for _ in range(rounds):
                for recompute, result in results.items():
                    if cuda:
                        torch.cuda.synchronize()
                        torch.cuda.reset_peak_memory_stats()
                    start = time.perf_counter()
                    with KeptForBackward(patched.model.diffusion_model, motion.model, weights) as kept:
                        loss = diffusion_loss(unet_of(patched, context, recompute=recompute), x0, 500, noise,
                                              alphas_cumprod(), EPSILON)
                    loss.backward()
                    if cuda:
                        torch.cuda.synchronize()
                    result["seconds"].append(time.perf_counter() - start)
                    result["kept_bytes"].append(kept.bytes)
                    result["cuda_peak_bytes"].append(torch.cuda.max_memory_allocated() if cuda else 0)
                    weights.zero_grad(set_to_none=True)
                    del loss
    out = {"frames": frames, "latent": latent, "rank": rank, "dtype": str(next(patched.model.parameters()).dtype)}
    for recompute, result in results.items():
        name = "recomputed" if recompute else "kept"
        out[f"{name}_kept_bytes"] = max(result["kept_bytes"])
        out[f"{name}_s"] = statistics.median(result["seconds"])
        out[f"{name}_cuda_peak_bytes"] = max(result["cuda_peak_bytes"])
    out["memory_ratio"] = out["recomputed_kept_bytes"] / out["kept_kept_bytes"]
    out["time_ratio"] = out["recomputed_s"] / out["kept_s"]
    return out


def training_markdown(t):
    if not t:
        return []
    gib = 1024 ** 3
    size = t["latent"] * 8
    rows = (("kept", "every activation kept"),
            ("recomputed", "motion layers recomputed in backward (Train MotionLoRA)"))
    return [f"MotionLoRA training, one step: {t['frames']} frames at {size}×{size}, rank {t['rank']}, {t['dtype']}:",
            "",
            "| | kept for backward (GiB) | s/step | CUDA peak (GiB) |", "|---|---|---|---|",
            *(f"| {label} | {t[f'{name}_kept_bytes'] / gib:.2f} | {t[f'{name}_s']:.2f} | "
              f"{t[f'{name}_cuda_peak_bytes'] / gib:.2f} |" for name, label in rows),
            f"| ratio | {t['memory_ratio']:.3f} | {t['time_ratio']:.3f} | |", ""]
