"""Nodes that load a motion module and put it into a model."""
import logging

import folder_paths

from ..patching.effect import MotionEffect
from ..patching.motion import KEY, ActingRange, apply_motion_model, load_motion_model_file
from ..patching.schedule import BetaSchedule
from .folders import MOTION_MODELS, file_stamp
from .numbers import finite

CATEGORY = "AnimateDiff"


class LoadMotionModule:
    DESCRIPTION = ("Loads an AnimateDiff motion module (v1, v2, v3 or SDXL), AnimateLCM's (t2v or i2v), PIA's or "
                   "HotshotXL's, .ckpt or .safetensors (also diffusers' MotionAdapter files), from "
                   "models/animatediff_models; its version is told from the file's weights.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MOTION_MODEL",)
    OUTPUT_TOOLTIPS = ("The motion module, to connect to AnimateDiff_ApplyMotionModule.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model_name": (folder_paths.get_filename_list(MOTION_MODELS), {
            "tooltip": "A motion module file in models/animatediff_models, e.g. mm_sd_v15_v2.ckpt, "
                       "v3_sd15_mm.ckpt or AnimateLCM_sd15_t2v.ckpt (SD1.5), mm_sdxl_v10_beta.ckpt or "
                       "hsxl_temporal_layers.safetensors (SDXL)."})}}

    @classmethod
    def IS_CHANGED(cls, model_name, **kwargs):
        return file_stamp(folder_paths.get_full_path(MOTION_MODELS, model_name))

    def load(self, model_name):
        path = folder_paths.get_full_path_or_raise(MOTION_MODELS, model_name)
        return (load_motion_model_file(path, model_name),)


class ApplyMotionModule:
    DESCRIPTION = ("Returns a copy of the model that animates: the latent batch becomes the frames of one "
                   "video, mixed over time by the motion module. The input model is left as it was.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The animating model, for KSampler, SamplerCustomAdvanced or AnimateDiff_Sampler.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SD1.5 model (base or fine-tuned), or an SDXL model for an SDXL "
                                               "motion module."}),
                "motion_model": ("MOTION_MODEL", {"tooltip": "From AnimateDiff_LoadMotionModule."}),
            },
            "optional": {
                "motion_lora": ("MOTION_LORA", {"tooltip": "MotionLoRAs (from AnimateDiff_MotionLoRA) to add to "
                                "the motion module, e.g. a camera zoom or pan. Trained on v2 modules."}),
                "motion_scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01, "tooltip":
                    "Sharpness of the temporal attention: 1 is the original; above 1 frames attend more "
                    "selectively (often more motion), below 1 more evenly (calmer); 0 averages all frames."}),
                "beta_schedule": (BetaSchedule.ALL, {"default": BetaSchedule.AUTOSELECT, "tooltip":
                    "Noise schedule. autoselect uses the one the motion module was trained with (linear "
                    "0.00085→0.012, 'sqrt_linear' in ComfyUI; AnimateDiff SDXL's: scaled linear to 0.020; "
                    "HotshotXL's: SDXL's own), for AnimateLCM with its LCM sampling (then sample with the lcm "
                    "sampler, 4–8 steps, cfg 1–2); other schedules often give noisy, washed-out videos. "
                    "animatelcm: AnimateLCM's sampling for its diffusers-format file, which loads as v2; "
                    "animatediff_sdxl: AnimateDiff SDXL's betas, chosen explicitly."}),
                "effect": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                    "How much of its change each motion layer keeps: 1 is the original, 0 leaves the frames "
                    "unmixed over time (each as the image model makes it), between them a blend; e.g. 0.5–0.8 "
                    "for subtler motion."}),
                "effect_mask": ("MASK", {"tooltip": "Where (white) the motion module acts, times effect; black "
                                "areas are left as the image model makes them. One mask for every frame, or one "
                                "per frame (then also when)."}),
                "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip":
                    "When in the sampling the motion module starts to act, as ControlNet's start_percent: 0 from "
                    "the first step. Before it each frame is the image model's own, unmixed over time."}),
                "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip":
                    "When it stops: 1 to the last step; e.g. 0.8 leaves the last, detail-making steps to the "
                    "image model alone (those steps also run faster)."}),
            },
        }

    @finite("motion_scale", "effect", "start_percent", "end_percent")
    def apply(self, model, motion_model, motion_lora=None, motion_scale=1.0,
              beta_schedule=BetaSchedule.AUTOSELECT, effect=1.0, effect_mask=None, start_percent=0.0,
              end_percent=1.0):
        if effect_mask is not None and effect_mask.ndim == 2:  # one (height, width) mask
            effect_mask = effect_mask[None]
        if model.get_additional_models_with_key(KEY):
            logging.warning("AnimateDiff: Apply Motion Module (%s) replaces the motion module an earlier Apply Motion "
                            "Module put into this model: one motion module animates a model at a time.",
                            motion_model.name)
        effect = MotionEffect(effect, None if effect_mask is None else effect_mask.float().cpu())
        acting = ActingRange(start_percent, end_percent)
        return (apply_motion_model(model, motion_model, motion_scale, beta_schedule, motion_lora, effect, acting),)
