"""Reading motion-module files and telling their kind and version from the keys alone (FORMATS.md §1)."""
import functools
import re
import zipfile
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from ..errors import ModelFileError
from .file_kinds import FileKind, require_kind
from .layers import TORCH_OPS
from .model import TABLE_SUFFIX, MotionModel, MotionModelSpec, MotionVersion


ANIMATELCM_FRAMES = 64  # the table AnimateLCM's code builds from the formula, the file holding none


MOTION_KEY = re.compile(r"^(down_blocks|up_blocks|mid_block)\.(?:(\d+)\.)?motion_modules\.(\d+)\.temporal_transformer\.")
PE_SUFFIX = ".attention_blocks.0.pos_encoder.pe"


SAFETENSORS_SUFFIXES = (".safetensors", ".sft")  # ComfyUI lists and reads both
# CameraCtrl's training saves its two parts apart (its pruned release has them in one flat dictionary)
CAMERACTRL_PARTS = ("pose_encoder_state_dict", "attention_processor_state_dict")


def is_safetensors(path: Path) -> bool:
    """Told by the content where it is either format (files get renamed), else by the name: a safetensors file
    starts with its header's length and then its JSON header; PyTorch's zip files and old pickles do not."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:  # the reader that follows says what is wrong
        head = b""
    if len(head) == 9 and head[8:] == b"{":
        return True
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return False  # PyTorch's zip file, or an old pickle (protocol 2-5)
    return Path(path).suffix.lower() in SAFETENSORS_SUFFIXES


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors or .ckpt file; a pickle that holds anything but tensors is refused."""
    path = Path(path)
    if is_safetensors(path):
        try:
            tensors = safetensors.torch.load_file(str(path))
        except (safetensors.SafetensorError, OSError, ValueError) as e:
            raise ModelFileError(path, f"is not a readable .safetensors file ({e}).",
                                 "Download it again; the file may be truncated.") from e
    else:
        is_zip = zipfile.is_zipfile(path)
        with open(path, "rb") as f:
            if f.read(4) == b"PK\x03\x04" and not is_zip:
                raise ModelFileError(path, "is truncated or damaged.", "Download it again.")
        try:
            if path.suffix.lower() in SAFETENSORS_SUFFIXES:  # renamed; torch.load would read it as its name says
                with open(path, "rb") as f:
                    loaded = torch.load(f, map_location="cpu", weights_only=True)
            else:
                loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
        except Exception as e:  # the safe unpickler fails on foreign bytes with KeyError, EOFError, ...
            reason = next((line for line in str(e).splitlines() if "unsupported" in line.lower()),
                          str(e).split("\n")[0])
            if "unsupported global" in reason.lower():  # the pickle names a function or class to call
                raise ModelFileError(path, "holds Python objects other than tensors, and loading it could run "
                                     "code, so it was refused.", "Use a .safetensors copy of this model.") from e
            raise ModelFileError(path, f"is not a PyTorch checkpoint that can be read safely ({type(e).__name__}: "
                                 f"{reason.strip()}); nothing in it was run.",
                                 "Download it again, or use the .safetensors version of the model.") from e
        # Lightning saves under "state_dict"; SparseCtrl's training under "controlnet"
        wrapped = next((key for key in ("state_dict", "controlnet") if isinstance(loaded, dict)
                        and isinstance(loaded.get(key), dict)), None)
        if wrapped:
            loaded = loaded[wrapped]
        if isinstance(loaded, dict) and all(isinstance(loaded.get(k), dict) for k in CAMERACTRL_PARTS):
            loaded = {k: v for part in CAMERACTRL_PARTS for k, v in loaded[part].items()}
        if not isinstance(loaded, dict):
            raise ModelFileError(path, f"holds a {type(loaded).__name__}, not a dictionary of weights.")
        # v3-era files carry a non-tensor `animatediff_config` entry: configuration, not weights.
        tensors = {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelFileError(path, "holds no weights.")
    return tensors


# Hotshot-XL names a module `temporal_attentions.j` without the `temporal_transformer.` level, and its table
# `positional_encoding`; the modules are the original's otherwise
HOTSHOT_MODULE = re.compile(r"^((?:down_blocks|up_blocks)\.\d+)\.temporal_attentions\.(\d+)\.(.+)$")
HOTSHOT_TABLE = ("pos_encoder.positional_encoding", "pos_encoder.pe")

# diffusers' MotionAdapter names a module's parts its own way (its converter's renames, inverted)
DIFFUSERS_MODULE = re.compile(r"^((?:down_blocks|up_blocks)\.\d+|mid_block)\.motion_modules\.(\d+)\.(.+)$")
DIFFUSERS_PARTS = (("transformer_blocks.0.attn1.", "transformer_blocks.0.attention_blocks.0."),
                   ("transformer_blocks.0.attn2.", "transformer_blocks.0.attention_blocks.1."),
                   ("transformer_blocks.0.norm1.", "transformer_blocks.0.norms.0."),
                   ("transformer_blocks.0.norm2.", "transformer_blocks.0.norms.1."),
                   ("transformer_blocks.0.norm3.", "transformer_blocks.0.ff_norm."))
DIFFUSERS_TABLE = "transformer_blocks.0.pos_embed.pe"


def original_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HotshotXL's temporal layers, and a motion adapter in diffusers' format (MotionAdapter), under the original
    release's names; other files as they are. diffusers keeps one positional table per module, which both
    attentions add: the original's two tables are copies of it. (diffusers' own module normalises over all
    frames before its projection, where the original normalises each frame; the renamed weights run as the
    original, with which they were trained.)"""
    keys = list(state_dict)
    if any(HOTSHOT_MODULE.match(k) for k in keys) and not any(MOTION_KEY.match(k) for k in keys):
        return {_hotshot_name(k): v for k, v in state_dict.items()}
    diffusers = any(DIFFUSERS_MODULE.match(k) and ".transformer_blocks." in k for k in keys) and not any(
        ".temporal_transformer." in k for k in keys)
    if not diffusers:
        return state_dict
    renamed = {}
    for key, value in state_dict.items():
        match = DIFFUSERS_MODULE.match(key)
        if not match:  # PIA's conv_in; anything else the layout check names
            renamed[key] = value
            continue
        block, index, part = match.groups()
        prefix = f"{block}.motion_modules.{index}.temporal_transformer."
        if part == DIFFUSERS_TABLE:
            for attention in (0, 1):
                renamed[f"{prefix}transformer_blocks.0.attention_blocks.{attention}.pos_encoder.pe"] = value
            continue
        old, new = next(((o, n) for o, n in DIFFUSERS_PARTS if part.startswith(o)), ("", ""))
        renamed[prefix + new + part[len(old):]] = value
    return renamed


def _hotshot_name(key: str) -> str:
    match = HOTSHOT_MODULE.match(key)
    if not match:
        return key  # the layout check names it
    block, index, part = match.groups()
    return f"{block}.motion_modules.{index}.temporal_transformer.{part.replace(*HOTSHOT_TABLE)}"


def detect_spec(state_dict: dict[str, torch.Tensor], path="motion module") -> MotionModelSpec:
    """Tells family and version from the keys (FORMATS.md §1), then checks every weight's name and shape against
    that model, refusing anything this pack cannot run."""
    renamed = original_names(state_dict)
    spec = _spec_from_keys(renamed, path)
    check_layout(_layout_of(spec, renamed is not state_dict), _file_shapes(spec, _expected_shapes(spec)), renamed,
                 path)
    return spec


def _layout_of(spec: MotionModelSpec, renamed: bool) -> str:
    """What check_layout names, saying so where the file's own names were read as the original release's."""
    return spec.described + (" (its weights named as in AnimateDiff's original release)" if renamed else "")


def _spec_from_keys(state_dict: dict[str, torch.Tensor], path) -> MotionModelSpec:
    require_kind(state_dict, path, FileKind.MOTION_MODULE)
    keys = list(state_dict)
    motion_keys = [k for k in keys if MOTION_KEY.match(k)]
    if not motion_keys:
        raise ModelFileError(path, f"is not an AnimateDiff motion module (no `motion_modules` weights among "
                             f"its {len(keys)} keys, e.g. `{keys[0]}`).",
                             "Put motion modules such as mm_sd_v15_v2.ckpt in models/animatediff_models.")
    tables = [state_dict[k] for k in motion_keys if k.endswith(PE_SUFFIX)]
    positionless = not any(".pos_encoder." in k for k in motion_keys)
    if not tables and not positionless:
        raise ModelFileError(path, "lacks the positional table of its first attention blocks.",
                             "The file may be damaged.")

    modules = module_channels(state_dict, path)
    down = block_channels(modules, "down_blocks", path)
    up = block_channels(modules, "up_blocks", path)
    mid = modules.get(("mid_block", 0, 0))
    if len(down) not in (3, 4) or len(up) != len(down):
        raise ModelFileError(path, f"has motion modules for {len(down)} down and {len(up)} up blocks; SD1.5 "
                             "motion modules have 4 of each, SDXL's 3.",
                             "The file may be damaged or of an unknown family.")
    if up != down[::-1]:  # a UNet's up blocks mirror its down blocks
        raise ModelFileError(path, f"has up blocks of {up} channels for down blocks of {down}, which no UNet has "
                             "(the up blocks mirror the down blocks).",
                             "The file may be damaged or of an unknown family.")

    image_encoder = any(k.startswith("img_encoder.") for k in keys)
    input_conv = "conv_in.weight" in state_dict
    if len(down) == 3 and (positionless or image_encoder or input_conv or mid):
        raise ModelFileError(path, "is an SDXL motion module of a variant this pack does not know (AnimateDiff's "
                             "and HotshotXL's have positional tables and no mid-block module, image encoder or "
                             "conv_in).", "Use mm_sdxl_v10_beta or HotshotXL's temporal layers as released.")
    if input_conv and (positionless or image_encoder or mid):
        raise ModelFileError(path, "has an input convolution (`conv_in`) like PIA's, but not PIA's layout (PIA has "
                             "positional tables, no mid-block module and no image encoder).",
                             "Use pia.ckpt as released.")
    if positionless:
        if not mid:  # AnimateLCM's have one; a file without both is of no family this pack knows
            raise ModelFileError(path, "is a motion module without positional tables or a mid-block module, "
                                 "a variant this pack does not know.",
                                 "Use an AnimateDiff v1/v2/v3 or AnimateLCM motion module.")
        version = MotionVersion.ANIMATELCM_I2V if image_encoder else MotionVersion.ANIMATELCM
        max_frames = ANIMATELCM_FRAMES
    elif image_encoder:
        raise ModelFileError(path, "has an image encoder (`img_encoder.`) but positional tables, unlike "
                             "AnimateLCM-I2V: a variant this pack does not know.",
                             "Use AnimateLCM_sd15_i2v as released.")
    else:
        max_frames = tables[0].shape[1] if tables[0].ndim == 3 else 0
        version = MotionVersion.V2 if mid else (MotionVersion.V1 if max_frames == 24 else MotionVersion.V3)
        if len(down) == 3:  # SDXL's UNet: AnimateDiff's module has 32 positions, HotshotXL's 24
            version = MotionVersion.HOTSHOTXL if max_frames == 24 else MotionVersion.SDXL
        version = MotionVersion.PIA if input_conv else version
    return MotionModelSpec(version=version, down_channels=tuple(down), up_channels=tuple(up),
                           mid_channels=mid, max_frames=max_frames, image_encoder=image_encoder,
                           input_conv=input_conv)


def module_channels(state_dict, path) -> dict[tuple[str, int, int], int]:
    """(block kind, block index, module index) -> channels, read off each motion module's GroupNorm."""
    modules = {}
    for k, value in state_dict.items():
        match = MOTION_KEY.match(k)
        if match and k.endswith(".temporal_transformer.norm.weight"):
            kind, block, index = match.groups()
            shape = tuple(value.shape)
            if len(shape) != 1 or shape[0] == 0 or shape[0] % 32:
                raise ModelFileError(path, f"has a malformed weight `{k}` of shape {shape} (a GroupNorm of "
                                     "32 groups needs a positive multiple of 32 channels).",
                                     "The file may be damaged or of an unknown variant.")
            modules[(kind, int(block or 0), int(index))] = shape[0]
    return modules


