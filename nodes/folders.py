"""The model folders this pack reads; the names are the ones users of other AnimateDiff packs already have."""
import os

import folder_paths

MOTION_MODELS = "animatediff_models"
MOTION_LORAS = "animatediff_motion_lora"
ADAPTERS = "animatediff_adapters"
LORAS = "loras"  # ComfyUI's own; domain adapters are often kept there with the image LoRAs


def register_model_folders():
    """Adds models/<name> to each folder, keeping any paths a user's extra_model_paths.yaml already set."""
    for name in (MOTION_MODELS, MOTION_LORAS, ADAPTERS):
        path = os.path.join(folder_paths.models_dir, name)
        os.makedirs(path, exist_ok=True)
        paths, extensions = folder_paths.folder_names_and_paths.get(name, ([], set()))
        if path not in paths:
            paths.append(path)
        folder_paths.folder_names_and_paths[name] = (paths, set(extensions) | folder_paths.supported_pt_extensions)


def adapter_files() -> list[str]:
    """The files of models/animatediff_adapters, then those of models/loras; a name in both is listed once."""
    names = folder_paths.get_filename_list(ADAPTERS)
    listed = set(names)
    return names + [n for n in folder_paths.get_filename_list(LORAS) if n not in listed]


def find_adapter(name: str) -> str | None:
    """A listed name carries no folder, so look in the order of the list: a file in animatediff_adapters
    wins over a namesake in loras, and the node loads the file the list showed first."""
    return folder_paths.get_full_path(ADAPTERS, name) or folder_paths.get_full_path(LORAS, name)


def adapter_path(name: str) -> str:
    path = find_adapter(name)
    if path is None:
        raise FileNotFoundError(f"{name} is in neither models/{ADAPTERS} nor models/{LORAS}.")
    return path


def file_stamp(path: str | None) -> str:
    """What a loader's IS_CHANGED returns: the file's size and modification time. ComfyUI keeps a node's output
    while its inputs stay the same, and a file name stays the same when the file is replaced (Train MotionLoRA
    saves over a name used before); with the stamp the loader reads the new file. A stat, not a read: queueing
    stays instant with multi-GB files."""
    if path is None:
        return ""  # the loader itself says the file is missing
    stat = os.stat(path)
    return f"{stat.st_size}:{stat.st_mtime_ns}"
