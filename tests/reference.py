"""Independent re-implementations: the original AnimateDiff motion-module math (FORMATS.md §1), CameraCtrl's pose
encoder and qkv merge, and FreeInit's noise re-initialisation.

Plain functions over a state dict or arrays: no nn.Module, no einops, nothing shared with the code under test.
"""
import functools
import math

import numpy as np
import torch
import torch.nn.functional as F


ANIMATELCM_TABLE_LENGTH = 64  # AnimateLCM's files hold no table; its code builds this one from the formula


@functools.lru_cache(maxsize=8)
def sinusoidal_table(length, channels):
    table = torch.zeros(1, length, channels)
    for p in range(length):
        for i in range(channels // 2):
            d = math.exp(2 * i * (-math.log(10000.0) / channels))
            table[0, p, 2 * i] = math.sin(p * d)
            table[0, p, 2 * i + 1] = math.cos(p * d)
    return table


def _linear(sd, name, x):
    return F.linear(x, sd[name + ".weight"], sd.get(name + ".bias"))


def _attention(sd, prefix, x, frames, pose=None):
    """x: (B·F, D, C) tokens; self-attention over frames for each (video, position), 8 heads.
    pose: CameraCtrl's (merge weight, merge bias, feature tokens (B·F, D, C), scale), merged into the tokens that
    q, k and v read: n + scale·merge(n + p), n the normed tokens with the table added."""
    bf, d, c = x.shape
    b = bf // frames
    seq = x.reshape(b, frames, d, c).permute(0, 2, 1, 3).reshape(b * d, frames, c)
    table = sd.get(prefix + ".pos_encoder.pe")
    table = sinusoidal_table(ANIMATELCM_TABLE_LENGTH, c) if table is None else table
    seq = seq + table[:, :frames]
    if pose is not None:
        weight, bias, feature, scale = pose
        feature = feature.reshape(b, frames, d, c).permute(0, 2, 1, 3).reshape(b * d, frames, c)
        seq = seq + scale * F.linear(seq + feature, weight, bias)
    q, k, v = (_linear(sd, f"{prefix}.to_{n}", seq) for n in "qkv")
    heads, hd = 8, c // 8
    split = lambda t: t.reshape(b * d, frames, heads, hd).transpose(1, 2)  # noqa: E731
    weights = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(hd), dim=-1)
    out = (weights @ split(v)).transpose(1, 2).reshape(b * d, frames, c)
    out = _linear(sd, prefix + ".to_out.0", out)
    return out.reshape(b, d, frames, c).permute(0, 2, 1, 3).reshape(bf, d, c)


def motion_module(sd, prefix, x, frames, pose=None):
    """One VanillaTemporalModule on x: (B·F, C, H, W), frames consecutive within each video.
    pose: CameraCtrl's (qkv_merge weight, qkv_merge bias, feature (B·F, C, H, W) like x, scale), for the first
    attention only."""
    p = prefix + ".temporal_transformer"
    bf, c, h, w = x.shape
    hidden = torch.stack([F.group_norm(frame[None], 32, sd[p + ".norm.weight"], sd[p + ".norm.bias"], 1e-6)[0]
                          for frame in x])  # per frame, one at a time
    hidden = hidden.permute(0, 2, 3, 1).reshape(bf, h * w, c)
    hidden = _linear(sd, p + ".proj_in", hidden)
    blk = p + ".transformer_blocks.0"
    attentions = sum(f"{blk}.attention_blocks.{a}.to_q.weight" in sd for a in range(2))  # SparseCtrl's: one
    for a in range(attentions):
        normed = F.layer_norm(hidden, (c,), sd[f"{blk}.norms.{a}.weight"], sd[f"{blk}.norms.{a}.bias"], 1e-5)
        merge = None
        if pose is not None and a == 0:
            weight, bias, feature, scale = pose
            merge = (weight, bias, feature.permute(0, 2, 3, 1).reshape(bf, h * w, c), scale)
        hidden = hidden + _attention(sd, f"{blk}.attention_blocks.{a}", normed, frames, merge)
    normed = F.layer_norm(hidden, (c,), sd[blk + ".ff_norm.weight"], sd[blk + ".ff_norm.bias"], 1e-5)
    value, gate = _linear(sd, blk + ".ff.net.0.proj", normed).chunk(2, dim=-1)
    hidden = hidden + _linear(sd, blk + ".ff.net.2", value * F.gelu(gate))
    hidden = _linear(sd, p + ".proj_out", hidden)
    return hidden.reshape(bf, h, w, c).permute(0, 3, 1, 2) + x


