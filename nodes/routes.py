"""HTTP routes for the front-end extension (web/js): what it cannot know from /object_info alone.

GET /animatediff/motion_module_info?name=<file in models/animatediff_models>
    → {"name", "version", "max_frames"}, or HTTP 400/404 with {"name", "error"}.
The front-end uses max_frames (the length of the module's positional table: 24 for v1 and HotshotXL, 32 for
v2/v3 and AnimateDiff SDXL, 64 for AnimateLCM) to warn before a run when a latent holds more frames than that
and no context windows are on the model path.
"""
import asyncio
from pathlib import Path

import folder_paths
import safetensors
import torch
from aiohttp import web

from ..errors import AnimateDiffError
from ..motion_module import detect_spec, read_state_dict
from ..motion_module.formats import is_safetensors
from .folders import MOTION_MODELS

_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
           "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
_cache: dict[tuple[str, int, int], dict] = {}  # (path, size, mtime) → info; a replaced file is read again


def _header_only(path: Path) -> dict[str, torch.Tensor]:
    """A .safetensors file's keys as empty meta tensors of the right shape: detection needs no weights, and
    reading the header is instant where loading 900 MB is not. Other files are read whole (PyTorch's zip
    files memory-mapped, so cheaply); so is a file whose header cannot be read, which read_state_dict names."""
    if not is_safetensors(path):
        return read_state_dict(path)
    tensors = {}
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                header = f.get_slice(key)  # reads nothing but the header entry
                # integer and bool tensors stand in as int64: detection only asks whether weights are floats
                dtype = _DTYPES.get(header.get_dtype(), torch.int64)
                tensors[key] = torch.empty(header.get_shape(), dtype=dtype, device="meta")
    except (safetensors.SafetensorError, OSError, ValueError):
        tensors = {}
    # a header that cannot be read, or one of no tensors: the reader says what is wrong, naming the file
    return tensors or read_state_dict(path)


def motion_module_info(name: str) -> dict:
    path = Path(folder_paths.get_full_path_or_raise(MOTION_MODELS, name))
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _cache:
        spec = detect_spec(_header_only(path), path)
        _cache[key] = {"name": name, "version": spec.version, "max_frames": spec.max_frames}
    return _cache[key]


async def _motion_module_info(request: web.Request) -> web.Response:
    name = request.query.get("name", "")
    if name not in folder_paths.get_filename_list(MOTION_MODELS):  # only listed files: no path tricks
        return web.json_response({"name": name, "error": f"{name!r} is not in models/{MOTION_MODELS}."},
                                 status=404)
    try:  # in a thread: reading an old-style .ckpt takes a while, and the server must keep serving meanwhile
        return web.json_response(await asyncio.to_thread(motion_module_info, name))
    except (AnimateDiffError, OSError) as e:  # named as the editor lists it, not by the server's own path
        path = folder_paths.get_full_path(MOTION_MODELS, name)
        return web.json_response({"name": name, "error": str(e).replace(str(path), name) if path else str(e)},
                                 status=400)


def register_routes():
    """Adds the routes to the running ComfyUI server; does nothing where there is none (in-process tests,
    scripts importing the pack)."""
    try:
        from server import PromptServer
        routes = PromptServer.instance.routes
    except (ImportError, AttributeError):
        return
    routes.get("/animatediff/motion_module_info")(_motion_module_info)
