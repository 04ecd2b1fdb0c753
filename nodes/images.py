"""IMAGE inputs as ComfyUI's image nodes give them: (count, height, width, channels), grey, RGB or RGBA."""
import torch

from ..errors import AnimateDiffError


def as_rgb(images: torch.Tensor, what: str) -> torch.Tensor:
    """The three channels the VAE and SparseCtrl take: grey repeated, RGBA's alpha dropped (as VAE Encode drops
    it). Contiguous, so the frames resize and encode to the bits their RGB twin gives. `what` names the node and
    input in the message."""
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise AnimateDiffError(f"{what}: images have shape {tuple(images.shape)}, not an IMAGE batch (count, height, "
                               "width, 1, 3 or 4 channels). Connect a Load Image or another image node.")
    if images.shape[0] == 0:
        raise AnimateDiffError(f"{what}: the IMAGE batch holds no images. Check the node that made it.")
    return (images.expand(-1, -1, -1, 3) if images.shape[-1] == 1 else images[..., :3]).contiguous()
