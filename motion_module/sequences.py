"""How temporal attention lays out its tokens: one sequence of frames per video and spatial position.

Both layouts give the same numbers; they differ in what the attention kernel gets to work on.
"""
import torch
from einops import rearrange

HEADS = 8

# Attention kernels on a GPU work in tiles of 64–128 queries, and one sequence of 16 frames leaves most of a tile
# empty. Rows of about this many tokens, several sequences kept apart by a mask, fill them: the C=320 module at
# 512×512 is 22 % faster on an H200. A CPU gains nothing from it (0.91–1.14× with the mask, within its noise;
# regrouped without packing, a UNet call 0.96×), so it keeps the strided layout.
PACKED_TOKENS = 128


def sequences_per_row(sequences: int, frames: int) -> int:
    """About PACKED_TOKENS tokens a row, and a divisor of `sequences`, so that packing them is a view."""
    pack = max(1, PACKED_TOKENS // frames)
    while sequences % pack:
        pack -= 1
    return pack


def block_diagonal_mask(pack: int, frames: int, like: torch.Tensor) -> torch.Tensor | None:
    """Additive, ComfyUI's convention for every kernel: 0 within a sequence, −inf between packed ones."""
    if pack == 1:
        return None
    sequence = torch.arange(pack * frames, device=like.device) // frames
    mask = torch.zeros(pack * frames, pack * frames, dtype=like.dtype, device=like.device)
    return mask.masked_fill(sequence[:, None] != sequence[None, :], float("-inf"))


class PackedSequences:
    """Tokens (b h w) f c: each sequence's frames contiguous, so rows of several sequences are views."""

    def __init__(self, x: torch.Tensor, frames: int):
        self.frames = frames
        _, _, height, width = x.shape
        self.pack = sequences_per_row(x.shape[0] // frames * height * width, frames)
        self.mask = block_diagonal_mask(self.pack, frames, x)

    def tokens(self, x):
        """(b f) c h w -> (b h w) f c: the one copy that turning NCHW into tokens needs anyway."""
        _, channels, height, width = x.shape
        return x.view(-1, self.frames, channels, height * width).permute(0, 3, 1, 2).reshape(-1, self.frames, channels)

    def add_positions(self, x, table):
        return x + table  # table: 1 f c

    def split_heads(self, t):
        """(s f) (h e) -> (s/pack) h (pack f) e."""
        return t.view(-1, self.pack * self.frames, HEADS, t.shape[-1] // HEADS).transpose(1, 2)

    def add_to(self, residual, h):
        """residual + tokens, in the residual's NCHW layout (the other order would hand every later layer of the
        UNet a channels-last tensor: its convolutions measured 1.4× slower on a CPU)."""
        _, channels, height, width = residual.shape
        h = h.view(-1, height, width, self.frames, channels).permute(0, 3, 4, 1, 2)
        return (residual.view(h.shape) + h).view(residual.shape)

    def images(self, h, height, width):
        """Tokens back to (b f) c h w."""
        h = h.view(-1, height, width, self.frames, h.shape[-1]).permute(0, 3, 4, 1, 2)
        return h.reshape(-1, *h.shape[2:])


class StridedSequences:
    """Tokens (b f) (h w) c, as the UNet has them; each position's frames are a strided view, one sequence per
    attention row.

    The layout on a CPU, and under torch.compile: inductor fuses this one its own way, and the packed layout's size
    arithmetic kept a recompile for a second frame count (automatic dynamic shapes) in sympy for minutes.
    """
    mask = None

    def __init__(self, x: torch.Tensor, frames: int):
        self.frames = frames

    def tokens(self, x):
        return rearrange(x, "bf c h w -> bf (h w) c")

    def add_positions(self, x, table):
        bf, tokens, channels = x.shape
        return (x.view(-1, self.frames, tokens, channels) + table[:, :, None]).view(bf, tokens, channels)

    def split_heads(self, t):
        """(b f) d (h e) -> b (d h) f e, with no permute copy."""
        return t.view(-1, self.frames, t.shape[1] * HEADS, t.shape[2] // HEADS).transpose(1, 2)

    def add_to(self, residual, h):
        _, _, height, width = residual.shape
        return residual + self.images(h, height, width)

    def images(self, h, height, width):
        return rearrange(h, "bf (h w) c -> bf c h w", h=height, w=width)


def sequences_for(x: torch.Tensor, frames: int):
    """Packed on an NVIDIA GPU, where it was measured to pay; strided elsewhere and while torch.compile traces the
    call. Packing multiplies the attention scores by the sequences a row holds: a kernel without masked tiles (as
    Apple's MPS builds the whole score tensor, and ROCm's may fall back to PyTorch's math path) pays for them all."""
    if torch.compiler.is_compiling() or x.device.type != "cuda" or torch.version.hip is not None:
        return StridedSequences(x, frames)
    return PackedSequences(x, frames)
