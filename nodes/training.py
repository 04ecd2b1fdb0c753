"""Nodes that make reference clips of camera motions and train a MotionLoRA from clips."""
import os
import re

import comfy.model_management
import comfy.utils
import folder_paths
import safetensors.torch
import torch

from ..errors import AnimateDiffError
from ..lora import MotionLoRA as MotionLoRAEntry
from ..lora import add_to_stack
from ..lora.augment import CameraMotion, camera_clip
from ..lora.training import loss_curve_image
from ..patching.training import encode_clips, train_motion_lora
from .folders import MOTION_LORAS
from .images import as_rgb
from .numbers import finite

CATEGORY = "AnimateDiff"
SAFE_NAME = re.compile(r"^[\w\-. ]+$")
MAX_NAME_BYTES = 200


class CameraAugment:
    DESCRIPTION = ("Makes a reference clip of a camera motion (zoom, pan, tilt, roll) from a still image by "
                   "moving a crop window over it, the paper's rule-based augmentation for MotionLoRA training.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The clip: `frames` images, for AnimateDiff_TrainMotionLoRA's reference_frames.",)
    FUNCTION = "augment"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The still to move the camera over (of a batch, the first image)."}),
                "motion": (CameraMotion.ALL, {"default": CameraMotion.ZOOM_IN, "tooltip":
                    "zoom_in/zoom_out: the crop window shrinks/grows about the centre; pan_left/pan_right, "
                    "tilt_up/tilt_down: a smaller window slides across; roll_clockwise/roll_anticlockwise: the "
                    "picture turns."}),
                "frames": ("INT", {"default": 16, "min": 2, "max": 128, "tooltip":
                    "Frames in the clip; 16 is what the motion modules were trained on."}),
                "speed": ("FLOAT", {"default": 0.25, "min": 0.0, "max": 0.9, "step": 0.01, "tooltip":
                    "How far the camera moves over the whole clip, as a fraction of the frame (zoom: 0.25 ends "
                    "on a window 75 % of the size; roll: a fraction of a full turn, 0.25 = 90°)."}),
                "width": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 8, "tooltip":
                    "Output width in pixels."}),
                "height": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 8, "tooltip":
                    "Output height in pixels."}),
            },
        }

    @finite("speed")
    def augment(self, image, motion, frames, speed, width, height):
        # only the first image is used: converting the rest of a long batch would copy it for nothing
        return (camera_clip(as_rgb(image[:1], "AnimateDiff_CameraAugment")[0].float(), motion, frames, float(speed),
                            width, height),)


