"""Where each motion module sits in an SD1.5 or SDXL UNet, in ComfyUI/LDM block naming (FORMATS.md §1).

down_blocks.i.motion_modules.j follows input_blocks[3i + j + 1]; up_blocks.i.motion_modules.j follows
output_blocks[3i + j]; mid_block.motion_modules.0 follows the attention of middle_block. Inside a block
the module goes after the resnet and its spatial transformer, before any down- or upsampler. SDXL's UNet has
three levels to SD1.5's four, with the same blocks per level, so the same rule places its modules.
"""
from dataclasses import dataclass

from .model import MotionModel


@dataclass(frozen=True)
class Placement:
    motion_key: str     # path of the module inside MotionModel, e.g. "down_blocks.1.motion_modules.0"
    unet_blocks: str    # "input_blocks", "middle_block" or "output_blocks"
    index: int | None   # index into input_blocks / output_blocks; None for the middle block


def placements(model: MotionModel) -> list[Placement]:
    spec = model.spec
    places = []
    for i in range(len(spec.down_channels)):
        for j in range(spec.modules_per_down_block):
            places.append(Placement(f"down_blocks.{i}.motion_modules.{j}", "input_blocks", 3 * i + j + 1))
    if spec.mid_channels:
        places.append(Placement("mid_block.motion_modules.0", "middle_block", None))
    for i in range(len(spec.up_channels)):
        for j in range(spec.modules_per_up_block):
            places.append(Placement(f"up_blocks.{i}.motion_modules.{j}", "output_blocks", 3 * i + j))
    return places
