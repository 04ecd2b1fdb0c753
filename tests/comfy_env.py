"""A real ComfyUI, in this process, on the CPU, with a tiny SD1.5-shaped UNet (model_channels 32).

Nothing here replaces ComfyUI code: the model is built by comfy.supported_models.SD15 like a loaded
checkpoint's, only with smaller channels and random weights.
"""
import comfy.cli_args

comfy.cli_args.args.cpu = True  # before comfy.model_management is imported anywhere

import comfy.cldm.cldm  # noqa: E402
import comfy.controlnet  # noqa: E402
import comfy.model_management  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.ops  # noqa: E402
import comfy.patcher_extension  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.supported_models  # noqa: E402
import comfy.taesd.taesd  # noqa: E402
import torch  # noqa: E402

TINY_SD15 = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "adm_in_channels": None, "dtype": torch.float32, "in_channels": 4, "model_channels": 32,
    "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4],
    "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
    "num_head_channels": -1, "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}

# SDXL's layout (3 levels, no attention on the first, linear projections, CLIP-L + CLIP-G's 2048-wide text and
# the pooled-text-and-size vector `y`), with SD1.5's tiny widths
TINY_SDXL = {**TINY_SD15, "adm_in_channels": 2816, "num_classes": "sequential", "num_res_blocks": [2, 2, 2],
             "channel_mult": [1, 2, 4], "transformer_depth": [0, 0, 1, 1, 1, 1],
             "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1],
             "use_linear_in_transformer": True, "context_dim": 2048}


def random_fill(module: torch.nn.Module, seed: int):
    """comfy.ops layers start uninitialised: give every tensor a finite random value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            elif name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))


def tiny_model(config, seed: int) -> comfy.model_patcher.ModelPatcher:
    """The model a `comfy.supported_models` config builds, with random weights, on the CPU."""
    model = config.get_model({})
    random_fill(model.diffusion_model, seed)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def tiny_sd15(seed=0, **overrides) -> comfy.model_patcher.ModelPatcher:
    return tiny_model(comfy.supported_models.SD15({**TINY_SD15, **overrides}), seed)


def tiny_sdxl(seed=0, **overrides) -> comfy.model_patcher.ModelPatcher:
    return tiny_model(comfy.supported_models.SDXL({**TINY_SDXL, **overrides}), seed)


def sdxl_conditioning(seed, batch=1):
    """What CLIPTextEncode gives with an SDXL checkpoint: 2048-wide tokens and a 1280-wide pooled output."""
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, 77, 2048, generator=g), {"pooled_output": torch.randn(batch, 1280, generator=g)}]]


def tiny_vae():
    """ComfyUI's own VAE class around a random TAESD: 4 latent channels and 8× downscale, like SD1.5's."""
    taesd = comfy.taesd.taesd.TAESD()
    random_fill(taesd, 7)
    return comfy.sd.VAE(sd=taesd.state_dict())


def conditioning(seed, batch=1):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, 77, 768, generator=g), {}]]


def latent(frames, size=8):
    return {"samples": torch.zeros(frames, 4, size, size)}


def ksample(model, frames=16, seed=1, steps=2, cfg=7.5, sampler="euler", scheduler="normal", size=8,
            positive=None, negative=None):
    """The core KSampler node's own code path (nodes.common_ksampler)."""
    import nodes
    positive = positive or conditioning(11)
    negative = negative or conditioning(12)
    (out,) = nodes.common_ksampler(model, seed, steps, cfg, sampler, scheduler, positive, negative,
                                   latent(frames, size))
    return out["samples"]


def probed(model, on_call, kind=comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL):
    """A clone whose every call of the wrapper `kind` (a UNet call) first runs on_call(the executor's object:
    the UNet, or for APPLY_MODEL the BaseModel; x, *args, **kwargs). It may return hooks it put on modules for
    this call, which are removed when the call ends."""
    clone = model.clone()

    def call(executor, x, *args, **kwargs):
        hooks = on_call(executor.class_obj, x, *args, **kwargs) or []
        try:
            return executor(x, *args, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()
    clone.add_wrapper_with_key(kind, "test-probe", call)
    return clone


def unet_state(patcher) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in patcher.model.diffusion_model.state_dict().items()}


def tiny_controlnet(seed):
    """A random SD1.5-format ControlNet (comfy.cldm) whose blocks match the tiny UNet's, as ComfyUI loads one."""
    config = {k: v for k, v in TINY_SD15.items() if k != "out_channels"}
    net = comfy.cldm.cldm.ControlNet(hint_channels=3, device="cpu", operations=comfy.ops.disable_weight_init, **config)
    random_fill(net, seed)
    return comfy.controlnet.ControlNet(net, load_device=torch.device("cpu"))


def hint_images(values, size=64):
    """An IMAGE batch (b, h, w, 3): image b is filled with values[b]."""
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, size, size, 3).clone()


def with_controlnet(positive, negative, net, values):
    """The core ControlNetApplyAdvanced node: hint b for frame b, strength 1 over the whole schedule."""
    import nodes
    return nodes.ControlNetApplyAdvanced().apply_controlnet(positive, negative, net, hint_images(values), 1.0, 0.0, 1.0)
