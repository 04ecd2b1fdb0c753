import comfy_env  # noqa: I001  (sets ComfyUI to the CPU before anything imports comfy.model_management)
import pytest

from animatediff.patching.motion import load_motion_model_file


@pytest.fixture(scope="module")
def base():
    """A fresh tiny SD1.5 model per test module."""
    return comfy_env.tiny_sd15()


@pytest.fixture(scope="module")
def motion(fixtures_dir):
    """The small v1/v2/v3 motion modules, loaded the way AnimateDiff_LoadMotionModule loads them."""
    return {v: load_motion_model_file(fixtures_dir / "small" / f"mm_{v}.safetensors", f"mm_{v}.safetensors")
            for v in ("v1", "v2", "v3")}
