"""The AnimateDiff motion module: layers with the original math, file formats, placement. Pure torch."""
from .formats import detect_spec, load_motion_model, read_state_dict
from .layers import MotionModule, sinusoidal_positions
from .model import Family, MotionModel, MotionModelSpec, MotionVersion
from .placement import Placement, placements

__all__ = ["Family", "MotionVersion", "detect_spec", "load_motion_model", "read_state_dict", "MotionModule",
           "sinusoidal_positions", "MotionModel", "MotionModelSpec", "Placement", "placements"]
