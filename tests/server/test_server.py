"""The pack in a real ComfyUI server, driven through its HTTP queue like a user's service would."""
import json
from pathlib import Path

import pytest
from PIL import Image

from comfy_server import adapt_workflow, execution_error, ui_to_api

pytestmark = pytest.mark.slow
WORKFLOWS = Path(__file__).resolve().parents[2] / "example_workflows"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_object_info_lists_the_nodes_with_the_contract_inputs(server):
    info = server.get("/object_info")
    load = info["AnimateDiff_LoadMotionModule"]
    assert load["category"] == "AnimateDiff" and load["output"] == ["MOTION_MODEL"]
    assert set(load["input"]["required"]["model_name"][0]) >= {"mm_v1.ckpt", "mm_v2.safetensors", "mm_v3.ckpt"}
    apply = info["AnimateDiff_ApplyMotionModule"]
    assert apply["input_order"] == {"required": ["model", "motion_model"],
                                    "optional": ["motion_lora", "motion_scale", "beta_schedule", "effect",
                                                 "effect_mask", "start_percent", "end_percent"]}
    assert apply["input"]["optional"]["motion_scale"][1]["default"] == 1.0
    assert apply["input"]["optional"]["beta_schedule"][1]["default"] == "autoselect"
    sampler = info["AnimateDiff_Sampler"]
    assert sampler["input_order"]["required"] == info["KSampler"]["input_order"]["required"]
    assert sampler["input_order"]["optional"][0] == "noise_type"
    for node in (load, apply, sampler):
        assert node["description"]
        assert all(spec[1].get("tooltip") for group in node["input"].values() for spec in group.values()
                   if len(spec) > 1)


FIXTURE_NAMES = {  # widget -> the fixture file the test server has in place of the real model
    "ckpt_name": "sd15_random.safetensors", "adapter_name": "v3_adapter.ckpt",
    "control_net_name": "controlnet_sd15_random.safetensors", "sparse_ctrl_name": "sparsectrl_rgb.safetensors",
    "cameractrl_name": "CameraCtrl_pruned.safetensors",
}


def small_workflow(server, name, frames=16, size=64, steps=2, motion="mm_v2.safetensors"):
    """A shipped example workflow, converted from its UI form, with fixture files and a CPU-friendly size."""
    prompt = ui_to_api(json.loads((WORKFLOWS / name).read_text()), server.get("/object_info"))
    adapt_workflow(prompt, files={**FIXTURE_NAMES, "model_name": motion}, width=size, height=size, frames=frames,
                   steps=steps)
    loras = iter(["motion_lora_zoom.safetensors", "motion_lora_pan.ckpt"])
    for node in prompt.values():
        if node["class_type"] == "AnimateDiff_MotionLoRA":
            node["inputs"]["lora_name"] = next(loras)
    return prompt


def small_txt2vid(server, **kwargs):
    return small_workflow(server, "txt2vid.json", **kwargs)


def saved_frames(server, entry):
    (image,) = [img for out in entry["outputs"].values() for img in out.get("images", [])]
    with Image.open(server.output_dir / image["subfolder"] / image["filename"]) as webp:
        return webp.n_frames


# model, image and video names: the files the examples name are not on the test server
FILE_SUFFIXES = (".ckpt", ".safetensors", ".pt", ".pth", ".bin", ".png", ".jpg", ".webp", ".gif", ".mp4")


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.json")))
def test_every_example_workflows_widget_values_fit_their_inputs(server, name):
    """What the editor would queue as shipped (the other tests adapt sizes and files first)."""
    info = server.get("/object_info")
    kinds = {"INT": int, "FLOAT": (int, float), "STRING": str, "BOOLEAN": bool}
    for node in ui_to_api(json.loads((WORKFLOWS / name).read_text()), info).values():
        specs = {**info[node["class_type"]]["input"].get("required", {}),
                 **info[node["class_type"]]["input"].get("optional", {})}
        for input_name, value in node["inputs"].items():
            kind, options = specs[input_name][0], (specs[input_name][1] if len(specs[input_name]) > 1 else {})
            where = f"{node['class_type']}.{input_name} = {value!r}"
            if isinstance(value, list):  # a link
                continue
            if isinstance(kind, list):
                assert value in kind or str(value).endswith(FILE_SUFFIXES), where
            elif kind in kinds:
                assert isinstance(value, kinds[kind]) and not (kind != "BOOLEAN" and isinstance(value, bool)), where
                if kind in ("INT", "FLOAT"):
                    assert options.get("min", value) <= value <= options.get("max", value), where


