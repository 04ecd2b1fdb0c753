"""MotionLoRA training inside a real in-process ComfyUI (CPU, tiny SD1.5 UNet, small v2 motion module).

Everything a node gets is made under torch.inference_mode, as ComfyUI's executor does, so the weights are
inference tensors exactly as in a real graph. The VAE is ComfyUI's own `comfy.sd.VAE` around a randomly
initialised TAESD (4 latent channels, 8× downscale, like SD1.5's VAE, but small).
"""
import json
import math
import os
from pathlib import Path

import comfy.model_management
import comfy.model_patcher
import comfy.supported_models
import folder_paths
import pytest
import safetensors
import safetensors.torch
import torch

from comfy_env import TINY_SD15, conditioning, ksample, random_fill, tiny_sd15, tiny_vae, unet_state
from animatediff.errors import AnimateDiffError
from animatediff.lora import MotionLoRA as MotionLoRAEntry
from animatediff.lora import add_to_stack
from animatediff.lora.augment import CameraMotion
from animatediff.lora.training import draws, temporal_attention_layers
from animatediff.nodes.folders import MOTION_LORAS, register_model_folders
from animatediff.nodes.lora import MotionLoRA
from animatediff.nodes.motion import LoadMotionModule
from animatediff.nodes.training import CameraAugment, TrainMotionLoRA
from animatediff.patching.motion import apply_motion_model, load_motion_model_file
from animatediff.patching.schedule import BetaSchedule
from animatediff.patching.training import encode_clips, train_motion_lora
from bench_training import KeptForBackward
from comfy_server import ui_to_api
from random_weights import motion_lora_state_dict

SMALL = (32, 64, 128, 128)
FRAMES = 4
RESOLUTION = 64  # 8×8 latents


