"""The temporal transformer of AnimateDiff ("VanillaTemporalModule"), with the original math.

Layer names match the released checkpoints, so a state dict loads as it is. `ops` supplies the Linear /
GroupNorm / LayerNorm classes (torch.nn here; comfy.ops inside ComfyUI, for weight casting, low-VRAM
loading and interrupt checks) and `attention(q, k, v, heads, **kwargs)` the kernel (SDPA here;
ComfyUI's attention_pytorch inside ComfyUI, which honours users' attention overrides).
"""
import functools
import math
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn

from .sequences import StridedSequences, sequences_for

TORCH_OPS = SimpleNamespace(Linear=nn.Linear, GroupNorm=nn.GroupNorm, LayerNorm=nn.LayerNorm, Conv2d=nn.Conv2d)


def sdpa_attention(q, k, v, heads, mask=None, **kwargs):
    """Attention on (batch, heads, tokens, dim) tensors, the layout ComfyUI's kernels take with skip_reshape."""
    return nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def sinusoidal_positions(length: int, channels: int) -> torch.Tensor:
    return _sinusoid(length, channels).clone()


@functools.lru_cache(maxsize=16)  # a model has 20+ modules but only 3–4 distinct channel counts
def _sinusoid(length: int, channels: int) -> torch.Tensor:
    """pe[0, p, 2i] = sin(p·d_i), pe[0, p, 2i+1] = cos(p·d_i), d_i = exp(2i·(−ln 10000 / C))."""
    # On the CPU explicitly: a model built under torch.device("meta") still gets a real table, cheaply.
    position = torch.arange(length, dtype=torch.float32, device="cpu").unsqueeze(1)
    div_term = torch.exp(torch.arange(0, channels, 2, dtype=torch.float32, device="cpu") * (-math.log(10000.0) / channels))
    pe = torch.zeros(1, length, channels, device="cpu")
    pe[0, :, 0::2] = torch.sin(position * div_term)
    pe[0, :, 1::2] = torch.cos(position * div_term)
    return pe


class PositionalEncoding(nn.Module):
    def __init__(self, channels: int, max_len: int):
        super().__init__()
        self.register_buffer("pe", sinusoidal_positions(max_len, channels))


# CUDA's attention kernels put the heads on a grid axis of at most 65535 blocks; the strided layout has
# h·w·8 of them (73,728 at 768×768), so larger calls go in slices of heads.
KERNEL_HEADS = 65535


def attend(attention, q, k, v, mask, transformer_options) -> torch.Tensor:
    """b h L e, from (b, h, L, e) queries, keys and values."""
    out = attention(q, k, v, q.shape[1], mask=mask, skip_reshape=True, skip_output_reshape=True,
                    transformer_options=transformer_options)
    # ComfyUI's attention_pytorch gives b L (h e) when it splits a large batch
    return out if out.ndim == 4 else out.view(out.shape[0], out.shape[1], q.shape[1], -1).transpose(1, 2)


class TemporalSelfAttention(nn.Module):
    """Self-attention along the frame axis; the positional table is added to its input."""

    def __init__(self, channels: int, max_len: int, ops):
        super().__init__()
        self.to_q = ops.Linear(channels, channels, bias=False)
        self.to_k = ops.Linear(channels, channels, bias=False)
        self.to_v = ops.Linear(channels, channels, bias=False)
        self.to_out = nn.ModuleList([ops.Linear(channels, channels), nn.Dropout(0.0)])
        self.pos_encoder = PositionalEncoding(channels, max_len)

    def forward(self, x, sequences, attention, motion_scale: float, transformer_options: dict, pose=None):
        """`pose`: CameraCtrl's PoseMerge, which folds the camera into the tokens after the positions."""
        table = self.pos_encoder.pe[:, :sequences.frames].to(device=x.device, dtype=x.dtype)
        x = sequences.add_positions(x, table)
        if pose is not None:
            x = pose(x)
        q = self.to_q(x)
        if motion_scale != 1.0:
            # sharpens (> 1) or flattens (< 1) the softmax over frames
            q = q * motion_scale
        q, k, v = (sequences.split_heads(t) for t in (q, self.to_k(x), self.to_v(x)))
        parts = [attend(attention, *(t[:, i:i + KERNEL_HEADS] for t in (q, k, v)), sequences.mask,
                        transformer_options) for i in range(0, q.shape[1], KERNEL_HEADS)]
        out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return self.to_out[0](out.transpose(1, 2).reshape(x.shape))  # b L h e, the tokens' order