def test_example_workflow_makes_a_16_frame_animation(server):
    entry = server.run(small_txt2vid(server))
    assert execution_error(entry) is None, execution_error(entry)
    assert saved_frames(server, entry) == 16


def test_motionlora_stack_example_with_two_loras_and_the_adapter(server):
    prompt = small_workflow(server, "motionlora_stack.json", frames=8, size=32, steps=1)
    kinds = [n["class_type"] for n in prompt.values()]
    assert kinds.count("AnimateDiff_MotionLoRA") == 2 and "AnimateDiff_DomainAdapter" in kinds
    entry = server.run(prompt)
    assert execution_error(entry) is None, execution_error(entry)
    assert saved_frames(server, entry) == 8


@pytest.mark.parametrize("motion,sampler", [("mm_v1.ckpt", "KSampler"), ("mm_v3.ckpt", "KSampler")])
def test_other_versions_with_the_core_ksampler(server, motion, sampler):
    prompt = small_txt2vid(server, frames=8, size=32, steps=1, motion=motion)
    node = next(n for n in prompt.values() if n["class_type"] == "AnimateDiff_Sampler")
    node["class_type"] = sampler
    node["inputs"].pop("noise_type")
    entry = server.run(prompt)
    assert execution_error(entry) is None, execution_error(entry)
    assert saved_frames(server, entry) == 8


def test_animatelcm_example_makes_40_frames_in_one_window(server):
    """The example as shipped (lcm sampler, cfg 1.5, autoselect), past v2's 32 frames without context windows."""
    prompt = small_workflow(server, "txt2vid_animatelcm.json", frames=40, size=32, steps=2,
                            motion="AnimateLCM_sd15_t2v.safetensors")
    sampler = next(n["inputs"] for n in prompt.values() if n["class_type"] == "AnimateDiff_Sampler")
    assert (sampler["sampler_name"], sampler["cfg"]) == ("lcm", 1.5)
    entry = server.run(prompt)
    assert execution_error(entry) is None, execution_error(entry)
    assert saved_frames(server, entry) == 40


def test_animatelcm_i2v_example_starts_from_the_picture(server):
    """The example as shipped (lcm sampler, 4 steps, cfg 1) with a full-size AnimateLCM-I2V module; a picture of
    another shape is centre-cropped to the video's."""
    Image.new("RGB", (64, 48), (30, 120, 200)).save(server.input_dir / "i2v_picture.png")
    prompt = small_workflow(server, "animatelcm_i2v.json", frames=16, size=32, steps=None,
                            motion="AnimateLCM_sd15_i2v.safetensors")
    next(n for n in prompt.values() if n["class_type"] == "LoadImage")["inputs"]["image"] = "i2v_picture.png"
    sampler = next(n["inputs"] for n in prompt.values() if n["class_type"] == "AnimateDiff_Sampler")
    assert (sampler["sampler_name"], sampler["cfg"], sampler["steps"]) == ("lcm", 1.0, 4)
    entry = server.run(prompt)
    assert execution_error(entry) is None, execution_error(entry)
    assert saved_frames(server, entry) == 16
    motion = next(k for k, n in prompt.items() if n["class_type"] == "AnimateDiff_LoadMotionModule")
    prompt[motion]["inputs"]["model_name"] = "mm_v3.ckpt"
    error = execution_error(server.run(prompt))
    assert "with an AnimateLCM-I2V motion module" in error["exception_message"]


