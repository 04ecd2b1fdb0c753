"""The AnimateDiff motion module: layers with the original math, file formats, placement. Pure torch."""
from .formats import MotionVersion, detect_spec, load_motion_model, read_state_dict
from .layers import MotionModule, sinusoidal_positions
from .model import MotionModel, MotionModelSpec
from .placement import Placement, placements

__all__ = ["MotionVersion", "detect_spec", "load_motion_model", "read_state_dict", "MotionModule",
           "sinusoidal_positions", "MotionModel", "MotionModelSpec", "Placement", "placements"]
