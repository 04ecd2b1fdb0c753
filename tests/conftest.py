"""Test set-up shared by every layer of the suite.

The pack is imported as the package `animatediff` (its folder name varies: a checkout, a custom_nodes link),
without running its top-level __init__, so the pure-torch core can be tested with no ComfyUI at all.
ComfyUI (the host from scripts/host.sh, or COMFYUI_PATH) goes on sys.path for the tests that use it.
"""
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

import pytest

PACK_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK_ROOT / "scripts"))
sys.path.insert(0, str(PACK_ROOT / "tests"))

from make_fixtures import comfyui_path, fixtures_dir as fixtures_path  # noqa: E402


def _register_pack_package():
    spec = importlib.machinery.ModuleSpec("animatediff", None, is_package=True)
    spec.submodule_search_locations = [str(PACK_ROOT)]
    sys.modules.setdefault("animatediff", importlib.util.module_from_spec(spec))


_register_pack_package()
# `python -m pytest` puts the working directory first on sys.path; from the pack's root, our `nodes/`
# package would then shadow ComfyUI's `nodes` module.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != PACK_ROOT]
if (comfyui_path() / "comfy").is_dir() and str(comfyui_path()) not in sys.path:
    sys.path.append(str(comfyui_path()))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    folder = fixtures_path()
    if not (folder / "small" / "mm_v2.safetensors").exists():
        pytest.fail(f"fixtures missing in {folder}: run `python scripts/make_fixtures.py` (scripts/test does)")
    return folder