def block_channels(modules, kind, path) -> list[int]:
    blocks = sorted({b for (k, b, _) in modules if k == kind})
    if blocks != list(range(len(blocks))):
        raise ModelFileError(path, f"has gaps in its {kind} (found blocks {blocks}).",
                             "The file may be damaged.")
    missing = [b for b in blocks if (kind, b, 0) not in modules]
    if missing:
        raise ModelFileError(path, f"lacks the GroupNorm of {kind}.{missing[0]}.motion_modules.0, so its channels "
                             "are unknown.", "The file may be damaged.")
    return [modules[(kind, b, 0)] for b in blocks]


@functools.lru_cache(maxsize=8)
def _expected_shapes(spec: MotionModelSpec) -> dict[str, torch.Size]:
    return MotionModel.without_weights(spec).shapes()


def _file_shapes(spec: MotionModelSpec, shapes: dict[str, torch.Size]) -> dict[str, torch.Size]:
    """The weights a file of this kind holds: AnimateLCM's leave out the positional tables, which its code
    builds from the formula, and so does MotionModel."""
    if spec.version not in MotionVersion.LCM:
        return shapes
    return {k: shape for k, shape in shapes.items() if not k.endswith(TABLE_SUFFIX)}


def check_layout(model: str, expected: dict[str, torch.Size], state_dict, path):
    """Compares every key and shape with the model's (`model` names it: "an AnimateDiff v2 motion module"), so
    a damaged file fails here, clearly."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state_dict) if state_dict[k].shape != expected[k])
    not_float = sorted(k for k in set(expected) & set(state_dict) if not state_dict[k].is_floating_point())
    problems = []
    if missing:
        problems.append(f"{len(missing)} weights are missing (e.g. `{missing[0]}`)")
    if unexpected:
        problems.append(f"{len(unexpected)} weights are unexpected (e.g. `{unexpected[0]}`)")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} weights have the wrong shape (e.g. `{k}` is "
                        f"{tuple(state_dict[k].shape)}, expected {tuple(expected[k])})")
    if not_float:
        problems.append(f"{len(not_float)} weights are not floating point (e.g. `{not_float[0]}` is "
                        f"{state_dict[not_float[0]].dtype})")
    if problems:
        raise ModelFileError(path, f"does not have the layout of {model}: "
                             + "; ".join(problems) + ".", "The file may be damaged or of an unknown variant.")


def is_finite(tensor: torch.Tensor) -> bool:
    """NaN and infinities show in the extremes; aminmax reads the tensor once and allocates nothing, where
    isfinite().all() writes a mask as large as the tensor (3-7x slower on a CPU)."""
    if tensor.numel() == 0:
        return True
    if tensor.element_size() == 1:  # fp8 has no aminmax kernel; fp16 holds all its values, infinities included
        tensor = tensor.to(torch.float16)
    low, high = torch.aminmax(tensor)
    return bool(low.isfinite() & high.isfinite())


def _narrows(source: torch.dtype, target: torch.dtype) -> bool:
    return torch.finfo(target).max < torch.finfo(source).max


def load_motion_model(path, ops=TORCH_OPS, dtype: torch.dtype | None = None) -> MotionModel:
    """Reads, checks and builds the motion model of a file; weights are cast to `dtype` when given."""
    read = read_state_dict(path)
    original = original_names(read)
    spec = _spec_from_keys(original, path)
    # the one model this load builds, still without weights, is also the layout the file is checked against
    model = MotionModel.without_weights(spec, ops)
    check_layout(_layout_of(spec, original is not read), _file_shapes(spec, model.shapes()), original, path)
    return model.take_weights(checked_weights(original, dtype, path))


def checked_weights(original: dict[str, torch.Tensor], dtype: torch.dtype | None, path) -> dict[str, torch.Tensor]:
    """The file's tensors cast to `dtype` (when given), refused when any is NaN or infinite, or becomes so."""
    state_dict = {k: v.to(dtype) for k, v in original.items()} if dtype is not None else original
    # Only a narrowing cast can overflow; otherwise the original tensors, never wider, are the ones to read.
    checked = {k: state_dict[k] if _narrows(v.dtype, state_dict[k].dtype) else v for k, v in original.items()}
    broken = next((k for k, v in checked.items() if not is_finite(v)), None)
    if broken and is_finite(original[broken]):
        raise ModelFileError(path, f"has values too large for {dtype} (e.g. in `{broken}`).",
                             "Run ComfyUI in a wider precision (--fp32-unet or --bf16-unet), or use another copy "
                             "of this model.")
    if broken:
        raise ModelFileError(path, f"has NaN or infinite values (e.g. in `{broken}`).",
                             "The file is damaged, or was saved from a training run that diverged.")
    return state_dict
