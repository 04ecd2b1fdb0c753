"""PIA's picture: the affinity of each frame and the picture's latent reach the UNet through PIA's input
convolution. That convolution takes 9 channels where the model's takes 4; as convolution is linear in its
channels, conv(cat[x, a, z], W) + b = conv(x, W[:, :4]) + b + conv(cat[a, z], W[:, 4:]), so the model's own
conv_in (with its weight patches) keeps its part and a forward hook adds PIA's. PIA combines a personalised
model with its file the same way: the model's W[:, :4] and bias, the file's W[:, 4:]."""
import comfy.model_patcher
import torch
import torch.nn.functional as F

from ..errors import AnimateDiffError
from ..sampling.pia import affinity
from .calls import call_frames, call_options, compute_dtype, frames_in_call
from .pictures import WRAPPERS, PictureCache, one_picture, picture_part, with_wrappers

PIA_KEY = "animatediff_pia"
NODE = "AnimateDiff_PIAImage"


class PictureCondition(PictureCache):
    def __init__(self, motion_model, conv_in: torch.nn.Module, latent: torch.Tensor, preset: str, picture_frame: int):
        super().__init__(motion_model, NODE)
        self.conv_in = conv_in    # PIA's, in the motion model
        self.latent = latent      # (1, 4, h, w), scaled as the UNet takes latents
        self.preset = preset
        self.picture_frame = picture_frame
        self.current = None       # the extra channels of the UNet call running now
        self.hooks = {}           # per UNet, as MotionInjection's: clones share this object

    def channels(self, frames: list[int], videos: int, height: int, width: int, device, dtype) -> torch.Tensor:
        """(videos · frames, 5, h, w): each frame's affinity, then the picture's latent; the same for every
        video of the batch (cond and uncond alike, as PIA guides)."""
        key = (tuple(frames), videos, height, width, device, dtype)
        if key not in self.cache:
            latent = self.latent
            if latent.shape[-2:] != (height, width):  # as PIA fits its image latent to the video's
                latent = F.interpolate(latent, size=(height, width), mode="nearest")
            values = torch.tensor(affinity(self.preset, frames, self.picture_frame))
            planes = values.view(-1, 1, 1, 1).expand(-1, 1, height, width)
            per_frame = torch.cat([planes, latent.expand(len(frames), -1, -1, -1)], dim=1)
            self.cache = {key: per_frame.repeat(videos, 1, 1, 1).to(device, dtype)}
        return self.cache[key]

    def for_call(self, executor, x, *args, **kwargs):
        """APPLY_MODEL wrapper: which frames of the video this call holds, so the hook adds theirs."""
        self.check_whole_latent(x, f"{NODE}'s picture")
        options = call_options(args, kwargs)
        count = frames_in_call(x, options)
        frames, length = call_frames(options, count)
        if length is not None and self.picture_frame >= length:
            raise AnimateDiffError(f"{NODE}: picture_frame={self.picture_frame}, but the video has "
                                   f"{length} frames (0 to {length - 1}). Choose a frame of the video.")
        dtype = compute_dtype(executor.class_obj)
        self.current = self.channels(frames, x.shape[0] // count, *x.shape[-2:], x.device, dtype)
        try:
            return executor(x, *args, **kwargs)
        finally:
            self.current = None

    def add_channels(self, conv, args, output):
        """Forward hook on the UNet's conv_in."""
        if self.current is None:
            return None
        weight = self.conv_in.weight[:, 4:].to(output)
        return output + F.conv2d(self.current, weight, None, padding=1)

    def inject(self, patcher):
        unet = patcher.model.diffusion_model
        self.hooks[id(unet)] = unet.input_blocks[0][0].register_forward_hook(self.add_channels)

    def eject(self, patcher):
        hook = self.hooks.pop(id(patcher.model.diffusion_model), None)
        if hook is not None:
            hook.remove()


def with_picture(model, latent: torch.Tensor, preset: str, picture_frame: int):
    """A clone of a model animating with a PIA motion module that animates `latent` (a LATENT's samples, one
    image)."""
    motion, conv_in = picture_part(model, "conv_in", NODE, "PIA's motion module (pia.ckpt)")
    picture = one_picture(latent, NODE, model)
    condition = PictureCondition(motion, conv_in, picture, preset, int(picture_frame))
    # a second picture node replaces the first
    return with_wrappers(model, PIA_KEY, {WRAPPERS.APPLY_MODEL: condition.for_call,
                                          WRAPPERS.OUTER_SAMPLE: condition.check_at_sampling},
                         comfy.model_patcher.PatcherInjection(condition.inject, condition.eject))
