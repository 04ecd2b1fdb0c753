"""The model folders this pack reads; the names are the ones users of other AnimateDiff packs already have."""
import os

import folder_paths

MOTION_MODELS = "animatediff_models"
MOTION_LORAS = "animatediff_motion_lora"


def register_model_folders():
    """Adds models/<name> to each folder, keeping any paths a user's extra_model_paths.yaml already set."""
    for name in (MOTION_MODELS, MOTION_LORAS):
        path = os.path.join(folder_paths.models_dir, name)
        os.makedirs(path, exist_ok=True)
        paths, extensions = folder_paths.folder_names_and_paths.get(name, ([], set()))
        if path not in paths:
            paths.append(path)
        folder_paths.folder_names_and_paths[name] = (paths, set(extensions) | folder_paths.supported_pt_extensions)
