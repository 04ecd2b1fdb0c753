from .camera_ctrl import ApplyCameraCtrl, CameraMotion, LoadCameraCtrl, LoadCameraPoses
from .context import ContextWindows
from .free_init import FreeInit
from .image_to_video import AnimateLCMI2VImage, PIAImage
from .lora import DomainAdapter, MotionLoRA
from .motion import ApplyMotionModule, LoadMotionModule
from .prompt import PromptSchedule
from .sampler import Sampler
from .sparse_ctrl import ApplySparseCtrl, LoadSparseCtrl
from .training import CameraAugment, TrainMotionLoRA

NODE_CLASS_MAPPINGS = {
    "AnimateDiff_LoadMotionModule": LoadMotionModule,
    "AnimateDiff_ApplyMotionModule": ApplyMotionModule,
    "AnimateDiff_MotionLoRA": MotionLoRA,
    "AnimateDiff_DomainAdapter": DomainAdapter,
    "AnimateDiff_ContextWindows": ContextWindows,
    "AnimateDiff_PromptSchedule": PromptSchedule,
    "AnimateDiff_Sampler": Sampler,
    "AnimateDiff_FreeInit": FreeInit,
    "AnimateDiff_TrainMotionLoRA": TrainMotionLoRA,
    "AnimateDiff_CameraAugment": CameraAugment,
    "AnimateDiff_LoadSparseCtrl": LoadSparseCtrl,
    "AnimateDiff_ApplySparseCtrl": ApplySparseCtrl,
    "AnimateDiff_AnimateLCMI2VImage": AnimateLCMI2VImage,
    "AnimateDiff_PIAImage": PIAImage,
    "AnimateDiff_LoadCameraCtrl": LoadCameraCtrl,
    "AnimateDiff_LoadCameraPoses": LoadCameraPoses,
    "AnimateDiff_CameraMotion": CameraMotion,
    "AnimateDiff_ApplyCameraCtrl": ApplyCameraCtrl,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "AnimateDiff_LoadMotionModule": "Load Motion Module (AnimateDiff)",
    "AnimateDiff_ApplyMotionModule": "Apply Motion Module (AnimateDiff)",
    "AnimateDiff_MotionLoRA": "MotionLoRA (AnimateDiff)",
    "AnimateDiff_DomainAdapter": "Domain Adapter (AnimateDiff)",
    "AnimateDiff_ContextWindows": "Context Windows (AnimateDiff)",
    "AnimateDiff_PromptSchedule": "Prompt Schedule (AnimateDiff)",
    "AnimateDiff_Sampler": "Sampler (AnimateDiff)",
    "AnimateDiff_FreeInit": "FreeInit (AnimateDiff)",
    "AnimateDiff_TrainMotionLoRA": "Train MotionLoRA (AnimateDiff)",
    "AnimateDiff_CameraAugment": "Camera Augment (AnimateDiff)",
    "AnimateDiff_LoadSparseCtrl": "Load SparseCtrl (AnimateDiff)",
    "AnimateDiff_ApplySparseCtrl": "Apply SparseCtrl (AnimateDiff)",
    "AnimateDiff_AnimateLCMI2VImage": "AnimateLCM-I2V Image (AnimateDiff)",
    "AnimateDiff_PIAImage": "PIA Image (AnimateDiff)",
    "AnimateDiff_LoadCameraCtrl": "Load CameraCtrl (AnimateDiff)",
    "AnimateDiff_LoadCameraPoses": "Load Camera Poses (AnimateDiff)",
    "AnimateDiff_CameraMotion": "Camera Motion (AnimateDiff)",
    "AnimateDiff_ApplyCameraCtrl": "Apply CameraCtrl (AnimateDiff)",
}