class GEGLUFeedForward(nn.Module):
    def __init__(self, channels: int, ops):
        super().__init__()
        self.net = nn.ModuleList([
            SimpleProj(channels, channels * 8, ops), nn.Dropout(0.0), ops.Linear(channels * 4, channels)
        ])

    def forward(self, x):
        value, gate = self.net[0].proj(x).chunk(2, dim=-1)
        return self.net[2](value * nn.functional.gelu(gate))


class SimpleProj(nn.Module):
    """Holds the GEGLU projection under the checkpoint's name `net.0.proj`."""

    def __init__(self, in_features: int, out_features: int, ops):
        super().__init__()
        self.proj = ops.Linear(in_features, out_features)


class TemporalTransformerBlock(nn.Module):
    def __init__(self, channels: int, max_len: int, ops, attention_blocks: int):
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [TemporalSelfAttention(channels, max_len, ops) for _ in range(attention_blocks)])
        self.norms = nn.ModuleList([ops.LayerNorm(channels) for _ in range(attention_blocks)])
        self.ff = GEGLUFeedForward(channels, ops)
        self.ff_norm = ops.LayerNorm(channels)

    def forward(self, x, sequences, attention, motion_scale, transformer_options, pose=None):
        for index, (attn, norm) in enumerate(zip(self.attention_blocks, self.norms)):
            # CameraCtrl conditions the first attention only
            x = x + attn(norm(x), sequences, attention, motion_scale, transformer_options, pose if index == 0 else None)
        return x + self.ff(self.ff_norm(x))


@dataclass(frozen=True, eq=False)  # holds tensors: == has no single truth value
class CameraInput:
    """What CameraCtrl gives one motion module: its qkv_merge layer, the pose feature of the module's UNet level
    ((b f) c h w, as the module's input), and the strength."""
    merge: nn.Module
    feature: torch.Tensor
    strength: float


@dataclass(frozen=True, eq=False)  # holds tensors: == has no single truth value
class PoseMerge:
    """n' = n + s·qkv_merge(n + p) on the positioned tokens n, p the pose feature in the same token order."""
    merge: nn.Module
    tokens: torch.Tensor
    strength: float

    def __call__(self, n):
        return n + self.strength * self.merge(n + self.tokens)


class TemporalTransformer(nn.Module):
    def __init__(self, channels: int, max_len: int, ops, attention_blocks: int):
        super().__init__()
        self.norm = ops.GroupNorm(32, channels, eps=1e-6, affine=True)
        self.proj_in = ops.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(channels, max_len, ops, attention_blocks)])
        self.proj_out = ops.Linear(channels, channels)

    def forward(self, x, frames, attention, motion_scale, transformer_options, pack_sequences, camera=None):
        # packed rows stay apart only where the kernel applies their mask
        sequences = sequences_for(x, frames) if pack_sequences else StridedSequences(x, frames)
        h = self.norm(x)  # on (b f) c h w, so each frame is normalised on its own, as in the original
        h = self.proj_in(sequences.tokens(h))
        pose = None
        if camera is not None:
            pose = PoseMerge(camera.merge, sequences.tokens(camera.feature.to(h)), camera.strength)
        for block in self.transformer_blocks:
            h = block(h, sequences, attention, motion_scale, transformer_options, pose)
        return sequences.add_to(x, self.proj_out(h))


class MotionModule(nn.Module):
    """One motion module, placed after a block of the image UNet; input and output are (b f) c h w.

    Motion modules attend twice per block ("Temporal_Self" twice); SparseCtrl's encoder modules once."""

    def __init__(self, channels: int, max_len: int, ops=TORCH_OPS, attention_blocks: int = 2):
        super().__init__()
        self.channels = channels
        self.temporal_transformer = TemporalTransformer(channels, max_len, ops, attention_blocks)

    @property
    def max_frames(self) -> int:
        return self.temporal_transformer.transformer_blocks[0].attention_blocks[0].pos_encoder.pe.shape[1]

    def forward(self, x, frames: int, attention=sdpa_attention, motion_scale: float = 1.0,
                transformer_options: dict | None = None, pack_sequences: bool = True,
                camera: CameraInput | None = None):
        """`pack_sequences=False` when `attention` may ignore masks: then every row holds one sequence. `camera`:
        CameraCtrl's input for this module."""
        return self.temporal_transformer(x, frames, attention, motion_scale, transformer_options or {},
                                         pack_sequences, camera)