class TrainMotionLoRA:
    DESCRIPTION = ("Trains a MotionLoRA (a LoRA on the motion module's temporal attention) from reference clips, "
                   "the paper's third stage: the model, motion module and VAE stay frozen and unchanged. Saves "
                   "models/animatediff_motion_lora/<save_name>.safetensors with the released MotionLoRA key names. "
                   "Interrupting saves nothing.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MOTION_LORA", "IMAGE")
    RETURN_NAMES = ("motion_lora", "loss_curve")
    OUTPUT_TOOLTIPS = ("The trained MotionLoRA at strength 1, as AnimateDiff_MotionLoRA would load it, for "
                       "AnimateDiff_ApplyMotionModule.",
                       "The training loss per step (grey) and its moving average (blue).")
    FUNCTION = "train"
    OUTPUT_NODE = True  # it writes a file: run it even when nothing reads its outputs

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The SD1.5 model (SDXL for an SDXL motion module) to train with, "
                                            "ε- or v-prediction (frozen, left unchanged)."}),
                "motion_model": ("MOTION_MODEL", {"tooltip":
                    "The motion module the LoRA is for (frozen, left unchanged); the released MotionLoRAs are "
                    "for v2 (mm_sd_v15_v2)."}),
                "vae": ("VAE", {"tooltip": "The VAE that encodes the reference frames to latents."}),
                "reference_frames": ("IMAGE", {"tooltip":
                    "One clip, or several clips one after the other: every `frames` consecutive images make a "
                    "clip; leftover images are ignored."}),
                "positive": ("CONDITIONING", {"tooltip":
                    "A caption of the clips: one prompt, e.g. from CLIPTextEncode."}),
                "rank": ("INT", {"default": 64, "min": 1, "max": 512, "tooltip":
                    "LoRA rank; the released MotionLoRAs use 64. Lower is smaller and learns less."}),
                "steps": ("INT", {"default": 500, "min": 1, "max": 100000, "tooltip":
                    "Training steps, one clip each; the paper trains about 2000 on 20–50 clips."}),
                "learning_rate": ("FLOAT", {"default": 1e-4, "min": 1e-7, "max": 1.0, "step": 1e-5,
                                            "round": False, "tooltip": "AdamW learning rate; the paper uses 1e-4."}),
                "frames": ("INT", {"default": 16, "min": 2, "max": 32, "tooltip":
                    "Frames per clip (the motion module's window; 16 as trained)."}),
                "resolution": ("INT", {"default": 256, "min": 64, "max": 1024, "step": 8, "tooltip":
                    "Frames are centre-cropped to a square and resized to this size (the paper: 256)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True,
                                 "tooltip": "Seed of the LoRA's start, the clip order, timesteps and noise."}),
                "save_name": ("STRING", {"default": "my_motion_lora", "tooltip":
                    "File name (without extension) in models/animatediff_motion_lora; an existing file is "
                    "replaced."}),
            },
        }

    @finite("learning_rate")
    def train(self, model, motion_model, vae, reference_frames, positive, rank, steps, learning_rate, frames,
              resolution, seed, save_name):
        path = lora_path(save_name)
        clips = encode_clips(vae, model, as_rgb(reference_frames, "AnimateDiff_TrainMotionLoRA: reference_frames"),
                             frames, resolution)
        progress = comfy.utils.ProgressBar(steps)

        def on_step(step, loss):
            progress.update(1)
            # Interrupting raises out of training: nothing is saved and any earlier file stays as it was.
            comfy.model_management.throw_exception_if_processing_interrupted()
        weights, losses = train_motion_lora(model, motion_model, clips, positive, rank, steps, learning_rate,
                                            seed, on_step)
        metadata = {"animatediff_trained": f"steps={steps} rank={rank} lr={learning_rate} clips={len(clips)} "
                                           f"frames={frames} resolution={resolution} motion_module={motion_model.name}"}
        trained = weights.released_state_dict()
        save_atomically(trained, path, metadata)
        name = os.path.basename(path)
        stack = add_to_stack(None, MotionLoRAEntry(name, path, 1.0, trained))
        # also in /history, for a service: the file's name and the loss of every step
        return {"ui": {"motion_lora": [name], "loss": losses}, "result": (stack, loss_curve_image(losses))}


def lora_path(save_name: str) -> str:
    name = save_name.strip().removesuffix(".safetensors")
    if not name or not SAFE_NAME.match(name) or name.startswith("."):
        raise AnimateDiffError(f"save_name {save_name!r}: use letters, digits, spaces, '-', '_' or '.', with no "
                               "folders; the file goes to models/animatediff_motion_lora.")
    if len(name.encode()) > MAX_NAME_BYTES:  # file systems take 255 bytes, with the suffixes
        raise AnimateDiffError(f"save_name is {len(name.encode())} bytes long; use at most {MAX_NAME_BYTES}.")
    folder = folder_paths.get_folder_paths(MOTION_LORAS)[0]
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{name}.safetensors")


def save_atomically(state_dict: dict[str, torch.Tensor], path: str, metadata: dict[str, str]) -> None:
    """A temporary name, then a rename: the folder never holds a half-written MotionLoRA."""
    tmp = f"{path}.partial"
    try:
        safetensors.torch.save_file(state_dict, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
