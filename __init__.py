"""AnimateDiff for ComfyUI: animate any SD1.5 checkpoint with AnimateDiff motion modules."""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from .nodes.folders import register_model_folders

WEB_DIRECTORY = "./web"

register_model_folders()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