def test_pia_example_animates_the_picture(server):
    """The example as shipped (ddim, ddim_uniform, cfg 7.5; 2 of its 25 steps here) with a full-size PIA."""
    Image.new("RGB", (32, 32), (200, 120, 30)).save(server.input_dir / "pia_picture.png")
    prompt = small_workflow(server, "pia_img2vid.json", frames=16, size=32, steps=2, motion="pia.safetensors")
    next(n for n in prompt.values() if n["class_type"] == "LoadImage")["inputs"]["image"] = "pia_picture.png"
    sampler = next(n["inputs"] for n in prompt.values() if n["class_type"] == "AnimateDiff_Sampler")
    assert (sampler["sampler_name"], sampler["scheduler"], sampler["cfg"]) == ("ddim", "ddim_uniform", 7.5)
    entry = server.run(prompt)
    assert execution_error(entry) is None, execution_error(entry)
    assert saved_frames(server, entry) == 16
    next(n for n in prompt.values() if n["class_type"] == "AnimateDiff_PIAImage")["inputs"]["picture_frame"] = 16
    error = execution_error(server.run(prompt))
    assert "picture_frame=16, but the video has 16 frames (0 to 15)" in error["exception_message"]


def test_cameractrl_example_follows_a_generated_path_and_a_pose_file(server):
    """The example as shipped (v3 with its adapter, a move then a turn; 2 of its 25 steps here) with a full-size
    CameraCtrl; then a RealEstate10K pose file in place of the generated path, and too many frames."""
    prompt = small_workflow(server, "cameractrl_txt2vid.json", frames=16, size=64, steps=2, motion="mm_v3.ckpt")
    motions = [n["inputs"]["motion"] for n in prompt.values() if n["class_type"] == "AnimateDiff_CameraMotion"]
    assert sorted(motions) == ["move forward", "pan left"]
    entry = server.run(prompt)
    assert execution_error(entry) is None, execution_error(entry)
    assert saved_frames(server, entry) == 16
    rows = [f"{f * 33366} 0.4748 0.8441 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 {-0.05 * f:.6f}" for f in range(16)]
    (server.input_dir / "camera_path.txt").write_text("https://www.youtube.com/watch?v=example\n" + "\n".join(rows))
    apply = next(n for n in prompt.values() if n["class_type"] == "AnimateDiff_ApplyCameraCtrl")
    prompt["poses"] = {"class_type": "AnimateDiff_LoadCameraPoses",
                       "inputs": {"pose_file": "camera_path.txt", "pose_width": 1280, "pose_height": 720,
                                  "frame_step": 1}}
    apply["inputs"]["camera_poses"] = ["poses", 0]
    entry = server.run(prompt)
    assert execution_error(entry) is None, execution_error(entry)
    assert saved_frames(server, entry) == 16
    next(n for n in prompt.values() if n["class_type"] == "EmptyLatentImage")["inputs"]["batch_size"] = 24
    error = execution_error(server.run(prompt))
    assert "at most 16 frames at a time, and this call has 24" in error["exception_message"]


def test_the_http_recipe_in_the_docs_makes_an_animation(server, tmp_path, monkeypatch):
    """docs/http_api.md's code, run as written against this server; only the address and the model files differ.
    Its prompt file is the txt2vid example in API form."""
    code = (DOCS / "http_api.md").read_text().split("```python\n", 1)[1].split("```", 1)[0]
    address, load = 'COMFY = "http://127.0.0.1:8188"', 'prompt = json.load(open("txt2vid_api.json"))'
    assert address in code and load in code
    prompt = json.loads((DOCS / "txt2vid_api.json").read_text())
    assert prompt == ui_to_api(json.loads((WORKFLOWS / "txt2vid.json").read_text()), server.get("/object_info"))
    assert "mm_v2.safetensors" in server.get("/models/animatediff_models")
    adapt_workflow(prompt, files={**FIXTURE_NAMES, "model_name": "mm_v2.safetensors"}, width=32, height=32,
                   frames=8, steps=1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace(address, f'COMFY = "{server.url}"').replace(load, "prompt = PROMPT"),
                 "docs/http_api.md", "exec"), {"PROMPT": prompt})
    (saved,) = tmp_path.glob("*.webp")
    with Image.open(saved) as webp:
        assert webp.n_frames == 8


def failure(server, prompt) -> str:
    entry = server.run(prompt)
    error = execution_error(entry)
    assert error is not None, "the prompt should have failed"
    return error["exception_message"]


