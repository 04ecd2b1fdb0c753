"""Runs example_workflows/txt2vid.json end to end on the embedded ComfyUI host and saves the animation.

Random fixture weights unless --checkpoint / --motion-module point at real files. On a CPU the frame size
and step count are reduced so the run takes minutes; pass --width/--height/--steps to choose.
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

from comfy_server import ComfyServer, adapt_workflow, execution_error, ui_to_api

PACK = Path(__file__).resolve().parents[1]


def main(argv=None):
    import torch
    from make_fixtures import comfyui_path, fixtures_dir
    gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workflow", type=Path, default=PACK / "example_workflows" / "txt2vid.json")
    p.add_argument("--checkpoint", type=Path, default=fixtures_dir() / "sd15_random.safetensors")
    p.add_argument("--motion-module", type=Path, default=fixtures_dir() / "mm_v2.safetensors")
    p.add_argument("--width", type=int, default=None if gpu else 128)
    p.add_argument("--height", type=int, default=None if gpu else 128)
    p.add_argument("--steps", type=int, default=None if gpu else 4)
    p.add_argument("--output", type=Path, default=PACK / "output")
    args = p.parse_args(argv)

    models = {"checkpoints": {args.checkpoint.name: args.checkpoint},
              "animatediff_models": {args.motion_module.name: args.motion_module}}
    with ComfyServer(comfyui_path(), models, gpu=gpu) as server:
        prompt = adapt_workflow(ui_to_api(json.loads(args.workflow.read_text()), server.get("/object_info")),
                                files={"ckpt_name": args.checkpoint.name, "model_name": args.motion_module.name},
                                width=args.width, height=args.height, steps=args.steps)
        print(f"running {args.workflow.name} on ComfyUI at {server.url} ({'GPU' if gpu else 'CPU'})", flush=True)
        entry = server.run(prompt)
        error = execution_error(entry)
        if error:
            sys.exit(f"the workflow failed in {error['node_type']}: {error['exception_message']}")
        images = [img for out in entry["outputs"].values() for img in out.get("images", [])]
        args.output.mkdir(parents=True, exist_ok=True)
        for image in images:
            source = server.output_dir / image.get("subfolder", "") / image["filename"]
            shutil.copy(source, args.output / image["filename"])
            print(f"saved {args.output / image['filename']}")


if __name__ == "__main__":
    main()
