from .motion import ApplyMotionModule, LoadMotionModule
from .sampler import Sampler

NODE_CLASS_MAPPINGS = {
    "AnimateDiff_LoadMotionModule": LoadMotionModule,
    "AnimateDiff_ApplyMotionModule": ApplyMotionModule,
    "AnimateDiff_Sampler": Sampler,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "AnimateDiff_LoadMotionModule": "Load Motion Module (AnimateDiff)",
    "AnimateDiff_ApplyMotionModule": "Apply Motion Module (AnimateDiff)",
    "AnimateDiff_Sampler": "Sampler (AnimateDiff)",
}