def test_bad_files_get_clear_errors_and_the_server_keeps_serving(server, hostile_files):
    _, marker = hostile_files
    load = lambda name: small_txt2vid(server, frames=2, size=32, steps=1, motion=name)  # noqa: E731
    assert "could run code, so it was refused" in failure(server, load("evil.ckpt"))
    assert "nothing in it was run" in failure(server, load("pickled.ckpt"))  # a raw pickle: not even parsed
    assert "not a PyTorch checkpoint" in failure(server, load("notes.ckpt"))
    message = failure(server, load("a_checkpoint.safetensors"))
    assert "a_checkpoint.safetensors" in message and "Stable Diffusion checkpoint" in message
    assert "Load Checkpoint" in message
    assert not marker.exists()
    entry = server.run(small_txt2vid(server, frames=4, size=32, steps=1))
    assert execution_error(entry) is None


def test_nan_sent_by_an_api_client_is_refused_by_name(server):
    """Python's json writes NaN, and ComfyUI's min/max check lets it through; unchecked it made an all-NaN
    video that the server reported as a success."""
    prompt = small_txt2vid(server, frames=2, size=32, steps=1)
    (apply,) = [node for node in prompt.values() if node["class_type"] == "AnimateDiff_ApplyMotionModule"]
    apply["inputs"]["effect"] = float("nan")
    assert "effect is nan, not a finite number: give it a number" in failure(server, prompt)


def test_too_many_frames_says_what_to_do(server):
    message = failure(server, small_txt2vid(server, frames=33, size=32, steps=1))
    assert "33 frames > 32 this motion module supports: add AnimateDiff_ContextWindows" in message
    entry = server.run(small_txt2vid(server, frames=4, size=32, steps=1))
    assert execution_error(entry) is None


def test_the_sdxl_example_with_an_sd15_checkpoint_names_both_families(server):
    """The SDXL module, full size, on the SD1.5 checkpoint: refused by name before any step (the fixtures hold no
    SDXL checkpoint; tests/comfy/test_sdxl.py samples with a tiny SDXL UNet)."""
    prompt = small_workflow(server, "txt2vid_sdxl.json", frames=4, size=32, steps=1,
                            motion="mm_sdxl_v10_beta.safetensors")
    assert "mm_sdxl_v10_beta.safetensors is for SDXL models, but the model is SD15 (its UNet has 12 input blocks, " \
           "SDXL has 9). Load an SDXL checkpoint" in failure(server, prompt)


def test_an_effect_mask_from_core_mask_nodes_animates_and_a_wrong_count_is_named(server):
    prompt = small_txt2vid(server, frames=4, size=32, steps=1)
    apply = next(n for n in prompt.values() if n["class_type"] == "AnimateDiff_ApplyMotionModule")
    prompt.update({
        "solid": {"class_type": "SolidMask", "inputs": {"value": 0.6, "width": 32, "height": 32}},
        "as_image": {"class_type": "MaskToImage", "inputs": {"mask": ["solid", 0]}},
        "three": {"class_type": "RepeatImageBatch", "inputs": {"image": ["as_image", 0], "amount": 3}},
        "masks": {"class_type": "ImageToMask", "inputs": {"image": ["three", 0], "channel": "red"}},
    })
    apply["inputs"].update(effect=0.7, effect_mask=["solid", 0])
    entry = server.run(prompt)
    assert execution_error(entry) is None, execution_error(entry)
    assert saved_frames(server, entry) == 4
    apply["inputs"]["effect_mask"] = ["masks", 0]
    assert "effect_mask holds 3 masks for a video of 4 frames" in failure(server, prompt)


def test_motion_mask_example_animates_the_masks_white_half(server):
    prompt = small_workflow(server, "txt2vid_motion_mask.json", frames=8, size=32, steps=1)
    apply = next(n["inputs"] for n in prompt.values() if n["class_type"] == "AnimateDiff_ApplyMotionModule")
    assert apply["effect"] == 1.0 and apply["effect_mask"][0] in prompt
    entry = server.run(prompt)
    assert execution_error(entry) is None, execution_error(entry)
    assert saved_frames(server, entry) == 8


