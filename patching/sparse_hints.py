"""The control object of a SparseCtrl: ComfyUI's ControlNet, with hints for a few chosen frames.

ComfyUI's ControlNet spreads one hint per frame over the batch. A SparseCtrl needs, for the frames of each
call, the hint of those frames that have one, zeros for the rest, and a mask channel saying which are which;
with context windows the call holds one window of a longer video. get_control builds that condition (from
ad_params, which this pack's context windows set, as other packs read them) and hands the rest to ComfyUI.
"""
import comfy.controlnet
import comfy.latent_formats
import comfy.model_management
import comfy.utils
import torch

from ..errors import AnimateDiffError
from .calls import call_frames
from .context import empty_hint_caches
from .sparse_ctrl import SparseCtrlModel

LATENT_SCALE = 8  # pixels per latent cell in SD1.5's VAE


def resolve_frames(frame_indices: list[int], total: int) -> list[int]:
    """Frame numbers for indices that may count from the end (-1 is the last frame)."""
    resolved = [i + total if i < 0 else i for i in frame_indices]
    outside = [i for i, r in zip(frame_indices, resolved) if not 0 <= r < total]
    if outside:
        raise AnimateDiffError(f"SparseCtrl frame_indices {outside} lie outside the {total} frames being "
                               f"sampled (valid: 0…{total - 1}, or -1…-{total} from the end).")
    if len(set(resolved)) < len(resolved):
        raise AnimateDiffError(f"SparseCtrl frame_indices {frame_indices} name the same frame twice among "
                               f"{total} frames; give each frame one image.")
    return resolved


class SparseControlNet(comfy.controlnet.ControlNet):
    """cond_hint_original holds the K hint images (b c h w, as ComfyUI keeps hints); frame_indices says
    which frame each belongs to. RGB SparseCtrls also need the VAE that encodes them."""

    def __init__(self, control_model: SparseCtrlModel | None = None, load_device=None, manual_cast_dtype=None):
        # RGB hints are latents: ComfyUI then sizes them 1:1 to the latents, not 8:1
        ratio = 1 if control_model is not None and control_model.latent_hints else LATENT_SCALE
        super().__init__(control_model, compression_ratio=ratio, load_device=load_device,
                         manual_cast_dtype=manual_cast_dtype)
        self.frame_indices: list[int] = [0]
        self.hint_vae = None
        self.encoded = {}  # (height, width, device, dtype) -> the K hints at that size, as the model takes them

    @property
    def latent_hints(self) -> bool:
        return self.control_model.latent_hints

    def for_frames(self, frame_indices: list[int], vae=None) -> "SparseControlNet":
        c = self.copy()
        c.frame_indices, c.hint_vae = list(frame_indices), vae
        return c

    def copy(self):
        c = SparseControlNet(None, self.load_device, self.manual_cast_dtype)
        c.control_model, c.control_model_wrapped = self.control_model, self.control_model_wrapped
        self.copy_to(c)
        c.frame_indices, c.hint_vae = self.frame_indices, self.hint_vae
        return c

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        frames = x_noisy.shape[0] // batched_number
        indices, total = call_frames(transformer_options, frames)
        if total is None:
            # ComfyUI 0.3.75's core windows tell a window's frames but not the video's length: -1 and the frames
            # past the window could not be placed (newer ComfyUIs tell it)
            raise AnimateDiffError("SparseCtrl cannot tell its frames inside ComfyUI's core Context Windows node: "
                                   "use AnimateDiff_ContextWindows instead, which gives each window its own frames' "
                                   "images.")
        dtype = self.manual_cast_dtype or self.control_model.dtype
        images = self.cond_hint_original
        # For this call ComfyUI's ControlNet gets one hint per frame, as from Apply ControlNet, and prepares it
        # its usual way (already at the latents' size, it is only moved and batched).
        self.cond_hint_original = self.condition(indices, total, self.hints_at(*x_noisy.shape[-2:], x_noisy.device,
                                                                                dtype))
        empty_hint_caches(self)
        self.set_extra_arg("video_frames", frames)
        try:
            return super().get_control(x_noisy, t, cond, batched_number, transformer_options)
        finally:
            self.cond_hint_original = images

    def cleanup(self):
        self.encoded = {}  # the hints held on the device are not kept past sampling
        super().cleanup()

    def condition(self, indices: list[int], total: int, hints: torch.Tensor) -> torch.Tensor:
        """(len(indices), C + 1, h, w): each frame's hint where it has one, else zeros; then the mask."""
        owner = {frame: k for k, frame in enumerate(resolve_frames(self.frame_indices, total))}
        out = hints.new_zeros(len(indices), hints.shape[1] + 1, *hints.shape[2:])
        for row, frame in enumerate(indices):
            if frame in owner:
                out[row, :-1] = hints[owner[frame]]
                out[row, -1] = 1
        return out

    def hints_at(self, height: int, width: int, device, dtype) -> torch.Tensor:
        """The K hints for latents of this size: images resized to the pixels (scribble), or their VAE latents
        (RGB), made once per size and kept where the model runs."""
        key = (height, width, device, dtype)
        if key not in self.encoded:
            size = (width * LATENT_SCALE, height * LATENT_SCALE)
            if self.latent_hints:
                hints = self.encode(comfy.utils.common_upscale(self.cond_hint_original, *size, "bilinear", "center"))
            else:
                hints = comfy.utils.common_upscale(self.cond_hint_original, *size, "nearest-exact", "center")
            self.encoded[key] = hints.to(device, dtype)
        return self.encoded[key]

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if self.hint_vae is None:
            raise AnimateDiffError("This SparseCtrl (RGB) takes its images as latents: connect a VAE to "
                                   "AnimateDiff_ApplySparseCtrl's vae input.")
        # encoding may push the sampling models out of memory: put them back, as ComfyUI's ControlNet does
        loaded = comfy.model_management.loaded_models(only_currently_used=True)
        latents = self.hint_vae.encode(images.movedim(1, -1)[..., :3])
        comfy.model_management.load_models_gpu(loaded)
        return comfy.latent_formats.SD15().process_in(latents)
