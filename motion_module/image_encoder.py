"""AnimateLCM-I2V's image encoder: turns the reference image's latent into one feature map per down block.

The released file keeps it under `img_encoder.`: a conv from the 4 latent channels, a sinusoidal code of the
frame's position (scaled by `motion_strength`, 0.8 in the original), then two residual blocks per down
block, the first of each later block halving the size (average pooling). Feature i is added to the hidden
states of down block i before its last motion module.
"""
import torch
from torch import nn

from .layers import TORCH_OPS, sinusoidal_positions


class EncoderBlock(nn.Module):
    """x → (1×1 in_conv where channels change) → x + conv1×1(relu(conv3×3(x)))."""

    def __init__(self, channels_in: int, channels_out: int, downsample: bool, ops):
        super().__init__()
        self.downsample = downsample
        self.in_conv = ops.Conv2d(channels_in, channels_out, 1) if channels_in != channels_out else None
        self.block1 = ops.Conv2d(channels_out, channels_out, 3, padding=1)
        self.block2 = ops.Conv2d(channels_out, channels_out, 1)

    def forward(self, x):
        if self.downsample:
            # replicate-pad odd sizes, then halve
            x = nn.functional.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2), mode="replicate")
            x = nn.functional.avg_pool2d(x, 2)
        if self.in_conv is not None:
            x = self.in_conv(x)
        return x + self.block2(torch.relu(self.block1(x)))


class ImageEncoder(nn.Module):
    def __init__(self, channels: tuple[int, ...], ops=TORCH_OPS, latent_channels: int = 4, blocks_per_level: int = 2):
        super().__init__()
        self.channels = channels
        self.blocks_per_level = blocks_per_level
        self.conv_in = ops.Conv2d(latent_channels, channels[0], 3, padding=1)
        self.body = nn.ModuleList(
            EncoderBlock(channels[max(i - 1, 0)] if j == 0 else c, c, downsample=i > 0 and j == 0, ops=ops)
            for i, c in enumerate(channels) for j in range(blocks_per_level))

    def forward(self, latent: torch.Tensor, frames: int, motion_strength: float) -> list[torch.Tensor]:
        """latent: (1, 4, h, w), the reference image's, scaled as the UNet takes latents; returns per down block
        a (frames, C_i, h_i, w_i) feature, frame f carrying the position code of f."""
        x = self.conv_in(latent.expand(frames, -1, -1, -1))
        positions = sinusoidal_positions(frames, self.channels[0])[0].to(x.device, x.dtype)  # (frames, C)
        x = x + motion_strength * positions[:, :, None, None]
        features = []
        for index, block in enumerate(self.body):
            x = block(x)
            if (index + 1) % self.blocks_per_level == 0:
                features.append(x)
        return features