def test_sampler_custom_advanced_animates_too(server):
    prompt = small_txt2vid(server, frames=6, size=32, steps=1, motion="mm_v2.safetensors")
    sampler_id = next(k for k, n in prompt.items() if n["class_type"] == "AnimateDiff_Sampler")
    s = prompt.pop(sampler_id)["inputs"]
    prompt.update({
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}},
        "guider": {"class_type": "CFGGuider", "inputs": {"model": s["model"], "positive": s["positive"],
                                                         "negative": s["negative"], "cfg": 7.5}},
        "select": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "sigmas": {"class_type": "BasicScheduler", "inputs": {"model": s["model"], "scheduler": "normal",
                                                              "steps": 2, "denoise": 1.0}},
        sampler_id: {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["select", 0], "sigmas": ["sigmas", 0],
            "latent_image": s["latent_image"]}},
    })
    entry = server.run(prompt)
    assert execution_error(entry) is None, execution_error(entry)
    assert saved_frames(server, entry) == 6


def test_freeinit_runs_its_rounds_through_the_queue(server):
    """The node between Apply Motion Module and the pack's sampler, in a prompt queued over HTTP."""
    prompt = small_txt2vid(server, frames=6, size=32, steps=2)
    sampler = next(n for n in prompt.values() if n["class_type"] == "AnimateDiff_Sampler")
    prompt["free_init"] = {"class_type": "AnimateDiff_FreeInit", "inputs": {
        "model": sampler["inputs"]["model"], "iterations": 2, "filter": "butterworth", "spatial_cutoff": 0.25,
        "temporal_cutoff": 0.25}}
    sampler["inputs"]["model"] = ["free_init", 0]
    entry = server.run(prompt)
    assert execution_error(entry) is None, execution_error(entry)
    assert saved_frames(server, entry) == 6


def write_video(path, frames, size=32):
    """An mp4 whose frame k is a flat grey of level 4k: a stand-in for a pose or depth video."""
    import av
    import numpy as np
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for k in range(frames):
            image = np.full((size, size, 3), (4 * k) % 256, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_long_example_makes_64_frames_in_context_windows(server):
    prompt = small_workflow(server, "txt2vid_long.json", frames=64, size=32, steps=1)
    kinds = {n["class_type"] for n in prompt.values()}
    assert {"AnimateDiff_ContextWindows", "AnimateDiff_PromptSchedule"} <= kinds
    entry = server.run(prompt)
    assert execution_error(entry) is None, execution_error(entry)
    assert saved_frames(server, entry) == 64
    next(n for n in prompt.values() if n["class_type"] == "AnimateDiff_PromptSchedule")["inputs"]["frames"] = 70
    error = execution_error(server.run(prompt))
    assert error and "set the schedule's frames to 64" in error["exception_message"]


def test_controlnet_video_example_makes_64_frames(server):
    write_video(server.input_dir / "pose_video.mp4", 64)
    prompt = small_workflow(server, "controlnet_video.json", frames=64, size=32, steps=1)
    next(n for n in prompt.values() if n["class_type"] == "LoadVideo")["inputs"]["file"] = "pose_video.mp4"
    entry = server.run(prompt)
    assert execution_error(entry) is None, execution_error(entry)
    assert saved_frames(server, entry) == 64


def test_sparsectrl_example_starts_the_video_from_the_picture(server):
    """Image to video: the example's picture guides frame 0 through an RGB SparseCtrl (full-size, fp16)."""
    Image.new("RGB", (96, 64), (200, 80, 40)).save(server.input_dir / "first_frame.png")
    prompt = small_workflow(server, "sparsectrl_img2vid.json", frames=16, size=64, steps=2, motion="mm_v3.ckpt")
    next(n for n in prompt.values() if n["class_type"] == "LoadImage")["inputs"]["image"] = "first_frame.png"
    entry = server.run(prompt)
    assert execution_error(entry) is None, execution_error(entry)
    assert saved_frames(server, entry) == 16
    prompt[next(k for k, n in prompt.items() if n["class_type"] == "AnimateDiff_ApplySparseCtrl")]["inputs"][
        "frame_indices"] = "0, 16"
    error = execution_error(server.run(prompt))
    assert "got 1 images for 2 frame_indices" in error["exception_message"]