# CameraCtrl's pose encoder (its pose_adaptor.py CameraPoseEncoder): PixelUnshuffle(8) of the Plücker map, conv_in,
# then per level two residual blocks, each followed by a one-attention temporal transformer block; a level after
# the first starts with a plain 2×2 average pool.
def pixel_unshuffle(x, factor):
    """(N, C, H, W) -> (N, C·r², H/r, W/r); output channel c·r² + dy·r + dx holds x[:, c, r·Y + dy, r·X + dx]."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // factor, factor, w // factor, factor)  # n, c, Y, dy, X, dx
    return x.permute(0, 1, 3, 5, 2, 4).reshape(n, c * factor * factor, h // factor, w // factor)


def _pose_temporal_block(sd, prefix, x, frames):
    """The encoder's TemporalTransformerBlock on x: (F, C, H, W) of one video: attention over the frames at each
    position (norms.0, table, 8 heads, to_out), then the GEGLU feed-forward after ff_norm; no GroupNorm, no
    projections."""
    f, c, h, w = x.shape
    hidden = x.permute(0, 2, 3, 1).reshape(f, h * w, c)
    normed = F.layer_norm(hidden, (c,), sd[prefix + ".norms.0.weight"], sd[prefix + ".norms.0.bias"], 1e-5)
    hidden = hidden + _attention(sd, prefix + ".attention_blocks.0", normed, frames)
    normed = F.layer_norm(hidden, (c,), sd[prefix + ".ff_norm.weight"], sd[prefix + ".ff_norm.bias"], 1e-5)
    value, gate = _linear(sd, prefix + ".ff.net.0.proj", normed).chunk(2, dim=-1)
    hidden = hidden + _linear(sd, prefix + ".ff.net.2", value * F.gelu(gate))
    return hidden.reshape(f, h, w, c).permute(0, 3, 1, 2)


def cameractrl_pose_features(sd, plucker):
    """plucker: (F, 6, H, W) of one video, F ≤ 16, at pixel size; returns the four (F, C_i, H/8/2^i, W/8/2^i)."""
    def conv(name, x):
        weight = sd[name + ".weight"]
        return F.conv2d(x, weight, sd[name + ".bias"], padding=weight.shape[-1] // 2)

    frames = plucker.shape[0]
    x = conv("encoder_conv_in", pixel_unshuffle(plucker, 8))
    features = []
    for level in range(4):
        for j in range(2):
            block = f"encoder_down_conv_blocks.{level}.{j}"
            if level > 0 and j == 0:
                x = F.avg_pool2d(x, 2)
            if block + ".in_conv.weight" in sd:
                x = conv(block + ".in_conv", x)
            x = x + conv(block + ".block2", F.relu(conv(block + ".block1", x)))
            x = _pose_temporal_block(sd, f"encoder_down_attention_blocks.{level}.{j}", x, frames)
        features.append(x)
    return features


# FreeInit (Wu et al. 2023): its low-pass filters bin by bin, and its frequency mix with numpy's FFT.


def filter_by_loops(frames, height, width, kind, d_s, d_t, n=4):
    mask = np.zeros((frames, height, width))
    for t in range(frames):
        for h in range(height):
            for w in range(width):
                d2 = ((d_s / d_t) * (2 * t / frames - 1)) ** 2 + (2 * h / height - 1) ** 2 + (2 * w / width - 1) ** 2
                butterworth = 1 / (1 + (d2 / d_s ** 2) ** n)
                mask[t, h, w] = butterworth if kind == "butterworth" else math.exp(-d2 / (2 * d_s ** 2))
    return mask


def mix_by_numpy(low_from, high_from, mask):
    axes = (0, 2, 3)  # (frames, channels, height, width): a 3-D transform per channel
    spectrum = lambda x: np.fft.fftshift(np.fft.fftn(x, axes=axes), axes=axes)  # noqa: E731
    m = mask[:, None]
    mixed = spectrum(low_from) * m + spectrum(high_from) * (1 - m)
    return np.fft.ifftn(np.fft.ifftshift(mixed, axes=axes), axes=axes).real


# AnimateLCM-I2V's image encoder (its adapter.py): conv_in, the frame's sinusoidal code × motion_scale, then two
# residual blocks per level; a level after the first starts with a replicate-padded 2×2 average pool.
def animatelcm_i2v_features(sd, latent, frames, motion_scale):
    """latent: (1, 4, h, w); returns the four (frames, C, h_i, w_i) features, frame by frame."""
    def conv(name, x):
        weight = sd[f"img_encoder.{name}.weight"]
        return F.conv2d(x, weight, sd[f"img_encoder.{name}.bias"], padding=weight.shape[-1] // 2)

    out = [[] for _ in range(4)]
    for frame in range(frames):
        x = conv("conv_in", latent)
        code = sinusoidal_table(frames, x.shape[1])[0, frame]  # the same formula as the motion modules' table
        x = x + motion_scale * code[None, :, None, None]
        for index in range(8):
            if index in (2, 4, 6):
                h, w = x.shape[-2:]
                x = F.avg_pool2d(F.pad(x, (0, w % 2, 0, h % 2), mode="replicate"), 2)
            if f"img_encoder.body.{index}.in_conv.weight" in sd:
                x = conv(f"body.{index}.in_conv", x)
            x = x + conv(f"body.{index}.block2", F.relu(conv(f"body.{index}.block1", x)))
            if index % 2:
                out[index // 2].append(x)
    return [torch.cat(level) for level in out]
