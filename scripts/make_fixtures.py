"""Random-weight model files in the exact released formats (see FORMATS.md), for tests and the demo.

No weights can be downloaded here, so tests load these instead. The AnimateDiff files' layouts are written
from the formats docs (random_weights.py), independently of the pack's `motion_module/` code, so that the
fixtures cannot share that code's mistakes. The SD1.5 checkpoint takes its key names and shapes from
ComfyUI's own modules, which is what ComfyUI's loader checks it against.

    python scripts/make_fixtures.py [--small-only] [--check]

Writes into $ANIMATEDIFF_CACHE/fixtures (default ~/.cache/comfyui-animatediff/fixtures) and skips
files that already exist. Importing this file does no work and does not import ComfyUI.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import torch

from random_weights import (SDXL_CHANNELS, SMALL_CHANNELS, SMALL_SDXL_CHANNELS, V3_CONFIG, cameractrl_original,
                            cameractrl_state_dict, domain_adapter_state_dict, hotshotxl_state_dict,
                            motion_lora_state_dict, motion_module_state_dict, random_tensor, sparse_ctrl_state_dict)

# Bump when the generated content changes: a different stamp on disk makes the CLI regenerate everything.
STAMP = "animatediff-fixtures-1"


def cache_dir() -> Path:
    return Path(os.environ.get("ANIMATEDIFF_CACHE") or "~/.cache/comfyui-animatediff").expanduser()


def fixtures_dir() -> Path:
    return cache_dir() / "fixtures"


def comfyui_path() -> Path:
    return Path(os.environ.get("COMFYUI_PATH") or cache_dir() / "ComfyUI").expanduser()


def _import_comfy():
    if str(comfyui_path()) not in sys.path:
        sys.path.insert(0, str(comfyui_path()))
    if "comfy.model_management" not in sys.modules:
        import comfy.cli_args
        comfy.cli_args.args.cpu = True  # read once, when model_management is first imported


# ComfyUI's SD15 UNet config (comfy/model_detection.py, `SD15`), in UNetModel's keyword form.
SD15_UNET = dict(image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[2, 2, 2, 2],
                 channel_mult=[1, 2, 4, 4], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_middle=1,
                 transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], num_heads=8, context_dim=768,
                 use_spatial_transformer=True, use_linear_in_transformer=False, legacy=False, adm_in_channels=None,
                 use_checkpoint=False, use_temporal_attention=False, use_temporal_resblock=False)
# The SD1.x VAE (comfy/sd.py, VAE: "default SD1.x/SD2.x VAE parameters").
SD_VAE = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=[1, 2, 4, 4],
              num_res_blocks=2, attn_resolutions=[], dropout=0.0)


def sd15_checkpoint_state_dict(seed=0, dtype=torch.float16) -> dict[str, torch.Tensor]:
    """A full-size random SD1.5 checkpoint in the original LDM key format, as in v1-5-pruned-emaonly."""
    _import_comfy()
    import comfy.ops
    import comfy.sd1_clip
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    with torch.device("meta"):  # only names and shapes are needed: no memory, no init time
        parts = [("model.diffusion_model.", UNetModel(**SD15_UNET, operations=comfy.ops.disable_weight_init)),
                 ("first_stage_model.", AutoencoderKL(ddconfig=SD_VAE, embed_dim=4)),
                 ("cond_stage_model.", comfy.sd1_clip.SDClipModel())]
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for prefix, module in parts:
        for name, t in module.state_dict().items():
            # ComfyUI's own extras, absent from the original file (its SD15 saving drops them too).
            if name in ("logit_scale", "transformer.text_projection.weight"):
                continue
            sd[prefix + name] = random_tensor(name, tuple(t.shape), gen).to(dtype)
    # The original file carries the HF CLIP buffer of token positions.
    sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    return sd


def sd15_controlnet_state_dict(seed=0, dtype=torch.float16) -> dict[str, torch.Tensor]:
    """A full-size random SD1.5 ControlNet in the original format (control_v11p_sd15_*: `control_model.*`)."""
    _import_comfy()
    import comfy.ops
    from comfy.cldm.cldm import ControlNet

    config = {k: v for k, v in SD15_UNET.items() if k not in ("out_channels", "transformer_depth_output")}
    with torch.device("meta"):
        net = ControlNet(hint_channels=3, operations=comfy.ops.disable_weight_init, **config)
    gen = torch.Generator().manual_seed(seed)
    return {"control_model." + name: random_tensor(name, tuple(t.shape), gen).to(dtype)
            for name, t in net.state_dict().items()}


def check_sd15(path) -> None:
    """Loads `path` the way CheckpointLoaderSimple does and checks that it is SD1.5 and gives finite outputs."""
    _import_comfy()
    import comfy.sd
    import comfy.supported_models
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True)
    assert type(model.model.model_config) is comfy.supported_models.SD15, type(model.model.model_config)
    cond = clip.encode_from_tokens(clip.tokenize("a cat walking on the beach"))
    assert cond.shape == (1, 77, 768) and torch.isfinite(cond).all(), cond.shape
    latent = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    image = vae.decode(latent)
    assert image.shape == (1, 128, 128, 3) and torch.isfinite(image).all(), image.shape
    for dt in (torch.float32, torch.float16):
        out = model.model.diffusion_model.to(dt)(latent.to(dt), torch.tensor([500.0], dtype=dt), context=cond.to(dt))
        assert out.shape == latent.shape and torch.isfinite(out).all(), (dt, out.abs().max())


def _save(sd: dict, path: Path, wrap=None) -> None:
    """Writes to a temporary name and renames, so an existing file is always a complete one."""
    tmp = path.with_name(path.name + ".partial")
    if path.suffix == ".safetensors":
        import safetensors.torch
        safetensors.torch.save_file(sd, str(tmp))
    else:
        torch.save(wrap(sd) if wrap else sd, tmp)
    os.replace(tmp, path)


def fixture_jobs(small_only=False):
    """(relative path, state-dict factory, ckpt wrapper) for every fixture file."""
    small = lambda v: (lambda: motion_module_state_dict(v, SMALL_CHANNELS, dtype=torch.float32))
    full = lambda v: (lambda: motion_module_state_dict(v))
    in_state_dict = lambda sd: {"state_dict": sd}
    with_config = lambda sd: {**sd, "animatediff_config": V3_CONFIG}
    jobs = [(f"small/mm_{v}.safetensors", small(v), None) for v in ("v1", "v2", "v3", "animatelcm", "animatelcm_i2v")]
    jobs += [("small/mm_v2.ckpt", small("v2"), in_state_dict), ("small/mm_pia.ckpt", small("pia"), None),
             ("small/mm_sdxl.safetensors",
              lambda: motion_module_state_dict("sdxl", SMALL_SDXL_CHANNELS, dtype=torch.float32), None),
             ("small/hsxl_temporal_layers.safetensors",
              lambda: hotshotxl_state_dict(SMALL_SDXL_CHANNELS, dtype=torch.float32), None)]
    # MotionLoRAs and the domain adapter: small ones for the tiny UNet (fp32, low rank), full-size ones
    # in the released ranks. "zoom" has mid-block weights like the released files; "pan" leaves them out, as
    # a MotionLoRA made for a module without a mid block would.
    jobs += [("small/motion_lora_zoom.safetensors",
              lambda: motion_lora_state_dict(SMALL_CHANNELS, rank=8, seed=1, dtype=torch.float32), None),
             ("small/motion_lora_pan.ckpt",
              lambda: motion_lora_state_dict(SMALL_CHANNELS, rank=8, with_mid=False, seed=2, dtype=torch.float32), None),
             ("small/v3_adapter.ckpt",
              lambda: domain_adapter_state_dict(SMALL_CHANNELS, rank=16, dtype=torch.float32), None)]
    # SparseCtrls; the original loader also takes weights under "controlnet", as the scribble fixture has them
    jobs += [("small/sparsectrl_rgb.safetensors",
              lambda: sparse_ctrl_state_dict("rgb", SMALL_CHANNELS, seed=3, dtype=torch.float32), None),
             ("small/sparsectrl_scribble.ckpt",
              lambda: sparse_ctrl_state_dict("scribble", SMALL_CHANNELS, seed=4, dtype=torch.float32),
              lambda sd: {"controlnet": sd})]
    # CameraCtrl: the pruned flat file, and the original nested .ckpt (consecutive: one generation for both)
    small_cameractrl = lambda: cameractrl_state_dict(SMALL_CHANNELS, dtype=torch.float32)
    jobs += [("small/cameractrl.safetensors", small_cameractrl, None),
             ("small/cameractrl.ckpt", small_cameractrl, cameractrl_original)]
    if not small_only:
        for v, wrap in (("v1", None), ("v2", in_state_dict), ("v3", with_config)):
            jobs += [(f"mm_{v}.ckpt", full(v), wrap), (f"mm_{v}.safetensors", full(v), None)]
        jobs += [("mm_animatelcm.safetensors", full("animatelcm"), None),
                 ("mm_animatelcm_i2v.safetensors", full("animatelcm_i2v"), None),
                 ("mm_pia.safetensors", full("pia"), None),
                 ("mm_sdxl.safetensors", lambda: motion_module_state_dict("sdxl", SDXL_CHANNELS), None)]
        jobs.append(("sd15_random.safetensors", sd15_checkpoint_state_dict, None))
        jobs += [("motion_lora_zoom.safetensors", lambda: motion_lora_state_dict(seed=1), None),
                 ("motion_lora_pan.ckpt", lambda: motion_lora_state_dict(with_mid=False, seed=2), None),
                 ("v3_adapter.ckpt", domain_adapter_state_dict, None),
                 ("controlnet_sd15_random.safetensors", sd15_controlnet_state_dict, None),
                 ("sparsectrl_rgb.safetensors", lambda: sparse_ctrl_state_dict("rgb"), None),
                 ("cameractrl.safetensors", cameractrl_state_dict, None)]
    return jobs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small-only", action="store_true", help="only the tiny models (seconds)")
    parser.add_argument("--check", action="store_true", help="load sd15_random.safetensors with ComfyUI")
    args = parser.parse_args(argv)
    root = fixtures_dir()
    (root / "small").mkdir(parents=True, exist_ok=True)
    stamp = root / "STAMP"
    if not stamp.exists() or stamp.read_text() != STAMP:
        # Made by another generator version: none of it can be trusted, full-size files included.
        for rel, _, _ in fixture_jobs():
            (root / rel).unlink(missing_ok=True)
        stamp.write_text(STAMP)
    cached = {}  # the .ckpt and .safetensors of one version hold the same tensors: generate once
    for rel, make, wrap in fixture_jobs(args.small_only):
        path = root / rel
        if path.exists():
            continue
        start = time.perf_counter()
        key = rel.rsplit(".", 1)[0]
        sd = cached.pop(key, None) or make()
        _save(sd, path, wrap)
        cached = {key: sd}
        print(f"{rel}: {path.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - start:.1f} s", flush=True)
    if args.check and not args.small_only:
        start = time.perf_counter()
        check_sd15(root / "sd15_random.safetensors")
        print(f"sd15_random.safetensors loads in ComfyUI as SD15 ({time.perf_counter() - start:.1f} s)")
    print(root)


if __name__ == "__main__":
    main()
