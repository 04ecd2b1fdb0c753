"""How much of its change each motion layer keeps: `effect`, optionally times a mask that says where (and, one
mask per frame, when). 0 keeps the layer's input, 1 the motion module's output, between them a blend.

For each UNet call an APPLY_MODEL wrapper makes the call's maps at the size of each UNet level (each cell the
mean of the mask over the area it covers; with context windows, the masks of the window's frames, from ad_params,
which this pack's windows set, or the core node's context_window), and each motion layer takes those of its size.
They are made on the CPU, from the mask itself, so a level's map comes from the mask's pixels, not from another
map's cells (and Apple's MPS, which refuses area resizing to sizes that do not divide, is not asked).
"""
import torch

from ..errors import AnimateDiffError
from ..motion_module.formats import is_finite
from .calls import SamplingCache, call_frames, call_options, frames_in_call, level_sizes, with_call_options

MAPS = "animatediff_effect_maps"  # the call's maps, in its transformer_options


class MotionEffect(SamplingCache):
    def __init__(self, strength: float, mask: torch.Tensor | None = None):
        """`mask`: (1 or one per frame, H, W), values in [0, 1]."""
        if mask is not None and (mask.ndim != 3 or 0 in mask.shape or not is_finite(mask)):
            raise AnimateDiffError(f"effect_mask must be finite masks of shape (frames, height, width); got "
                                   f"shape {tuple(mask.shape)}. Connect a MASK (e.g. from LoadImage's mask or "
                                   f"an image converted to a mask).")
        super().__init__()  # its cache: the maps made on the device, per window
        self.strength = float(strength)
        self.mask = mask

    def __deepcopy__(self, memo):
        """ComfyUI deep-copies model_options on every clone; clones share this one, whose mask is never changed,
        so the cache the layers fill is the one forget_after_sampling empties (and the mask is not copied)."""
        return self

    @property
    def keeps_input(self) -> bool:
        """The motion module need not run at all."""
        return self.strength == 0

    def maps(self, x: torch.Tensor, frames: int, transformer_options: dict) -> dict[tuple[int, int], torch.Tensor]:
        """{(h, w): (videos · frames, 1, h, w)} for a call's latent x, at each UNet level's size: each of its
        frames' mask times strength."""
        indices = [0] if len(self.mask) == 1 else self._frame_indices(frames, transformer_options)
        key = (tuple(indices), x.shape[0] // len(indices), *x.shape[-2:], x.device)
        if key not in self.cache:
            masks = self.mask[indices].cpu()
            self.cache[key] = {size: (area_means(masks, size)[:, None] * self.strength).repeat(key[1], 1, 1, 1)
                               .to(x.device) for size in level_sizes(*x.shape[-2:])}
        return self.cache[key]

    def for_call(self, executor, x, *args, **kwargs):
        """APPLY_MODEL wrapper: the call's maps go to the motion layers in its transformer_options."""
        self.check_whole_latent(x, "effect_mask")
        options = call_options(args, kwargs)
        maps = self.maps(x, frames_in_call(x, options), options)
        args, kwargs = with_call_options(args, kwargs, {**options, MAPS: maps})
        return executor(x, *args, **kwargs)

    def weights(self, x: torch.Tensor, transformer_options: dict) -> float | torch.Tensor:
        """The blend weight for a motion layer's input x: a number, or the call's maps at x's size."""
        if self.mask is None:
            return self.strength
        maps = transformer_options.get(MAPS)
        if maps is None:
            raise AnimateDiffError("effect_mask's maps are made when ComfyUI's model runs (BaseModel.apply_model); "
                                   "this UNet call came another way. Sample with a ComfyUI sampler node.")
        size = tuple(x.shape[-2:])
        if size not in maps:  # a size halving does not give (the core Deep Shrink node shrinks the features by
            # any factor): the latent's map over this layer's cells, made once per window and size
            latent = maps[next(iter(maps))]
            maps[size] = area_means(latent[:, 0].cpu(), size)[:, None].to(latent.device)
        return maps[size].to(x.dtype)

    def _frame_indices(self, frames: int, transformer_options: dict) -> list[int]:
        """The video frames this call holds; the mask batch must have one mask for each frame of the video."""
        indices, length = call_frames(transformer_options, frames)
        count = len(self.mask)
        if (length is not None and length != count) or max(indices) >= count:
            video = f"{length}" if length is not None else f"at least {max(indices) + 1}"
            raise AnimateDiffError(f"effect_mask holds {count} masks for a video of {video} frames. Give one mask "
                                   f"(for every frame) or exactly one per frame.")
        return indices


def area_means(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(n, H, W) -> (n, h, w) float32: each cell the mean of the masks over the area it covers, a pixel it covers
    in part counted by that part (torch's "area" interpolation counts such pixels whole)."""
    rows, columns = (_coverage(pixels, cells) for pixels, cells in zip(masks.shape[-2:], size))
    return torch.einsum("ih,nhw,jw->nij", rows, masks.double(), columns).float()


def _coverage(pixels: int, cells: int) -> torch.Tensor:
    """(cells, pixels): the share of each cell's span that each pixel covers, both spanning the same length."""
    edges = torch.arange(cells + 1, dtype=torch.float64) * (pixels / cells)  # the cells' edges, in pixels
    left = torch.arange(pixels, dtype=torch.float64)
    overlap = torch.minimum(edges[1:, None], left + 1) - torch.maximum(edges[:-1, None], left)
    return overlap.clamp(min=0) * (cells / pixels)


def blend(before: torch.Tensor, after: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
    """before at weight 0 and after at weight 1, exactly (torch.lerp computes from the nearer end)."""
    if isinstance(weight, float) and weight == 1:
        return after
    return torch.lerp(before, after, weight)
