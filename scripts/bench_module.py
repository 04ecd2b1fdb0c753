"""The benchmark's one-module section: our motion module against the textbook PyTorch way of writing the same
math, on the same weights, outside any UNet."""
import statistics
import time

import torch


def timed(fn, repeats=1):
    """Mean seconds of `fn` over `repeats` calls."""
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def module_micro(rounds, size=64, frames=16, channels=320):
    """One motion module (ours) vs a plain PyTorch module of the same math, same weights; fp16 on a GPU."""
    from animatediff.motion_module.layers import MotionModule
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.float16) if cuda else ("cpu", torch.float32)
    ours = MotionModule(channels, 32).eval().to(device, dtype)
    plain = PlainMotionModule(ours)
    x = torch.randn(frames, channels, size, size, device=device, dtype=dtype)

    def run(module):
        module(x, frames)
        if cuda:
            torch.cuda.synchronize()
    with torch.inference_mode():
        torch.testing.assert_close(ours(x, frames), plain(x, frames), atol=1e-2 if cuda else 1e-4, rtol=1e-3)
        a, b = [], []
        for _ in range(rounds):
            a.append(timed(lambda: run(ours), repeats=10 if cuda else 1))
            b.append(timed(lambda: run(plain), repeats=10 if cuda else 1))
    return {"ours_s": statistics.median(a), "plain_s": statistics.median(b),
            "ratio": statistics.median(a) / statistics.median(b)}


class PlainMotionModule(torch.nn.Module):
    """The textbook way to write the module: permute + contiguous copies, SDPA, explicit head split."""

    def __init__(self, ours):
        super().__init__()
        self.t = ours.temporal_transformer

    def forward(self, x, frames):
        t = self.t
        bf, c, h, w = x.shape
        hidden = t.norm(x).permute(0, 2, 3, 1).contiguous().view(bf, h * w, c)
        hidden = t.proj_in(hidden)
        block = t.transformer_blocks[0]
        for attn, norm in zip(block.attention_blocks, block.norms):
            n = norm(hidden).view(bf // frames, frames, h * w, c).permute(0, 2, 1, 3).contiguous()
            n = n.view(-1, frames, c) + attn.pos_encoder.pe[:, :frames]
            q, k, v = (lin(n).view(n.shape[0], frames, 8, c // 8).transpose(1, 2) for lin in (attn.to_q, attn.to_k, attn.to_v))
            o = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n.shape[0], frames, c)
            o = attn.to_out[0](o).view(bf // frames, h * w, frames, c).permute(0, 2, 1, 3).contiguous()
            hidden = hidden + o.view(bf, h * w, c)
        value, gate = block.ff.net[0].proj(block.ff_norm(hidden)).chunk(2, dim=-1)
        hidden = hidden + block.ff.net[2](value * torch.nn.functional.gelu(gate))
        hidden = t.proj_out(hidden)
        return hidden.view(bf, h, w, c).permute(0, 3, 1, 2) + x
