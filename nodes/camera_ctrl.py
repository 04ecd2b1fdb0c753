"""Nodes for CameraCtrl: camera paths (from a RealEstate10K pose file, or generated), and the model that follows
one (AnimateDiff v3)."""
import hashlib
import os

import folder_paths

from ..errors import AnimateDiffError
from ..patching.camera_ctrl import load_camera_ctrl_file, with_camera
from ..sampling.camera import MOTIONS, camera_motion, read_pose_file
from .folders import MOTION_MODELS, file_stamp
from .numbers import finite

CATEGORY = "AnimateDiff"
POSES = "CAMERA_POSES"
POSE_SUFFIX = ".txt"


class LoadCameraCtrl:
    DESCRIPTION = ("Loads CameraCtrl (CameraCtrl_pruned.safetensors, or the original CameraCtrl.ckpt) from "
                   "models/animatediff_models: camera control for AnimateDiff v3's motion module.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("CAMERACTRL",)
    OUTPUT_TOOLTIPS = ("CameraCtrl, to connect to AnimateDiff_ApplyCameraCtrl.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"cameractrl_name": (folder_paths.get_filename_list(MOTION_MODELS), {
            "tooltip": "CameraCtrl's file in models/animatediff_models, e.g. CameraCtrl_pruned.safetensors."})}}

    @classmethod
    def IS_CHANGED(cls, cameractrl_name, **kwargs):
        return file_stamp(folder_paths.get_full_path(MOTION_MODELS, cameractrl_name))

    def load(self, cameractrl_name):
        path = folder_paths.get_full_path_or_raise(MOTION_MODELS, cameractrl_name)
        return (load_camera_ctrl_file(path, cameractrl_name),)


def pose_files() -> list[str]:
    root = folder_paths.get_input_directory()
    if not os.path.isdir(root):
        return []
    return sorted(n for n in os.listdir(root)
                  if n.lower().endswith(POSE_SUFFIX) and os.path.isfile(os.path.join(root, n)))


def pose_file_text(data: bytes) -> str:
    """Text as editors save it: UTF-8 with or without a byte-order mark, or UTF-16 (Windows' "Unicode"), also
    without its mark: a pose file is ASCII, which UTF-16 writes with a zero byte after (or before) each."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16", errors="replace")
    if len(data) >= 2 and (data[0] == 0) != (data[1] == 0):
        return data.decode("utf-16-be" if data[0] == 0 else "utf-16-le", errors="replace")
    return data.decode("utf-8-sig", errors="replace")


def input_file(name: str) -> str | None:
    """The path of a listed pose file, or None: the list is what ComfyUI checks a prompt's name against, and
    this holds for calls from elsewhere too (a name such as ../x leads out of the input folder)."""
    return os.path.join(folder_paths.get_input_directory(), name) if name in pose_files() else None


class LoadCameraPoses:
    DESCRIPTION = ("Reads a camera path from a RealEstate10K pose file (.txt in ComfyUI's input folder): one line "
                   "per frame with the camera's intrinsics and its world-to-camera pose, as CameraCtrl's own "
                   "examples come.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (POSES,)
    OUTPUT_TOOLTIPS = ("The camera path, one pose per frame, for AnimateDiff_ApplyCameraCtrl.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "pose_file": (pose_files(), {"tooltip": "A .txt pose file in ComfyUI's input folder."}),
            "pose_width": ("INT", {"default": 1280, "min": 1, "max": 16384, "tooltip":
                "Width of the video the poses were measured on (RealEstate10K's: 1280×720). With pose_height, "
                "its shape fits the focal lengths to the animation's."}),
            "pose_height": ("INT", {"default": 720, "min": 1, "max": 16384, "tooltip":
                "Height of the video the poses were measured on."}),
            "frame_step": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip":
                "Take every n-th line. 1 for CameraCtrl's own example files, which already hold one pose per 8 "
                "video frames; 8 for a RealEstate10K file (one line per video frame), the spacing CameraCtrl was "
                "trained with."}),
        }}

    @classmethod
    def IS_CHANGED(cls, pose_file, **kwargs):
        path = input_file(pose_file)
        if path is None:
            return pose_file
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    def load(self, pose_file, pose_width, pose_height, frame_step=1):
        path = input_file(pose_file)
        if path is None:
            raise AnimateDiffError(f"AnimateDiff_LoadCameraPoses: {pose_file} is not in ComfyUI's input folder "
                                   f"({folder_paths.get_input_directory()}). Put the pose file there.")
        with open(path, "rb") as f:
            poses = read_pose_file(pose_file_text(f.read()), pose_width / pose_height, pose_file)
        return (poses.every(frame_step),)


class CameraMotion:
    DESCRIPTION = ("Makes a simple camera path: a move, a turn or a roll at a steady speed. Chain several to "
                   "combine them one after another.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (POSES,)
    OUTPUT_TOOLTIPS = ("The camera path, for AnimateDiff_ApplyCameraCtrl or another Camera Motion.",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "motion": (list(MOTIONS), {"tooltip": "What the camera does: move (left, right, up, down, "
                                           "forward, back), pan (turn left or right), tilt (turn up or down), "
                                           "roll, or stay."}),
                "frames": ("INT", {"default": 16, "min": 1, "max": 4096, "tooltip":
                    "Frames of this motion; a path shorter than the video holds its last pose."}),
                "speed": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01, "tooltip":
                    "1 is the speed of CameraCtrl's demo presets: a turn of 60° or a move of 1.5 units (3 forward "
                    "or back) every 16 frames. Rolls turn the picture clockwise or anticlockwise on screen."}),
            },
            "optional": {
                "camera_poses": (POSES, {"tooltip": "A path this motion continues, one step on from its last pose."}),
            },
        }

    @finite("speed")
    def make(self, motion, frames, speed, camera_poses=None):
        return (camera_motion(motion, frames, speed, camera_poses),)


class ApplyCameraCtrl:
    DESCRIPTION = ("Makes the animation's camera follow a path, with CameraCtrl. Needs a model from Apply Motion "
                   "Module with AnimateDiff v3's motion module (v3_sd15_mm), and videos of at most 16 frames or "
                   "context windows of 16.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The animating model, following the camera, for any sampler node.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "From AnimateDiff_ApplyMotionModule with v3_sd15_mm (before or after "
                                           "AnimateDiff_ContextWindows)."}),
            "cameractrl": ("CAMERACTRL", {"tooltip": "From AnimateDiff_LoadCameraCtrl."}),
            "camera_poses": (POSES, {"tooltip": "From AnimateDiff_CameraMotion or AnimateDiff_LoadCameraPoses; "
                                                "frame f of the video takes pose f."}),
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01, "tooltip":
                "How strongly the camera steers the motion: 1 as CameraCtrl was trained, 0 not at all."}),
        }}

    @finite("strength")
    def apply(self, model, cameractrl, camera_poses, strength):
        return (with_camera(model, cameractrl, camera_poses, strength),)

