"""CameraCtrl (He et al. 2024) for AnimateDiff v3: camera control for a stock v3 motion module.

A pose encoder turns each frame's camera, as Plücker rays at pixel size, into one feature map per UNet level;
in the first temporal attention of every motion module a linear layer, `qkv_merge`, folds the level's feature
into the positioned tokens n before the queries, keys and values: n' = n + s·qkv_merge(n + p).

Files: `CameraCtrl_pruned.safetensors` is one flat dictionary: the encoder's weights (`encoder_…`) and the merge
layers under their motion modules' names (`down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.
0.attention_blocks.0.processor.qkv_merge.weight`); the original `CameraCtrl.ckpt` holds the same two parts apart
(formats.read_state_dict joins them).
"""
import torch
from torch import nn

from ..errors import ModelFileError
from .file_kinds import FileKind, require_kind
from .formats import check_layout, checked_weights, read_state_dict
from .image_encoder import EncoderBlock
from .layers import TORCH_OPS, TemporalTransformerBlock
from .sequences import sequences_for

POSE_FRAMES = 16            # the encoder's positional tables: it takes at most 16 frames at a time
PLUCKER_CHANNELS = 6        # a ray's moment o × d and direction d
PIXELS_PER_LATENT = 8       # the encoder unshuffles 8×8 pixels into channels, to the latent's size
LEVELS = 4
MERGE_SUFFIX = ".temporal_transformer.transformer_blocks.0.attention_blocks.0.processor.qkv_merge."


def merge_places(channels: tuple[int, ...]) -> dict[str, tuple[int, int]]:
    """The motion module each merge layer belongs to -> (its channels, the encoder level whose feature it takes):
    down block i takes level i, up block i level 3 − i (v3: two modules per down block, three per up block)."""
    down = {f"down_blocks.{i}.motion_modules.{j}": (c, i) for i, c in enumerate(channels) for j in range(2)}
    up = {f"up_blocks.{i}.motion_modules.{j}": (c, LEVELS - 1 - i) for i, c in enumerate(reversed(channels))
          for j in range(3)}
    return down | up


def _layer_name(module: str) -> str:
    return module.replace(".", "_")  # a ModuleDict key holds no dots


class PoseEncoder(nn.Module):
    """Per level, two residual blocks (the first of a later level halving the size) each followed by a temporal
    transformer block with one attention. Attribute names are the file's."""

    def __init__(self, channels: tuple[int, ...], ops):
        super().__init__()
        self.channels = channels
        self.encoder_conv_in = ops.Conv2d(PLUCKER_CHANNELS * PIXELS_PER_LATENT ** 2, channels[0], 3, padding=1)
        self.encoder_down_conv_blocks = nn.ModuleList(
            nn.ModuleList(EncoderBlock(channels[max(i - 1, 0)] if j == 0 else c, c, i > 0 and j == 0, ops)
                          for j in range(2)) for i, c in enumerate(channels))
        self.encoder_down_attention_blocks = nn.ModuleList(
            nn.ModuleList(TemporalTransformerBlock(c, POSE_FRAMES, ops, attention_blocks=1) for _ in range(2))
            for c in channels)

    def forward(self, plucker: torch.Tensor, frames: int, attention) -> list[torch.Tensor]:
        """plucker: (b f) 6 H W at pixel size, frames ≤ 16 per video; returns each level's (b f) C_i h_i w_i, level
        0 at the latent's size. H and W should be multiples of 64: the original's average pooling floors odd sizes,
        where the UNet's strided convolutions round them up (patching/camera_ctrl.py pads the rays)."""
        x = self.encoder_conv_in(nn.functional.pixel_unshuffle(plucker, PIXELS_PER_LATENT))
        features = []
        for resnets, transformers in zip(self.encoder_down_conv_blocks, self.encoder_down_attention_blocks):
            for resnet, transformer in zip(resnets, transformers):
                x = resnet(x)
                sequences = sequences_for(x, frames)
                height, width = x.shape[-2:]
                tokens = transformer(sequences.tokens(x), sequences, attention, 1.0, {})
                x = sequences.images(tokens, height, width)
            features.append(x)
        return features


class CameraCtrl(nn.Module):
    def __init__(self, channels: tuple[int, ...], ops=TORCH_OPS):
        super().__init__()
        self.pose_encoder = PoseEncoder(channels, ops)
        self.places = merge_places(channels)
        self.qkv_merge = nn.ModuleDict({_layer_name(m): ops.Linear(c, c) for m, (c, _) in self.places.items()})

    @property
    def channels(self) -> tuple[int, ...]:
        return self.pose_encoder.channels

    def merge_for(self, module: str) -> nn.Module:
        """The merge layer of a motion module of `places` (by its name in the motion model)."""
        return self.qkv_merge[_layer_name(module)]


def load_camera_ctrl(path, ops=TORCH_OPS, dtype: torch.dtype | None = None) -> CameraCtrl:
    """Reads, checks and builds a CameraCtrl file; weights are cast to `dtype` when given."""
    original = read_state_dict(path)
    channels = _channels(original, path)
    with torch.device("meta"):
        model = CameraCtrl(channels, ops)
        plain = CameraCtrl(channels)  # plain layers have their weights; ComfyUI's may make them only when loaded
    ours = {file_key(k, model): k for k in plain.state_dict()}
    check_layout("a CameraCtrl model", {f: plain.state_dict()[k].shape for f, k in ours.items()}, original, path)
    weights = checked_weights(original, dtype, path)
    model.load_state_dict({ours[k]: v for k, v in weights.items()}, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def file_key(key: str, model: CameraCtrl) -> str:
    """Our name of a weight -> the file's."""
    if key.startswith("pose_encoder."):
        return key.removeprefix("pose_encoder.")
    layer, param = key.removeprefix("qkv_merge.").rsplit(".", 1)
    module = next(m for m in model.places if _layer_name(m) == layer)  # the one a ModuleDict key stands for
    return module + MERGE_SUFFIX + param


def _channels(state_dict: dict[str, torch.Tensor], path) -> tuple[int, ...]:
    """Each level's channels, read off its first residual block."""
    parts = {"its pose encoder (`encoder_conv_in`, …)": any(k.startswith("encoder_conv_in.") for k in state_dict),
             "its merge layers (`…qkv_merge`)": any("qkv_merge." in k for k in state_dict)}
    require_kind(state_dict, path, FileKind.CAMERACTRL)
    if not all(parts.values()):
        missing = " and ".join(part for part, present in parts.items() if not present)
        raise ModelFileError(path, f"is not a CameraCtrl model: it lacks {missing}.",
                             "CameraCtrl's file is CameraCtrl_pruned.safetensors (or the original CameraCtrl.ckpt).")
    channels = []
    for level in range(LEVELS):
        weight = state_dict.get(f"encoder_down_conv_blocks.{level}.0.block1.weight")
        if weight is None or weight.ndim != 4:
            raise ModelFileError(path, f"lacks the pose encoder's level {level} "
                                 f"(`encoder_down_conv_blocks.{level}.0.block1.weight`).",
                                 "The file may be damaged, or made for another model than SD1.5.")
        channels.append(weight.shape[0])
    if any(c % 8 for c in channels):
        raise ModelFileError(path, f"has pose-encoder levels of {channels} channels, not multiples of the 8 "
                             "attention heads.", "The file may be damaged.")
    return tuple(channels)
