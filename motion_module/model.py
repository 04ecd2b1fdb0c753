"""A whole motion model: the motion modules of every UNet block, under the checkpoints' own names."""
import functools
from dataclasses import dataclass

import torch
from torch import nn

from .image_encoder import ImageEncoder
from .layers import TORCH_OPS, MotionModule


class MotionVersion:
    V1 = "v1"   # mm_sd_v14 / mm_sd_v15: 24 positions; the UNet's resnets normalise jointly over frames
    V2 = "v2"   # mm_sd_v15_v2: 32 positions and a mid-block module
    V3 = "v3"   # v3_sd15_mm: 32 positions, no mid block
    ANIMATELCM = "AnimateLCM"  # AnimateLCM_sd15_t2v: v2's layout, its 64-position tables left out of the file
    ANIMATELCM_I2V = "AnimateLCM-I2V"  # AnimateLCM_sd15_i2v: AnimateLCM's layout plus an image encoder
    PIA = "PIA"  # pia.ckpt: v3's layout plus a 9-channel conv_in; the resnets normalise jointly over frames, as v1
    SDXL = "SDXL"  # mm_sdxl_v10_beta: v3's layout on SDXL's 3 UNet levels (320, 640, 1280)
    HOTSHOTXL = "HotshotXL"  # Hotshot-XL's temporal layers: SDXL's layout, 24 positions; joint norms, as v1
    LCM = (ANIMATELCM, ANIMATELCM_I2V)


class Family:
    """The image models a motion module animates, told by its UNet's levels (FORMATS.md §1)."""
    SD15 = "SD1.5"  # 4 levels
    SDXL = "SDXL"   # 3 levels
    TEXT_WIDTHS = {SD15: 768, SDXL: 2048}  # what the UNet's cross-attention reads: CLIP-L's; CLIP-L and CLIP-G's

    @classmethod
    def reading_text(cls, width: int) -> str | None:
        """The family whose UNet reads text `width` wide, if any."""
        return next((family for family, own in cls.TEXT_WIDTHS.items() if own == width), None)


TABLE_SUFFIX = ".pos_encoder.pe"
PIA_INPUT_CHANNELS = 9  # the noisy latent's 4, the affinity's 1, the image latent's 4


@dataclass(frozen=True)
class MotionModelSpec:
    """What a motion-module file holds, as read from its keys (see formats.detect_spec)."""
    version: str                      # "v1", "v2", "v3", "AnimateLCM", "AnimateLCM-I2V", "PIA", "SDXL",
                                      # "HotshotXL" (MotionVersion), "SparseCtrl"
    down_channels: tuple[int, ...]    # one entry per down block, e.g. (320, 640, 1280, 1280)
    up_channels: tuple[int, ...]      # one entry per up block, e.g. (1280, 1280, 640, 320)
    mid_channels: int | None          # channels of the mid-block module, None when there is none
    max_frames: int                   # rows of the positional table (24, 32, or AnimateLCM's 64)
    modules_per_down_block: int = 2
    modules_per_up_block: int = 3
    attention_blocks: int = 2         # per module; SparseCtrl's encoder modules have one
    image_encoder: bool = False       # AnimateLCM-I2V's, under `img_encoder.`
    input_conv: bool = False          # PIA's 9-channel `conv_in`: latent, affinity, image latent

    @property
    def kind(self) -> str:
        """For messages: "AnimateDiff v2", "AnimateLCM", "PIA"."""
        named = self.version.startswith(("Animate", MotionVersion.HOTSHOTXL)) or self.input_conv
        return self.version if named else f"AnimateDiff {self.version}"

    @property
    def described(self) -> str:
        """For messages: "an AnimateDiff v2 motion module", "a PIA motion module"."""
        return f"{'an' if self.kind[0] in 'AEIOU' else 'a'} {self.kind} motion module"

    @property
    def base(self) -> str:
        """The image model family it animates (Family)."""
        return Family.SDXL if len(self.down_channels) == 3 else Family.SD15

    @property
    def normalises_over_frames(self) -> bool:
        """v1, PIA and HotshotXL were trained with the UNet's resnets normalising over all frames of a video."""
        return self.version in (MotionVersion.V1, MotionVersion.HOTSHOTXL) or self.input_conv

    @property
    def module_count(self) -> int:
        return (len(self.down_channels) * self.modules_per_down_block
                + len(self.up_channels) * self.modules_per_up_block + (self.mid_channels is not None))


