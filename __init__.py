"""AnimateDiff for ComfyUI: animate any SD1.5 checkpoint with AnimateDiff motion modules."""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from .nodes.folders import register_model_folders
from .nodes.routes import register_routes

WEB_DIRECTORY = "./web"

register_model_folders()
register_routes()  # GET /animatediff/motion_module_info for web/js; a no-op without a server

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
