import comfy_env  # noqa: F401  (sets ComfyUI to the CPU before anything imports comfy.model_management)
