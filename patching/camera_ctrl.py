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
from ..motion_module.camera_ctrl import PIXELS_PER_LATENT, POSE_FRAMES, CameraCtrl, load_camera_ctrl
from ..motion_module.formats import MotionVersion
from ..motion_module.layers import CameraInput
from ..sampling.camera import CameraPoses, plucker_embedding
from .calls import SamplingCache, call_frames, call_options, compute_dtype, frames_in_call, with_call_options
from .motion import KEY, own_patcher
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


@dataclass(frozen=True)
class CameraCall:
    """In a call's transformer_options: each motion module's merge layer and the feature of its level."""
    inputs: dict

    def for_module(self, name: str) -> CameraInput | None:
        return self.inputs.get(name)


class CameraCondition(SamplingCache):
    def __init__(self, camera_ctrl: CameraCtrl, poses: CameraPoses, strength: float):
        super().__init__()
        self.camera_ctrl = camera_ctrl
        self.poses = poses
        self.strength = strength

    def features(self, frames: list[int], height: int, width: int, device, dtype) -> list[torch.Tensor]:
        """Each level's (frames, C, h, w) feature; kept for the latest window only, so memory stays flat in the
        video's length (a window's features at 512×512 are ~75 MB in fp16)."""
        key = (tuple(frames), height, width, device, dtype)
        if key not in self.cache:
            plucker = plucker_embedding(self.poses, frames, height * PIXELS_PER_LATENT, width * PIXELS_PER_LATENT,
                                        device)
            self.cache = {key: self.camera_ctrl.pose_encoder(plucker.to(dtype), len(frames), attention_pytorch)}
        return self.cache[key]

    def add_to_call(self, executor, x, *args, **kwargs):
        """APPLY_MODEL wrapper: the call's transformer_options carry the camera to the motion layers."""
        self.check_whole_latent(x, f"{NODE}'s camera")
        options = call_options(args, kwargs)
        count = frames_in_call(x, options)
        if count > POSE_FRAMES:
            raise AnimateDiffError(f"{NODE}: CameraCtrl's pose encoder takes at most {POSE_FRAMES} frames at a time, "
                                   f"and this call has {count}. Add AnimateDiff_ContextWindows with context_length "
                                   f"≤ {POSE_FRAMES} (16 as CameraCtrl was trained), or make fewer frames.")
        height, width = x.shape[-2:]
        if height % 8 or width % 8:
            raise AnimateDiffError(f"{NODE}: CameraCtrl needs a width and height that are multiples of 64 pixels (its "
                                   "pose encoder halves the size three times, as the UNet does); this video is "
                                   f"{width * 8}×{height * 8}. Use e.g. 512×512, 512×768 or 384×256.")
        frames, _ = call_frames(options, count)
        videos = x.shape[0] // count
        levels = [f.repeat(videos, 1, 1, 1) for f in self.features(frames, height, width, x.device,
                                                                     compute_dtype(executor))]
        inputs = {}
        for module in self.camera_ctrl.places:
            merge, level = self.camera_ctrl.merge_for(module)
            inputs[module] = CameraInput(merge, levels[level], self.strength)
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
                               f"model has {spec.kind}'s. Load v3_sd15_mm in Load Motion Module.")
    if tuple(spec.down_channels) != camera_ctrl.model.channels:
        raise AnimateDiffError(f"{camera_ctrl.name} is made for motion modules of {camera_ctrl.model.channels} channels, "
                               f"and this model's has {tuple(spec.down_channels)}.")


def with_camera(model, camera_ctrl: LoadedCameraCtrl, poses: CameraPoses, strength: float):
    """A clone of an animating model whose motion follows `poses`."""
    check_motion_model(model, camera_ctrl)
    condition = CameraCondition(camera_ctrl.model, poses, float(strength))
    # a second CameraCtrl node replaces the first
    patched = with_wrappers(model, CAMERA_KEY, {WRAPPERS.APPLY_MODEL: condition.add_to_call,
                                                WRAPPERS.OUTER_SAMPLE: condition.forget_after_sampling})
    patched.set_additional_models(CAMERA_KEY, [camera_ctrl.patcher])
    return patched