def still_image():
    """A smooth random picture (1, 64, 64, 3) in [0, 1]: blobs a zoom visibly scales."""
    g = torch.Generator().manual_seed(3)
    coarse = torch.rand(1, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bicubic").clamp(0, 1).movedim(1, -1)


def motion_state(motion):
    return {k: v.detach().clone() for k, v in motion.model.state_dict().items()}


@pytest.fixture(scope="module")
def setup(fixtures_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("animatediff_motion_lora")
    register_model_folders()
    folder_paths.add_model_folder_path(MOTION_LORAS, str(folder), is_default=True)
    with torch.inference_mode():
        base = tiny_sd15()
        motion = load_motion_model_file(fixtures_dir / "small" / "mm_v2.safetensors", "mm_v2.safetensors")
        vae = tiny_vae()
        (clip,) = CameraAugment().augment(still_image(), CameraMotion.ZOOM_IN, FRAMES, 0.5, RESOLUTION, RESOLUTION)
    yield {"base": base, "motion": motion, "vae": vae, "clip": clip, "folder": folder}
    folder_paths.folder_names_and_paths[MOTION_LORAS][0].remove(str(folder))


@pytest.fixture(scope="module")
def core(setup):
    """30 steps on one zoom-in clip, through the ComfyUI glue without the node around it."""
    base, motion = setup["base"], setup["motion"]
    before = (unet_state(base), motion_state(motion))
    sample_before = ksample(base, frames=FRAMES, steps=2)
    with torch.inference_mode():
        clips = encode_clips(setup["vae"], base, setup["clip"], FRAMES, RESOLUTION)
        weights, losses = train_motion_lora(base, motion, clips, conditioning(21), rank=4, steps=30,
                                            learning_rate=5e-3, seed=0)
    return {"before": before, "sample_before": sample_before, "weights": weights, "losses": losses, "clips": clips}


def test_training_loss_decreases(core):
    losses = core["losses"]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    print(f"loss: first 10 % {first:.4f}, last 10 % {last:.4f}")
    assert core["clips"][0].shape == (FRAMES, 4, 8, 8)
    assert last < 0.9 * first, (first, last)


def test_frozen_weights_are_bit_identical_and_untouched(core, setup):
    base, motion = setup["base"], setup["motion"]
    unet_before, motion_before = core["before"]
    for before, after in ((unet_before, unet_state(base)), (motion_before, motion_state(motion))):
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before)
    # no gradients were kept, the original (inference) tensors are back, and the hooks are gone
    for module in (base.model.diffusion_model, motion.model):
        assert all(p.grad is None for p in module.parameters())
        assert all(p.is_inference() for p in module.parameters())
    assert all(not linear._forward_hooks for linear in temporal_attention_layers(motion.model).values())
    # the plain model still samples exactly as before (the motion layers ComfyUI injected for training are out)
    assert torch.equal(ksample(base, frames=FRAMES, steps=2), core["sample_before"])
    # the LoRA itself did learn (up starts at zero)
    assert max(up.abs().max().item() for up in core["weights"].up) > 1e-3


@pytest.fixture(scope="module")
def node_run(setup):
    base, motion = setup["base"], setup["motion"]
    with torch.inference_mode():
        out = TrainMotionLoRA().train(base, motion, setup["vae"], setup["clip"], conditioning(21), rank=4, steps=4,
                                      learning_rate=5e-3, frames=FRAMES, resolution=RESOLUTION, seed=1,
                                      save_name="zoom_trained")
    stack, curve = out["result"]
    return {"stack": stack, "curve": curve, "ui": out["ui"], "path": setup["folder"] / "zoom_trained.safetensors"}


def test_saved_file_has_the_released_key_format(node_run):
    saved = safetensors.torch.load_file(str(node_run["path"]))
    released = motion_lora_state_dict(SMALL, rank=4, dtype=torch.float32)
    assert saved.keys() == released.keys()
    assert all(saved[k].shape == released[k].shape and saved[k].dtype == torch.float32 for k in saved)
    assert not os.path.exists(str(node_run["path"]) + ".partial")
    with safetensors.safe_open(str(node_run["path"]), "pt") as f:
        assert "steps=4 rank=4" in f.metadata()["animatediff_trained"]


def test_history_tells_a_service_the_file_and_the_loss_of_every_step(node_run):
    ui = node_run["ui"]
    assert ui["motion_lora"] == ["zoom_trained.safetensors"]
    assert len(ui["loss"]) == 4 and all(isinstance(v, float) and math.isfinite(v) for v in ui["loss"])


def test_output_stack_is_what_the_motion_lora_node_loads(node_run):
    (entry,) = node_run["stack"]
    assert (entry.name, entry.path, entry.strength) == ("zoom_trained.safetensors", str(node_run["path"]), 1.0)
    assert "zoom_trained.safetensors" in folder_paths.get_filename_list(MOTION_LORAS)
    assert MotionLoRA().add("zoom_trained.safetensors", 1.0) == (node_run["stack"],)
    saved = safetensors.torch.load_file(str(node_run["path"]))
    assert entry.weights.keys() == saved.keys() and all(torch.equal(entry.weights[k], saved[k]) for k in saved)


def test_the_output_stays_the_trained_lora_when_a_later_run_saves_over_its_file(setup, tmp_path):
    """ComfyUI may keep the node's output (e.g. under --cache-lru) while another prompt trains under the same
    save_name; sampling with the kept output must still use the weights it trained."""
    base, motion = setup["base"], setup["motion"]

    def trained(seed):
        with torch.inference_mode():
            return TrainMotionLoRA().train(base, motion, setup["vae"], setup["clip"], conditioning(21), rank=2,
                                           steps=1, learning_rate=5e-2, frames=FRAMES, resolution=RESOLUTION,
                                           seed=seed, save_name="overwritten")["result"][0]

    def sample(stack):
        return ksample(apply_motion_model(base, motion, 1.0, "autoselect", stack), frames=FRAMES, steps=2)
    first = trained(seed=5)
    copy = tmp_path / "first.safetensors"
    copy.write_bytes((setup["folder"] / "overwritten.safetensors").read_bytes())
    second = trained(seed=6)
    from_copy = sample(add_to_stack(None, MotionLoRAEntry("first", str(copy), 1.0)))
    assert torch.equal(sample(first), from_copy)
    assert (sample(second) - from_copy).abs().max() > 0


def test_trained_lora_changes_the_sample_and_merges_its_delta(node_run, setup):
    base, motion = setup["base"], setup["motion"]
    plain = ksample(apply_motion_model(base, motion, 1.0, "autoselect"), frames=FRAMES, steps=2)
    with_lora_model = apply_motion_model(base, motion, 1.0, "autoselect", node_run["stack"])
    with_lora = ksample(with_lora_model, frames=FRAMES, steps=2)
    change = ((with_lora - plain).abs().mean() / plain.abs().mean()).item()
    print(f"mean |sample with LoRA - without| / mean |without| = {change:.4g}")
    assert change > 0.01  # a LoRA with no effect would give exactly 0
    # round trip: the motion module's patcher merges W + up @ down from the saved file
    saved = safetensors.torch.load_file(str(node_run["path"]))
    layer = "up_blocks.3.motion_modules.2.temporal_transformer.transformer_blocks.0.attention_blocks.1.processor.to_out"
    weight_key = layer.replace(".processor.to_out", ".to_out.0.weight")
    # the motion module's patcher is an additional model: loaded (and patched) only when named, as the sampler does
    comfy.model_management.load_models_gpu([with_lora_model, *with_lora_model.get_nested_additional_models()])
    merged = motion.model.state_dict()[weight_key].clone()
    comfy.model_management.unload_all_models()
    delta = saved[f"{layer}_lora.up.weight"] @ saved[f"{layer}_lora.down.weight"]
    expected = motion.model.state_dict()[weight_key] + delta
    assert delta.abs().max() > 1e-3
    torch.testing.assert_close(merged, expected, atol=1e-6, rtol=1e-5)


def test_loss_curve_is_an_image(node_run):
    curve = node_run["curve"]
    assert curve.shape == (1, 256, 512, 3) and curve.dtype == torch.float32
    assert 0 <= curve.min() and curve.max() <= 1
    blue = (curve[0, ..., 2] > 0.6) & (curve[0, ..., 0] < 0.3)
    assert blue.sum() > 100  # the moving-average line is drawn


def test_interrupt_saves_nothing_and_restores_everything(setup):
    base, motion = setup["base"], setup["motion"]
    path = setup["folder"] / "interrupted.safetensors"
    comfy.model_management.interrupt_current_processing(True)
    try:
        with torch.inference_mode(), pytest.raises(comfy.model_management.InterruptProcessingException):
            TrainMotionLoRA().train(base, motion, setup["vae"], setup["clip"], conditioning(21), rank=2, steps=50,
                                    learning_rate=1e-3, frames=FRAMES, resolution=RESOLUTION, seed=0,
                                    save_name="interrupted")
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert not path.exists() and not (setup["folder"] / "interrupted.safetensors.partial").exists()
    assert all(not linear._forward_hooks for linear in temporal_attention_layers(motion.model).values())
    assert all(p.is_inference() for p in base.model.diffusion_model.parameters())


def test_bad_inputs_are_explained(setup):
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete
    base, motion = setup["base"], setup["motion"]
    with torch.inference_mode():
        with pytest.raises(AnimateDiffError, match="fewer than frames"):
            encode_clips(setup["vae"], setup["base"], setup["clip"][:2], FRAMES, RESOLUTION)
        clips = [torch.zeros(FRAMES, 4, 8, 8)]
        # a prompt schedule's one embedding per frame, and ConditioningCombine's two entries: one caption only
        with pytest.raises(AnimateDiffError, match="positive holds a batch of 8 embeddings.*single CLIPTextEncode"):
            train_motion_lora(base, motion, clips, conditioning(21, batch=8), 2, 1, 1e-3, 0)
        with pytest.raises(AnimateDiffError, match="positive holds 2 conditionings.*single CLIPTextEncode"):
            train_motion_lora(base, motion, clips, conditioning(21) + conditioning(22), 2, 1, 1e-3, 0)
        (x0_model,) = ModelSamplingDiscrete().patch(base, "x0", False)
        with pytest.raises(AnimateDiffError, match="predicts X0 with ModelSamplingDiscrete sampling.*v-prediction"):
            train_motion_lora(x0_model, motion, clips, conditioning(21), 2, 1, 1e-3, 0)
        for name, error in [("../escape", "save_name"), ("x" * 300, "save_name is 300 bytes long")]:
            with pytest.raises(AnimateDiffError, match=error):
                TrainMotionLoRA().train(setup["base"], setup["motion"], setup["vae"], setup["clip"],
                                        conditioning(21), rank=2, steps=1, learning_rate=1e-3, frames=FRAMES,
                                        resolution=RESOLUTION, seed=0, save_name=name)
        images = setup["clip"].clone()
        images[3, 5, 5, 1] = float("nan")
        with pytest.raises(AnimateDiffError, match="reference_frames hold NaN"):
            encode_clips(setup["vae"], setup["base"], images, FRAMES, RESOLUTION)


def test_grey_and_rgba_frames_train_as_their_rgb(setup):
    """As Load Image gives a PNG with alpha or a greyscale one (the VAE takes three channels)."""
    def trained(frames):
        with torch.inference_mode():
            out = TrainMotionLoRA().train(setup["base"], setup["motion"], setup["vae"], frames, conditioning(21),
                                          rank=2, steps=1, learning_rate=1e-3, frames=FRAMES, resolution=RESOLUTION,
                                          seed=4, save_name="colours")
        return out["ui"]["loss"], safetensors.torch.load_file(str(setup["folder"] / "colours.safetensors"))

    def same(a, b):
        return a[0] == b[0] and a[1].keys() == b[1].keys() and all(torch.equal(a[1][k], b[1][k]) for k in a[1])
    rgb, grey = setup["clip"], setup["clip"][..., :1]
    assert same(trained(torch.cat([rgb, torch.rand_like(grey)], dim=-1)), trained(rgb))
    assert same(trained(grey), trained(grey.expand(-1, -1, -1, 3).contiguous()))


def test_camera_augment_takes_an_rgba_or_grey_still_as_its_rgb_and_names_an_empty_batch():
    still = still_image()
    def clip(image):
        return CameraAugment().augment(image, CameraMotion.PAN_LEFT, FRAMES, 0.5, RESOLUTION, RESOLUTION)[0]
    assert torch.equal(clip(torch.cat([still, torch.rand_like(still[..., :1])], dim=-1)), clip(still))
    grey = still[..., :1]
    assert torch.equal(clip(grey), clip(grey.expand(-1, -1, -1, 3)))
    with pytest.raises(AnimateDiffError, match="AnimateDiff_CameraAugment: the IMAGE batch holds no images"):
        clip(still[:0])


def test_a_diverging_run_stops_and_saves_nothing(setup):
    """At a learning rate of 1000 the loss overflows within a few steps: the run stops there, where it would
    have saved a MotionLoRA of NaNs."""
    path = setup["folder"] / "diverged.safetensors"
    with torch.inference_mode(), pytest.raises(AnimateDiffError, match=r"Training diverged at step \d+ of 50"):
        TrainMotionLoRA().train(setup["base"], setup["motion"], setup["vae"], setup["clip"], conditioning(21),
                                rank=2, steps=50, learning_rate=1000.0, frames=FRAMES, resolution=RESOLUTION,
                                seed=0, save_name="diverged")
    assert not path.exists()


def object_info():
    """The parts of /object_info that ui_to_api reads, from the node classes themselves."""
    import nodes as comfy_nodes
    mappings = {**comfy_nodes.NODE_CLASS_MAPPINGS, "AnimateDiff_CameraAugment": CameraAugment,
                "AnimateDiff_TrainMotionLoRA": TrainMotionLoRA, "AnimateDiff_LoadMotionModule": LoadMotionModule}
    info = {}
    for name, cls in mappings.items():
        types = cls.INPUT_TYPES()
        info[name] = {"input": types, "input_order": {k: list(v) for k, v in types.items() if k != "hidden"}}
    return info


def test_example_workflow_converts_to_the_expected_graph():
    workflow = json.loads((Path(__file__).resolve().parents[2] / "example_workflows" / "train_motionlora.json")
                          .read_text())
    prompt = ui_to_api(workflow, object_info())
    kinds = {node_id: node["class_type"] for node_id, node in prompt.items()}
    train = next(node["inputs"] for node in prompt.values() if node["class_type"] == "AnimateDiff_TrainMotionLoRA")
    source = lambda name: kinds[train[name][0]]  # noqa: E731
    assert (source("model"), source("vae"), source("motion_model"), source("positive"), source("reference_frames")) \
        == ("CheckpointLoaderSimple", "CheckpointLoaderSimple", "AnimateDiff_LoadMotionModule", "CLIPTextEncode",
            "AnimateDiff_CameraAugment")
    assert {k: v for k, v in train.items() if not isinstance(v, list)} == {
        "rank": 64, "steps": 500, "learning_rate": 1e-4, "frames": 16, "resolution": 256, "seed": 0,
        "save_name": "my_motion_lora"}
    augment = next(node["inputs"] for node in prompt.values() if node["class_type"] == "AnimateDiff_CameraAugment")
    assert kinds[augment["image"][0]] == "LoadImage"
    assert {k: v for k, v in augment.items() if k != "image"} == {"motion": "zoom_in", "frames": 16, "speed": 0.25,
                                                                  "width": 512, "height": 512}
    previews = [node["inputs"]["images"] for node in prompt.values() if node["class_type"] == "PreviewImage"]
    assert sorted((kinds[src], slot) for src, slot in previews) == [("AnimateDiff_CameraAugment", 0),
                                                                    ("AnimateDiff_TrainMotionLoRA", 1)]
    assert any(n["type"] == "Note" for n in workflow["nodes"])


def test_nodes_describe_every_input():
    for cls in (CameraAugment, TrainMotionLoRA):
        assert cls.DESCRIPTION and cls.CATEGORY == "AnimateDiff"
        assert all(spec[1].get("tooltip") for spec in cls.INPUT_TYPES()["required"].values())
    defaults = {k: v[1].get("default") for k, v in TrainMotionLoRA.INPUT_TYPES()["required"].items()}
    assert defaults == {"model": None, "motion_model": None, "vae": None, "reference_frames": None, "positive": None,
                        "rank": 64, "steps": 500, "learning_rate": 1e-4, "frames": 16, "resolution": 256, "seed": 0,
                        "save_name": "my_motion_lora"}


def test_lora_hooks_add_exactly_up_down_and_the_schedule_is_the_motion_modules(setup):
    from comfy.ldm.modules.diffusionmodules.util import make_beta_schedule

    from animatediff.lora.training import MotionLoRAWeights, alphas_cumprod
    # ComfyUI's own "sqrt_linear" (diffusers "linear") schedule, 0.00085 → 0.012, is the one trained with
    expected = torch.cumprod(1 - torch.as_tensor(make_beta_schedule("sqrt_linear", 1000, 0.00085, 0.012)), 0)
    torch.testing.assert_close(alphas_cumprod(), expected.double(), atol=1e-12, rtol=0)
    layers = temporal_attention_layers(setup["motion"].model)
    assert len(layers) == 21 * 2 * 4
    weights = MotionLoRAWeights(layers, rank=3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for up in weights.up:
            up.normal_()
    name = "mid_block.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.processor.to_out"
    linear, index = layers[name], weights.names.index(name)
    x = torch.randn(5, linear.in_features)
    with torch.no_grad():
        plain = linear(x)
        with weights.attached():
            hooked = linear(x)
        assert torch.equal(linear(x), plain)  # the hook is gone again
    torch.testing.assert_close(hooked, plain + x @ (weights.up[index] @ weights.down[index]).T, atol=1e-5, rtol=1e-5)


def test_training_sees_the_plain_motion_module_after_sampling_with_a_motion_lora(setup, fixtures_dir):
    """An earlier sample merged a MotionLoRA into the shared motion-module weights; training must load the
    motion module's own (plain) patcher, which puts the file's weights back."""
    base, motion = setup["base"], setup["motion"]
    with torch.inference_mode():
        from_file = motion_state(load_motion_model_file(fixtures_dir / "small" / "mm_v2.safetensors", "mm_v2"))

    def differing():
        state = motion.model.state_dict()
        return sum(not torch.equal(state[k], from_file[k]) for k in from_file)
    stack = add_to_stack(None, MotionLoRAEntry("zoom", str(fixtures_dir / "small" / "motion_lora_zoom.safetensors"),
                                               1.0))
    ksample(apply_motion_model(base, motion, 1.0, "autoselect", stack), frames=FRAMES, steps=1)
    assert differing() == 21 * 2 * 4  # the LoRA is merged in place while its clone stays loaded
    seen = []
    with torch.inference_mode():
        clips = encode_clips(setup["vae"], base, setup["clip"], FRAMES, RESOLUTION)
        train_motion_lora(base, motion, clips, conditioning(21), rank=2, steps=2, learning_rate=1e-3, seed=0,
                          on_step=lambda step, loss: seen.append(differing()))
    assert seen == [0, 0]


def test_fp8_stored_model_trains_as_its_fp32_twin(setup):
    """fp8 weights compute in ComfyUI's manual_cast_dtype: the same losses as fp32 weights of equal value."""
    config = comfy.supported_models.SD15({**TINY_SD15})
    config.set_inference_dtype(torch.float8_e4m3fn, torch.float32)
    cpu = torch.device("cpu")
    with torch.inference_mode():
        fp8 = comfy.model_patcher.ModelPatcher(config.get_model({}), load_device=cpu, offload_device=cpu)
        random_fill(fp8.model.diffusion_model, 0)
        twin = tiny_sd15()
        twin.model.diffusion_model.load_state_dict(fp8.model.diffusion_model.state_dict())
        assert fp8.model.get_dtype() == torch.float8_e4m3fn and fp8.model.manual_cast_dtype == torch.float32
        clips = encode_clips(setup["vae"], twin, setup["clip"], FRAMES, RESOLUTION)
        runs = [train_motion_lora(m, setup["motion"], clips, conditioning(21), rank=2, steps=2, learning_rate=1e-2,
                                  seed=0)[1] for m in (fp8, twin)]
    print("losses fp8, fp32:", runs)
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-5, atol=0)


@pytest.mark.parametrize("sampling, zsnr", [("v_prediction", False), ("v_prediction", True), ("eps", True)])
def test_loss_target_follows_the_models_prediction_type_and_schedule(setup, sampling, zsnr):
    """Step 0 (the LoRA's up starts at zero) against the model's raw output as ComfyUI itself reads it
    (apply_model's x0 estimate, undone with the model's own σ) and the target restated here:
    ε, or v = sqrt(ᾱ_t)·ε − sqrt(1−ᾱ_t)·x0, with ᾱ_t = 1/(1+σ_t²) of the motion module's linear betas."""
    import comfy.model_sampling
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete
    motion = setup["motion"]
    with torch.inference_mode():
        (model,) = ModelSamplingDiscrete().patch(setup["base"], sampling, zsnr)
        clips = encode_clips(setup["vae"], model, setup["clip"], FRAMES, RESOLUTION)
        context = conditioning(21)
        _, losses = train_motion_lora(model, motion, clips, context, rank=2, steps=1, learning_rate=1e-3, seed=4)

        patched = apply_motion_model(model, motion, 1.0, BetaSchedule.ANIMATEDIFF_LINEAR)
        comfy.model_management.load_models_gpu([patched, *patched.get_nested_additional_models()])
        ms = patched.get_model_object("model_sampling")
        assert ms.zsnr == zsnr and isinstance(ms, comfy.model_sampling.V_PREDICTION) == (sampling == "v_prediction")
        ((x0, t, noise),) = draws(clips, 1, 4)  # the step's clip, t and ε, as training draws them
        sigma = ms.sigmas[t]
        x_in = x0 + sigma * noise  # ComfyUI's noise_scaling; apply_model divides by sqrt(σ²+1)
        options = {**patched.model_options["transformer_options"], "wrappers": patched.wrappers, "cond_or_uncond": [0]}
        caption = context[0][0].expand(FRAMES, -1, -1)
        denoised = patched.model.apply_model(x_in, sigma.expand(FRAMES), c_crossattn=caption,
                                             transformer_options=options)
        alpha = 1 / (1 + sigma.double() ** 2)
        if sampling == "v_prediction":  # ComfyUI: x0̂ = x_in/(σ²+1) − v̂·σ/sqrt(σ²+1)
            output = (x_in / (sigma ** 2 + 1) - denoised) * (sigma ** 2 + 1) ** 0.5 / sigma
            target = alpha.sqrt() * noise - (1 - alpha).sqrt() * x0
        else:  # ComfyUI: x0̂ = x_in − ε̂·σ
            output, target = (x_in - denoised) / sigma, noise
        expected = ((output.double() - target.double()) ** 2).mean().item()
    print(f"t={t} ᾱ_t={alpha.item():.4f} step-0 loss {losses[0]:.6f}, restated {expected:.6f}")
    assert losses[0] == pytest.approx(expected, rel=1e-4)


def test_motion_layers_recompute_in_backward_for_the_same_gradients_and_fewer_saved_activations(setup):
    """Training runs each motion layer under activation checkpointing: backward recomputes what the layer would
    have saved. The loss and every LoRA gradient are bit-equal to keeping the activations; the bytes autograd
    keeps for backward (weights aside) shrink by the motion layers' share."""
    from animatediff.lora.training import MotionLoRAWeights, alphas_cumprod, diffusion_loss
    from animatediff.patching.schedule import trained_schedule
    from animatediff.patching.training import frozen, unet_of
    base, motion = setup["base"], setup["motion"]
    patched = apply_motion_model(base, motion, 1.0, trained_schedule(motion.spec))
    comfy.model_management.load_models_gpu([patched, *patched.get_nested_additional_models()])
    g = torch.Generator().manual_seed(5)
    x0, noise = torch.randn(2, FRAMES, 4, 16, 16, generator=g)
    context = torch.randn(1, 77, 768, generator=g)
    runs = {}
    with torch.inference_mode(False), torch.enable_grad():
        weights = MotionLoRAWeights(temporal_attention_layers(motion.model), 4, g)
        with torch.no_grad():
            for up in weights.up:
                up.normal_(generator=g)  # so gradients reach every down half too
        with frozen(patched.model.diffusion_model, motion.model), weights.attached():
            for recompute in (False, True):
                with KeptForBackward(patched.model.diffusion_model, motion.model, weights) as kept:
                    loss = diffusion_loss(unet_of(patched, context, recompute=recompute), x0, 500, noise,
                                          alphas_cumprod(), "epsilon")
                loss.backward()
                runs[recompute] = (loss.detach(), [p.grad for p in weights.parameters()], kept.bytes)
                weights.zero_grad(set_to_none=True)
    (kept_loss, kept_grads, kept_bytes), (loss, grads, recomputed_bytes) = runs[False], runs[True]
    print(f"saved for backward: {kept_bytes / 2**20:.1f} MiB kept, {recomputed_bytes / 2**20:.1f} MiB recomputing")
    assert torch.equal(loss, kept_loss)
    assert len(grads) == 2 * 21 * 2 * 4 and all(torch.equal(a, b) for a, b in zip(grads, kept_grads))
    assert all(a.abs().sum() > 0 for a in grads)
    assert recomputed_bytes < 0.8 * kept_bytes  # 0.73 here; 0.57 for the full-size v2 in SD1.5 at 128²