@functools.lru_cache(maxsize=16)  # a model has 3-4 distinct channel counts
def module_shapes(channels: int, max_len: int, attention_blocks: int) -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {k: v.shape for k, v in MotionModule(channels, max_len, attention_blocks=attention_blocks)
                .state_dict().items()}


class MotionBlock(nn.Module):
    def __init__(self, channels: int, count: int, max_len: int, ops, attention_blocks: int):
        super().__init__()
        self.motion_modules = nn.ModuleList(
            [MotionModule(channels, max_len, ops, attention_blocks) for _ in range(count)])


class MotionModel(nn.Module):
    def __init__(self, spec: MotionModelSpec, ops=TORCH_OPS):
        super().__init__()
        self.spec = spec
        L, A = spec.max_frames, spec.attention_blocks
        self.down_blocks = nn.ModuleList(
            [MotionBlock(c, spec.modules_per_down_block, L, ops, A) for c in spec.down_channels])
        self.up_blocks = nn.ModuleList(
            [MotionBlock(c, spec.modules_per_up_block, L, ops, A) for c in spec.up_channels])
        self.mid_block = MotionBlock(spec.mid_channels, 1, L, ops, A) if spec.mid_channels else None
        self.img_encoder = ImageEncoder(spec.down_channels, ops) if spec.image_encoder else None
        self.conv_in = ops.Conv2d(PIA_INPUT_CHANNELS, spec.down_channels[0], 3, padding=1) if spec.input_conv else None

    @classmethod
    def without_weights(cls, spec: MotionModelSpec, ops=TORCH_OPS) -> "MotionModel":
        """The structure only, on the meta device: nothing allocated or initialised. Its shapes are the layout
        a file must have; take_weights then fills it."""
        with torch.device("meta"):
            return cls(spec, ops)

    def shapes(self) -> dict[str, torch.Size]:
        """Every weight's name and shape: the layout a file must have.

        Read off plain torch layers, not this model's own: layers may create their weights only when loaded
        (ComfyUI's ops do under dynamic VRAM), and until then have none to read."""
        spec = self.spec
        shapes = {f"{name}.{key}": shape for name, module in self.named_modules() if isinstance(module, MotionModule)
                  for key, shape in module_shapes(module.channels, module.max_frames, spec.attention_blocks).items()}
        if spec.image_encoder:
            with torch.device("meta"):
                encoder = ImageEncoder(spec.down_channels)
            shapes |= {f"img_encoder.{key}": value.shape for key, value in encoder.state_dict().items()}
        if spec.input_conv:
            shapes |= {"conv_in.weight": torch.Size((spec.down_channels[0], PIA_INPUT_CHANNELS, 3, 3)),
                       "conv_in.bias": torch.Size((spec.down_channels[0],))}
        return shapes

    def take_weights(self, state_dict: dict) -> "MotionModel":
        """The given tensors become the weights as they are, so no weight is allocated twice. Positional tables
        the file leaves out (AnimateLCM's) stay the built ones, the formula's, in the weights' dtype."""
        dtype = next(iter(state_dict.values())).dtype
        tables = {k: v.to(dtype) for k, v in self.state_dict().items()
                  if k.endswith(TABLE_SUFFIX) and k not in state_dict}
        self.load_state_dict(state_dict | tables, strict=True, assign=True)
        return self.eval().requires_grad_(False)

    @classmethod
    def from_state_dict(cls, spec: MotionModelSpec, state_dict: dict, ops=TORCH_OPS) -> "MotionModel":
        return cls.without_weights(spec, ops).take_weights(state_dict)
