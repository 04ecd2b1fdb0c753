"""Training a MotionLoRA: the paper's third stage, in pure torch (FORMATS.md §3, §4).

The LoRA enters the forward pass through temporary forward hooks on the motion module's temporal-attention
projections (`out + up(down(x))`), so no weight of the motion module is edited and autograd reaches only
the LoRA's own tensors. The objective is the MSE of paper Eq. 7 under the linear beta schedule the motion
modules were trained with; like the original train.py, the target is ε for an ε-prediction model and
v = sqrt(ᾱ_t)·ε − sqrt(1−ᾱ_t)·x0 for a v-prediction one. The UNet is any callable `model(x_t, t)` (the
ComfyUI glue is in patching/training.py), so this file runs and is tested without ComfyUI.
"""
import contextlib
import math

import torch
from PIL import Image, ImageDraw
from torch import nn

from ..errors import AnimateDiffError
from ..motion_module.layers import TemporalSelfAttention
from .motion_lora import target_key

BETA_START, BETA_END, TIMESTEPS = 0.00085, 0.012, 1000
PROJECTIONS = ("to_q", "to_k", "to_v", "to_out")
EPSILON, V_PREDICTION = "epsilon", "v_prediction"  # what the UNet predicts (diffusers' prediction_type names)


def alphas_cumprod() -> torch.Tensor:
    """ᾱ_t for t = 0..999 of betas = linspace(0.00085, 0.012, 1000) (diffusers "linear", LDM "sqrt_linear")."""
    betas = torch.linspace(BETA_START, BETA_END, TIMESTEPS, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def temporal_attention_layers(motion_model: nn.Module) -> dict[str, nn.Module]:
    """Released MotionLoRA layer name (`<attention>.processor.to_q`) -> the Linear it changes, for every
    temporal self-attention block of the motion model (mid block included when there is one)."""
    layers = {}
    for name, module in motion_model.named_modules():
        if isinstance(module, TemporalSelfAttention):
            for projection in PROJECTIONS:
                layer = f"{name}.processor.{projection}"
                # target_key is the loader's own mapping (`to_out` -> `to_out.0.weight`): saving and loading agree
                layers[layer] = motion_model.get_submodule(target_key(layer).removesuffix(".weight"))
    return layers


class MotionLoRAWeights(nn.Module):
    """down (r, in) and up (out, r) per layer, fp32. up starts at zero (as in diffusers' LoRA layers, which
    the original training used), so step 0 is exactly the untouched motion module."""

    def __init__(self, layers: dict[str, nn.Module], rank: int, generator: torch.Generator | None = None):
        super().__init__()
        self.layers = layers
        self.names = list(layers)
        self.down = nn.ParameterList()
        self.up = nn.ParameterList()
        for linear in layers.values():
            down = torch.randn(rank, linear.in_features, generator=generator) / rank
            self.down.append(nn.Parameter(down.to(linear.weight.device)))
            self.up.append(nn.Parameter(torch.zeros(linear.out_features, rank, device=linear.weight.device)))

    @contextlib.contextmanager
    def attached(self):
        """While inside, each target Linear returns W·x (+ b) + up·down·x; the hooks are gone afterwards."""
        handles = []
        try:
            for linear, down, up in zip(self.layers.values(), self.down, self.up):
                handles.append(linear.register_forward_hook(_lora_hook(down, up)))
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def released_state_dict(self, dtype=torch.float32) -> dict[str, torch.Tensor]:
        """The released key layout: `<layer>_lora.down.weight` (r, in), `<layer>_lora.up.weight` (out, r)."""
        state = {}
        for name, down, up in zip(self.names, self.down, self.up):
            state[f"{name}_lora.down.weight"] = down.detach().to("cpu", dtype).contiguous()
            state[f"{name}_lora.up.weight"] = up.detach().to("cpu", dtype).contiguous()
        return state


def _lora_hook(down: nn.Parameter, up: nn.Parameter):
    def hook(module, args, output):
        x = args[0]
        delta = nn.functional.linear(nn.functional.linear(x.to(down.dtype), down), up)
        return output + delta.to(output.dtype)
    return hook


def diffusion_loss(model, x0: torch.Tensor, t: int, noise: torch.Tensor, alphas: torch.Tensor,
                   prediction: str = EPSILON):
    """Paper Eq. 7 for one clip x0 of shape (f, c, h, w): ‖target − model(sqrt(ᾱ_t)·x0 + sqrt(1−ᾱ_t)·ε, t)‖²,
    target ε, or v = sqrt(ᾱ_t)·ε − sqrt(1−ᾱ_t)·x0 for a v-prediction model (diffusers' get_velocity)."""
    a = alphas[t].item()
    x_t = math.sqrt(a) * x0 + math.sqrt(1.0 - a) * noise
    target = noise if prediction == EPSILON else math.sqrt(a) * noise - math.sqrt(1.0 - a) * x0
    timesteps = torch.full((x0.shape[0],), t, device=x0.device, dtype=torch.long)
    return nn.functional.mse_loss(model(x_t, timesteps).float(), target.float())


def draws(clips: list[torch.Tensor], steps: int, seed: int):
    """(clip, t, noise) of every step: a clip at random, t uniform in [0, 1000), one noise draw per clip."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        clip = clips[int(torch.randint(len(clips), (1,), generator=generator))]
        t = int(torch.randint(TIMESTEPS, (1,), generator=generator))
        yield clip, t, torch.randn(clip.shape, generator=generator).to(clip)


def train(model, clips: list[torch.Tensor], weights: MotionLoRAWeights, steps: int, learning_rate: float,
          seed: int, on_step=None, alphas: torch.Tensor | None = None, prediction: str = EPSILON) -> list[float]:
    """AdamW (β 0.9/0.999, wd 1e-2), grad-norm clip 1.0; one clip per step, t uniform in [0, 1000).

    `clips` are model-space latents (f, c, h, w); `alphas` the ᾱ_t of the model (default: the linear
    schedule); `on_step(step, loss)` runs after every step (progress, interruption). Returns the loss of
    every step. The hooks must be attached by the caller."""
    alphas = alphas_cumprod() if alphas is None else alphas
    optimizer = torch.optim.AdamW(weights.parameters(), lr=learning_rate, betas=(0.9, 0.999), weight_decay=1e-2)
    losses = []
    for step, (clip, t, noise) in enumerate(draws(clips, steps, seed)):
        loss = diffusion_loss(model, clip, t, noise, alphas, prediction)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(weights.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise AnimateDiffError(f"Training diverged at step {step + 1} of {steps}: the loss became "
                                   f"{losses[-1]}, so nothing was saved. Lower learning_rate (the paper uses 1e-4).")
        if on_step is not None:
            on_step(step, losses[-1])
    return losses


def fit_square(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """(n, H, W, 3) -> (n, resolution, resolution, 3): centre crop to a square, then bilinear resize."""
    _, height, width, _ = images.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = images[:, top:top + side, left:left + side].movedim(-1, 1)
    if side != resolution:
        square = nn.functional.interpolate(square, size=(resolution, resolution), mode="bilinear",
                                           align_corners=False, antialias=side > resolution)
    return square.movedim(1, -1).clamp(0, 1)


def split_clips(images: torch.Tensor, frames: int) -> list[torch.Tensor]:
    """Consecutive runs of `frames` images; a last, shorter run is dropped (it is another clip's start)."""
    count = images.shape[0] // frames
    return [images[i * frames:(i + 1) * frames] for i in range(count)]


def smoothed(values: list[float], window: int) -> list[float]:
    """Trailing mean over `window` steps: one step's loss depends mostly on its random t."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def loss_curve_image(losses: list[float], width: int = 512, height: int = 256) -> torch.Tensor:
    """The loss per step (grey) and its moving average (blue) on a white canvas, as a (1, H, W, 3) IMAGE."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = 8, 22, width - 8, height - 8
    draw.rectangle((left, top, right, bottom), outline=(160, 160, 160))
    if losses:
        low, high = min(losses), max(losses)
        span = (high - low) or 1.0

        def point(i, v):
            x = left + (right - left) * (i / max(1, len(losses) - 1))
            return x, bottom - (bottom - top) * (v - low) / span
        average = smoothed(losses, max(1, len(losses) // 20))
        draw.line([point(i, v) for i, v in enumerate(losses)], fill=(190, 190, 190))
        draw.line([point(i, v) for i, v in enumerate(average)], fill=(30, 90, 200), width=2)
        draw.text((left, 4), f"loss {average[0]:.4f} -> {average[-1]:.4f} over {len(losses)} steps "
                             f"(range {low:.4f}..{high:.4f})", fill=(0, 0, 0))
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).reshape(height, width, 3)
    return (pixels.float() / 255.0).unsqueeze(0)
