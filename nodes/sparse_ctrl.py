"""Nodes for SparseCtrl: guide an animation with images for a few of its frames (AnimateDiff v3)."""
import folder_paths
import nodes as comfy_nodes

from ..errors import AnimateDiffError
from ..patching.sparse_ctrl import load_sparse_ctrl_model
from ..patching.sparse_hints import SparseControlNet
from .folders import file_stamp
from .images import as_rgb
from .numbers import finite

CATEGORY = "AnimateDiff"
CONTROLNETS = "controlnet"  # ComfyUI's own folder, where SparseCtrl files are usually kept


class LoadSparseCtrl:
    DESCRIPTION = ("Loads a SparseCtrl model (AnimateDiff v3's sparse ControlNet: RGB or scribble) from "
                   "models/controlnet. Its kind is told from the file's weights.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("SPARSE_CTRL",)
    OUTPUT_TOOLTIPS = ("The SparseCtrl, to connect to AnimateDiff_ApplySparseCtrl.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sparse_ctrl_name": (folder_paths.get_filename_list(CONTROLNETS), {
            "tooltip": "A SparseCtrl file in models/controlnet: v3_sd15_sparsectrl_rgb.ckpt (images) or "
                       "v3_sd15_sparsectrl_scribble.ckpt (sketches)."})}}

    @classmethod
    def IS_CHANGED(cls, sparse_ctrl_name, **kwargs):
        return file_stamp(folder_paths.get_full_path(CONTROLNETS, sparse_ctrl_name))

    def load(self, sparse_ctrl_name):
        path = folder_paths.get_full_path_or_raise(CONTROLNETS, sparse_ctrl_name)
        model, load_device, compute_dtype = load_sparse_ctrl_model(path)
        return (SparseControlNet(model, load_device, compute_dtype),)


def parse_frame_indices(text: str) -> list[int]:
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    try:
        indices = [int(p) for p in parts]
    except ValueError:
        raise AnimateDiffError(f"frame_indices {text!r} must be whole numbers separated by commas, e.g. "
                               "\"0\" or \"0, 8, -1\" (negative numbers count from the last frame).") from None
    if not indices:
        raise AnimateDiffError("frame_indices is empty: give the frame of each image, e.g. \"0\".")
    return indices


class ApplySparseCtrl:
    DESCRIPTION = ("Guides the animation with images for a few chosen frames: the first frame for image to "
                   "video, first and last for interpolation, a sketch every few frames. Works with "
                   "AnimateDiff v3 motion modules, and with context windows for long animations.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = ("The positive prompt, guided by the SparseCtrl: for the sampler's positive input.",
                       "The negative prompt, guided likewise: for the sampler's negative input.")
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "positive": ("CONDITIONING", {"tooltip": "The positive prompt (e.g. CLIPTextEncode's)."}),
                "negative": ("CONDITIONING", {"tooltip": "The negative prompt; SparseCtrl guides both, as "
                                                         "ControlNet does."}),
                "sparse_ctrl": ("SPARSE_CTRL", {"tooltip": "From AnimateDiff_LoadSparseCtrl."}),
                "images": ("IMAGE", {"tooltip": "One image per frame index, in the same order: photos for "
                                                "an RGB SparseCtrl, sketches (white lines on black) for "
                                                "scribble. Resized to the video's size when sampling."}),
                "frame_indices": ("STRING", {"default": "0", "tooltip":
                    "The frame each image guides, separated by commas: \"0\" (first frame), \"0, -1\" (first "
                    "and last). Negative numbers count from the end."}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01, "tooltip":
                    "How strongly the images guide their frames (1 as trained)."}),
                "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip":
                    "Where in the sampling the guidance starts (0: the first, noisiest step), as ControlNet's."}),
                "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip":
                    "Where in the sampling the guidance ends (1: the last step)."}),
            },
            "optional": {
                "vae": ("VAE", {"tooltip": "Needed by RGB SparseCtrls, which take the images as latents."}),
            },
        }

    @finite("strength", "start_percent", "end_percent")
    def apply(self, positive, negative, sparse_ctrl, images, frame_indices, strength, start_percent,
              end_percent, vae=None):
        if start_percent > end_percent:
            # ComfyUI's Apply ControlNet would accept it and guide no step at all
            raise AnimateDiffError(f"AnimateDiff_ApplySparseCtrl: start_percent ({start_percent}) is after "
                                   f"end_percent ({end_percent}); the images guide the sampling from start_percent "
                                   "to end_percent.")
        indices = parse_frame_indices(frame_indices)
        images = as_rgb(images, "AnimateDiff_ApplySparseCtrl")
        if images.shape[0] != len(indices):
            raise AnimateDiffError(f"AnimateDiff_ApplySparseCtrl got {images.shape[0]} images for "
                                   f"{len(indices)} frame_indices ({frame_indices!r}): give one image per index.")
        if sparse_ctrl.latent_hints and vae is None:
            raise AnimateDiffError("This SparseCtrl is an RGB one, which takes its images as latents: connect "
                                   "the checkpoint's VAE to AnimateDiff_ApplySparseCtrl's vae input.")
        net = sparse_ctrl.for_frames(indices, vae)
        # ComfyUI's own Apply ControlNet does the rest: strength, the schedule range, chaining, both conds
        return comfy_nodes.ControlNetApplyAdvanced().apply_controlnet(positive, negative, net, images, strength,
                                                                      start_percent, end_percent)
