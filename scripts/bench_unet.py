"""The benchmark's set-up and its unit of measure: ComfyUI imported in this process (CPU unless CUDA exists), the
full-size SD1.5 fixture loaded, and one sampling step's UNet call, timed with several models taking turns."""
import statistics
import sys
from pathlib import Path

import torch
from bench_module import timed
from make_fixtures import comfyui_path, fixtures_dir

PACK = Path(__file__).resolve().parents[1]


def setup_comfy():
    """Imports ComfyUI (CPU unless CUDA exists) and the pack as package `animatediff`."""
    import importlib.machinery
    import importlib.util
    sys.path.append(str(comfyui_path()))
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != PACK]  # our nodes/ vs ComfyUI's nodes
    import comfy.cli_args
    comfy.cli_args.args.cpu = not torch.cuda.is_available()
    spec = importlib.machinery.ModuleSpec("animatediff", None, is_package=True)
    spec.submodule_search_locations = [str(PACK)]
    sys.modules.setdefault("animatediff", importlib.util.module_from_spec(spec))


def load_unet():
    import comfy.sd
    model, *_ = comfy.sd.load_checkpoint_guess_config(str(fixtures_dir() / "sd15_random.safetensors"),
                                                      output_vae=False, output_clip=False)
    return model


def load_as_sampling_does(patcher):
    """The model and its additional models (the motion model among them) onto the device."""
    import comfy.model_management
    comfy.model_management.load_models_gpu([patcher, *patcher.get_nested_additional_models()])


def unet_call(patcher, frames, latent, cfg_batch=2):
    """One sampling step's UNet call: cond and uncond of `frames` frames at latent×latent."""
    import comfy.patcher_extension
    load_as_sampling_does(patcher)
    device = patcher.load_device
    torch.manual_seed(0)  # the same inputs on every call, so two models' outputs compare
    x = torch.randn(cfg_batch * frames, 4, latent, latent, device=device)
    t = torch.full((x.shape[0],), 500.0, device=device)
    context = torch.randn(x.shape[0], 77, 768, device=device)
    # what ComfyUI's sampler adds before each UNet call: the patcher's wrappers, and which chunk is cond
    options = {**patcher.model_options["transformer_options"], "cond_or_uncond": list(range(cfg_batch)),
               "wrappers": comfy.patcher_extension.copy_nested_dicts(patcher.wrappers)}

    def call():
        with torch.inference_mode():
            out = patcher.model.apply_model(x, t, c_crossattn=context, transformer_options=options)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out
    return call


def interleaved_seconds(runs, frames, latent, rounds):
    """Median seconds per UNet call of each of `runs` (name -> model), timed alternating A B A B."""
    seconds = {name: [] for name in runs}
    for _ in range(rounds):
        for name, patcher in runs.items():
            seconds[name].append(timed(unet_call(patcher, frames, latent)))
    return {name: statistics.median(s) for name, s in seconds.items()}
