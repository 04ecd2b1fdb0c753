"""CameraCtrl in a cloned ModelPatcher: per UNet call, the pose encoder turns the call's frames' cameras into
features (an APPLY_MODEL wrapper, outside a compiled UNet), and the motion layers hand each module its merge
layer and its level's feature. The CameraCtrl model is an additional model, so it loads and offloads with the
UNet."""
from dataclasses import dataclass

import comfy.model_management
import comfy.model_patcher
import comfy.ops
import torch
from comfy.ldm.modules.attention import attention_pytorch

from ..errors import AnimateDiffError
from ..motion_module import MotionVersion
from ..motion_module.camera_ctrl import LEVELS, PIXELS_PER_LATENT, POSE_FRAMES, CameraCtrl, load_camera_ctrl
from ..motion_module.layers import CameraInput
from ..sampling.camera import CameraPoses, plucker_embedding
from .calls import (SamplingCache, call_frames, call_options, compute_dtype, frames_in_call, level_sizes,
                    with_call_options)
from .motion import IDLE, KEY, own_patcher
from .pictures import WRAPPERS, with_wrappers

CAMERA_KEY = "animatediff_cameractrl"
NODE = "AnimateDiff_ApplyCameraCtrl"


@dataclass
class LoadedCameraCtrl:
    """What flows on a CAMERACTRL link: the model, its own ModelPatcher, and the file it came from."""
    name: str
    model: CameraCtrl
    patcher: comfy.model_patcher.ModelPatcher


def load_camera_ctrl_file(path, name: str) -> LoadedCameraCtrl:
    """Weights in the dtype ComfyUI picks for UNets here, as the motion module's."""
    model = load_camera_ctrl(path, ops=comfy.ops.manual_cast, dtype=comfy.model_management.unet_dtype())
    return LoadedCameraCtrl(name, model, own_patcher(model))


@dataclass(frozen=True, eq=False)
class CameraCall:
    """In a call's transformer_options: each motion module's merge layer and the feature of its level."""
    inputs: dict

    def for_module(self, name: str) -> CameraInput | None:
        return self.inputs.get(name)


class CameraCondition(SamplingCache):
    def __init__(self, camera_ctrl: LoadedCameraCtrl, poses: CameraPoses, strength: float):
        super().__init__()
        self.camera_ctrl = camera_ctrl
        self.poses = poses
        self.strength = strength

    def features(self, frames: list[int], height: int, width: int, device, dtype) -> list[torch.Tensor]:
        """Each level's (frames, C, h, w) feature, for the frames of the latest call (a window's): kept while the
        calls are on the same frames, so memory stays flat in the video's length (a window's features at 512×512
        are ~75 MB in fp16).

        The encoder halves the size three times, flooring, where the UNet rounds up: a latent whose sides are not
        multiples of 8 (a frame not of multiples of 64 pixels, e.g. 512×288) gets the rays of a larger frame of
        the same camera, past the bottom and right, and each level's feature is cut to the UNet's size there."""
        key = (tuple(frames), height, width, device, dtype)
        if key not in self.cache:
            halvings = 2 ** (LEVELS - 1)  # the latent's sides rounded up to a multiple of this, in pixels
            padded = [-(-side // halvings) * halvings * PIXELS_PER_LATENT for side in (height, width)]
            plucker = plucker_embedding(self.poses, frames, height * PIXELS_PER_LATENT, width * PIXELS_PER_LATENT,
                                        device, grid=tuple(padded))
            levels = self.camera_ctrl.model.pose_encoder(plucker.to(dtype), len(frames), attention_pytorch)
            sizes = level_sizes(height, width, LEVELS)
            self.cache = {key: [f[..., :h, :w].contiguous() for f, (h, w) in zip(levels, sizes)]}
        return self.cache[key]

    def check_at_sampling(self, executor, noise, *args, **kwargs):
        """OUTER_SAMPLE wrapper: before any model loads, the motion module on the model that samples is still
        v3's (a node after this one could have put another in)."""
        check_motion_model(executor.class_obj.model_patcher, self.camera_ctrl)
        return self.forget_after_sampling(executor, noise, *args, **kwargs)

    def add_to_call(self, executor, x, *args, **kwargs):
        """APPLY_MODEL wrapper: the call's transformer_options carry the camera to the motion layers."""
        options = call_options(args, kwargs)
        # n + 0·merge(…) is n; a call outside Apply Motion Module's start–end has its motion layers sit out (its
        # wrapper, added before this node's, runs outside this one and has marked the call; were the order
        # reversed, the encoder would run for nothing, with the same result)
        if self.strength == 0 or options.get(KEY, {}).get(IDLE):
            return executor(x, *args, **kwargs)
        self.check_whole_latent(x, f"{NODE}'s camera")
        count = frames_in_call(x, options)
        if count > POSE_FRAMES:
            raise AnimateDiffError(f"{NODE}: CameraCtrl's pose encoder takes at most {POSE_FRAMES} frames at a time, "
                                   f"and this call has {count}. Add AnimateDiff_ContextWindows with context_length "
                                   f"≤ {POSE_FRAMES} (16 as CameraCtrl was trained), or make fewer frames.")
        frames, _ = call_frames(options, count)
        videos = x.shape[0] // count
        features = self.features(frames, *x.shape[-2:], x.device, compute_dtype(executor.class_obj))
        levels = [f.repeat(videos, 1, 1, 1) for f in features]
        model = self.camera_ctrl.model
        inputs = {module: CameraInput(model.merge_for(module), levels[level], self.strength)
                  for module, (_, level) in model.places.items()}
        ours = {**options.get(KEY, {}), "camera": CameraCall(inputs)}
        args, kwargs = with_call_options(args, kwargs, {**options, KEY: ours})
        return executor(x, *args, **kwargs)


def check_motion_model(model, camera_ctrl: LoadedCameraCtrl):
    """The animating model's motion module must be the v3 one CameraCtrl was trained with."""
    motion = model.get_additional_models_with_key(KEY)
    if not motion:
        raise AnimateDiffError(f"{NODE} needs a model from AnimateDiff_ApplyMotionModule with AnimateDiff v3's motion "
                               "module (v3_sd15_mm.ckpt); this model has no motion module.")
    spec = motion[0].model.spec
    if spec.version != MotionVersion.V3:
        raise AnimateDiffError(f"CameraCtrl was trained with AnimateDiff v3's motion module (v3_sd15_mm.ckpt); this "
                               f"model has {spec.kind}'s. Load v3_sd15_mm in Load Motion Module (and put any other "
                               f"Apply Motion Module before {NODE}, not after it).")
    if tuple(spec.down_channels) != camera_ctrl.model.channels:
        raise AnimateDiffError(f"{camera_ctrl.name} is made for motion modules of {camera_ctrl.model.channels} "
                               f"channels, and this model's has {tuple(spec.down_channels)}.")


def with_camera(model, camera_ctrl: LoadedCameraCtrl, poses: CameraPoses, strength: float):
    """A clone of an animating model whose motion follows `poses`."""
    check_motion_model(model, camera_ctrl)
    condition = CameraCondition(camera_ctrl, poses, float(strength))
    # a second CameraCtrl node replaces the first
    patched = with_wrappers(model, CAMERA_KEY, {WRAPPERS.APPLY_MODEL: condition.add_to_call,
                                                WRAPPERS.OUTER_SAMPLE: condition.check_at_sampling})
    patched.set_additional_models(CAMERA_KEY, [camera_ctrl.patcher])
    return patched
