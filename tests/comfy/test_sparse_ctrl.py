"""SparseCtrl inside a real in-process ComfyUI (CPU, tiny SD1.5 UNet, small SparseCtrl files in the released
layout from scripts/make_fixtures.py).

Where the file's weights land, the encoder against a restatement of SparseCtrl's forward (ComfyUI's spatial
blocks, the reference temporal math), the condition each call gets (hints at the chosen frames, zeros and a
mask elsewhere, per context window), sampling, and the errors users can make.
"""
import comfy.context_windows
import comfy.model_management
import folder_paths
import pytest
import safetensors.torch
import torch
from comfy.ldm.modules.diffusionmodules.util import timestep_embedding

import reference
from comfy_env import conditioning, ksample, tiny_vae, unet_state
from animatediff.errors import AnimateDiffError, ModelFileError
from animatediff.nodes.context import ContextWindows
from animatediff.nodes.sparse_ctrl import ApplySparseCtrl, LoadSparseCtrl
from animatediff.patching.motion import apply_motion_model
from animatediff.patching.sparse_ctrl import load_sparse_ctrl_model
from animatediff.sampling.context import windows

FILES = {"rgb": "sparsectrl_rgb.safetensors", "scribble": "sparsectrl_scribble.ckpt"}
SD15_LATENT_SCALE = 0.18215


def file_weights(path):
    if path.suffix == ".safetensors":
        return safetensors.torch.load_file(str(path))
    return torch.load(path, weights_only=True)["controlnet"]


@pytest.fixture(scope="module")
def small(fixtures_dir):
    folder_paths.add_model_folder_path("controlnet", str(fixtures_dir / "small"))
    return fixtures_dir / "small"


@pytest.fixture(scope="module")
def sparse(small):
    with torch.inference_mode():
        return {kind: LoadSparseCtrl().load(name)[0] for kind, name in FILES.items()}


def images(count, size=64, seed=0):
    """An IMAGE batch (count, size, size, 3) in [0, 1]."""
    return torch.rand(count, size, size, 3, generator=torch.Generator().manual_seed(seed))


# Where the released names put each weight: SparseControlNetModel's (diffusers) name → ComfyUI's ControlNet.
PLACES = {
    "conv_in.weight": "input_blocks.0.0.weight",
    "time_embedding.linear_2.weight": "time_embed.2.weight",
    "down_blocks.1.resnets.0.conv_shortcut.weight": "input_blocks.4.0.skip_connection.weight",
    "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k.weight":
        "input_blocks.5.1.transformer_blocks.0.attn2.to_k.weight",
    "down_blocks.2.downsamplers.0.conv.weight": "input_blocks.9.0.op.weight",
    "down_blocks.3.resnets.1.time_emb_proj.bias": "input_blocks.11.0.emb_layers.1.bias",
    "mid_block.resnets.1.conv2.weight": "middle_block.2.out_layers.3.weight",
    "mid_block.attentions.0.proj_out.weight": "middle_block.1.proj_out.weight",
    "controlnet_down_blocks.11.weight": "zero_convs.11.0.weight",
    "controlnet_mid_block.bias": "middle_block_out.0.bias",
}
HINT_PLACES = {
    "rgb": {"controlnet_cond_embedding.weight": "input_hint_block.0.weight"},
    "scribble": {"controlnet_cond_embedding.conv_in.weight": "input_hint_block.0.weight",
                 "controlnet_cond_embedding.blocks.3.bias": "input_hint_block.8.bias",
                 "controlnet_cond_embedding.conv_out.weight": "input_hint_block.14.weight"},
}


@pytest.mark.parametrize("kind", FILES)
def test_every_weight_of_the_file_lands_where_the_format_says(sparse, small, kind):
    sd = file_weights(small / FILES[kind])
    model = sparse[kind].control_model
    control, motion = model.control.state_dict(), model.motion.state_dict()
    for name, place in {**PLACES, **HINT_PLACES[kind]}.items():
        assert torch.equal(control[place], sd[name]), name
    mm = "down_blocks.3.motion_modules.1.temporal_transformer."
    for suffix in ("proj_out.weight", "transformer_blocks.0.attention_blocks.0.to_v.weight",
                   "transformer_blocks.0.norms.0.bias"):
        assert torch.equal(motion[mm + suffix], sd[mm + suffix])
    # every tensor of the file is used once and nothing else is loaded (the tables are built, as the original
    # code builds them: it drops the file's)
    def fingerprint(tensors):
        return sorted((tuple(t.shape), round(float(t.double().sum()), 6)) for t in tensors)
    file_tensors = [t for k, t in sd.items() if not k.endswith("pos_encoder.pe")]
    loaded = list(control.values()) + [t for k, t in motion.items() if not k.endswith("pos_encoder.pe")]
    assert fingerprint(loaded) == fingerprint(file_tensors)
    tables = [t for k, t in motion.items() if k.endswith("pos_encoder.pe")]
    assert len(tables) == 8 and all(torch.allclose(t, reference.sinusoidal_table(32, t.shape[-1]), atol=1e-6)
                                    for t in tables)
    assert model.latent_hints == (kind == "rgb") and model.hint_channels == (4 if kind == "rgb" else 3)


def restated_forward(model, sd, x, hint, timesteps, context, frames):
    """SparseCtrl's forward as the original states it: the noisy input zeroed, conv_in + the condition's
    embedding, each down layer followed by its motion module (reference math, the file's weights), a zero
    conv on every down output, the mid block without a motion module."""
    net = model.control
    emb = net.time_embed(timestep_embedding(timesteps, net.model_channels).to(x.dtype))
    h = net.input_blocks[0](torch.zeros_like(x), emb, context) + net.input_hint_block(hint, emb, context)
    outputs = [net.zero_convs[0](h, emb, context)]
    for index in range(1, len(net.input_blocks)):
        h = net.input_blocks[index](h, emb, context)
        block, layer = divmod(index - 1, 3)
        if layer < 2:  # not a downsampler
            h = reference.motion_module(sd, f"down_blocks.{block}.motion_modules.{layer}", h, frames)
        outputs.append(net.zero_convs[index](h, emb, context))
    middle = net.middle_block_out(net.middle_block(h, emb, context), emb, context)
    return {"middle": [middle], "output": outputs}


def assert_close(got, want, rel=1e-5):
    for key in ("middle", "output"):
        assert len(got[key]) == len(want[key])
        for a, b in zip(got[key], want[key]):
            assert (a - b).abs().max() <= rel * b.abs().max(), key


@pytest.mark.parametrize("kind", FILES)
def test_the_encoder_is_sparsectrls_forward_and_never_reads_the_noisy_latents(sparse, small, kind):
    model = sparse[kind].control_model
    sd = {k: v.float() for k, v in file_weights(small / FILES[kind]).items()}
    frames, g = 6, torch.Generator().manual_seed(1)
    x = torch.randn(2 * frames, 4, 8, 8, generator=g)  # cond and uncond: two videos
    size = 8 if kind == "rgb" else 64
    hint = torch.randn(2 * frames, model.hint_channels + 1, size, size, generator=g)
    timesteps = torch.full((2 * frames,), 700.0)
    context = torch.randn(2 * frames, 77, 768, generator=g)
    with torch.inference_mode():
        got = model(x, hint, timesteps, context, video_frames=frames)
        assert_close(got, restated_forward(model, sd, x, hint, timesteps, context, frames))
        again = model(torch.zeros_like(x), hint, timesteps, context, video_frames=frames)
    for a, b in zip(got["output"] + got["middle"], again["output"] + again["middle"]):
        assert torch.equal(a, b)


def applied(sparse_ctrl, hint_images, indices, strength=1.0, vae=None, start_percent=0.0, end_percent=1.0):
    positive, negative = ApplySparseCtrl().apply(conditioning(1), conditioning(2), sparse_ctrl, hint_images,
                                                 indices, strength, start_percent, end_percent, vae)
    return positive[0][1]["control"], negative[0][1]["control"]


def expected_condition(hints, frames_with_hints, rows):
    """Rows for the call's frames: the frame's hint and a mask of one where it has one, zeros elsewhere."""
    out = torch.zeros(len(rows), hints.shape[1] + 1, *hints.shape[2:])
    for row, frame in enumerate(rows):
        if frame in frames_with_hints:
            out[row, :-1] = hints[frames_with_hints.index(frame)]
            out[row, -1] = 1.0
    return out


@pytest.mark.parametrize("kind", FILES)
@pytest.mark.parametrize("window", [None, (list(range(4, 10)), 10)])
def test_each_call_gets_its_frames_hints_zeros_elsewhere_and_the_mask(base, sparse, kind, window):
    vae = tiny_vae() if kind == "rgb" else None
    pictures = images(3, seed=2)
    positive, negative = applied(sparse[kind], pictures, "0, 5, -1", strength=0.7, vae=vae)
    assert positive is negative  # one control for both, as ComfyUI's Apply ControlNet does
    rows, total = window or (list(range(8)), 8)
    frames_with_hints = [0, 5, total - 1]
    if kind == "rgb":  # SD1.5 latents, scaled as the model takes them
        hints = vae.encode(pictures) * SD15_LATENT_SCALE
    else:
        hints = pictures.movedim(-1, 1)  # already the size of 8×8 latents: nothing to resize
    model = sparse[kind].control_model
    sampling = base.model.model_sampling
    positive.pre_run(base.model, lambda p: sampling.percent_to_sigma(p))
    sigma = torch.full((2 * len(rows),), 3.0)
    x, context = torch.randn(2 * len(rows), 4, 8, 8), torch.randn(2 * len(rows), 77, 768)
    options = {"ad_params": {"sub_idxs": rows, "full_length": total}} if window else {}
    with torch.inference_mode():
        got = positive.get_control(x, sigma, {"c_crossattn": context}, 2, options)
        condition = expected_condition(hints, frames_with_hints, rows).repeat(2, 1, 1, 1)
        want = model(x, condition, sampling.timestep(sigma), context, video_frames=len(rows))
    positive.cleanup()
    assert_close(got, {k: [0.7 * t for t in v] for k, v in want.items()}, rel=1e-4 if kind == "rgb" else 1e-6)


def test_sampling_with_sparsectrl_is_steered_repeatable_and_leaves_the_base_clean(base, sparse, motion):
    comfy.model_management.unload_all_models()
    before = unet_state(base)
    animated = apply_motion_model(base, motion["v3"], 1.0, "autoselect")
    frames, picture = 12, images(1, seed=4)
    positive, negative = ApplySparseCtrl().apply(conditioning(11), conditioning(12), sparse["scribble"], picture,
                                                 "0", 1.0, 0.0, 1.0)
    windowed = ContextWindows().apply(animated, 8, 2, "uniform_standard", "pyramid", 1, False)[0]
    guided = ksample(windowed, frames=frames, positive=positive, negative=negative)
    assert torch.isfinite(guided).all()
    assert torch.equal(guided, ksample(windowed, frames=frames, positive=positive, negative=negative))
    plain = ksample(windowed, frames=frames)
    assert (guided - plain).abs().max() > 1e-2 * plain.abs().max()
    assert positive[0][1]["control"].encoded == {}  # nothing of it is held past sampling
    comfy.model_management.unload_all_models()
    assert all(torch.equal(before[k], v) for k, v in unet_state(base).items())


def test_in_context_windows_each_window_gets_the_images_of_its_own_frames(base, sparse, motion):
    """Real windowed sampling, the condition seen by the SparseCtrl's model recorded with a forward hook."""
    animated = apply_motion_model(base, motion["v3"], 1.0, "autoselect")
    windowed = ContextWindows().apply(animated, 8, 2, "uniform_standard", "pyramid", 1, False)[0]
    positive, negative = ApplySparseCtrl().apply(conditioning(11), conditioning(12), sparse["scribble"],
                                                 images(2, seed=6), "3, -1", 1.0, 0.0, 1.0)
    seen = []
    hook = sparse["scribble"].control_model.register_forward_hook(
        lambda module, args, kwargs, out: seen.append((kwargs["hint"], kwargs["video_frames"])), with_kwargs=True)
    try:
        ksample(windowed, frames=20, steps=1, positive=positive, negative=negative)
    finally:
        hook.remove()
    plan = windows("uniform_standard", 20, 8, 2)
    assert len(seen) == len(plan) and len(plan) > 2
    pictures = images(2, seed=6).movedim(-1, 1)
    for (hint, frames), window in zip(seen, plan):
        assert frames == 8 and hint.shape == (16, 4, 64, 64)  # cond and uncond, 8 frames each
        for row, frame in enumerate(window * 2):
            picture = {3: pictures[0], 19: pictures[1]}.get(frame)
            assert torch.equal(hint[row, 3], torch.full((64, 64), float(picture is not None)))
            assert torch.equal(hint[row, :3], torch.zeros(3, 64, 64) if picture is None else picture)


def test_more_frames_than_its_table_without_context_windows_is_refused_with_advice(base, sparse, motion):
    animated = apply_motion_model(base, motion["v3"], 1.0, "autoselect")
    positive, negative = ApplySparseCtrl().apply(conditioning(11), conditioning(12), sparse["scribble"],
                                                 images(1), "0", 1.0, 0.0, 1.0)
    with pytest.raises(AnimateDiffError, match="33 frames > 32 SparseCtrl supports: add AnimateDiff_ContextWindows"):
        ksample(animated, frames=33, steps=1, cfg=1.0, positive=positive, negative=negative)


def test_mistakes_in_the_apply_node_are_named(sparse):
    with pytest.raises(AnimateDiffError, match="got 2 images for 1 frame_indices"):
        applied(sparse["scribble"], images(2), "0")
    with pytest.raises(AnimateDiffError, match="whole numbers separated by commas"):
        applied(sparse["scribble"], images(1), "first")
    with pytest.raises(AnimateDiffError, match="connect the checkpoint's VAE"):
        applied(sparse["rgb"], images(1), "0")
    with pytest.raises(AnimateDiffError, match=r"images have shape \(1, 1, 64, 64, 3\), not an IMAGE batch"):
        applied(sparse["scribble"], images(1)[None], "0")
    with pytest.raises(AnimateDiffError, match="holds no images"):
        applied(sparse["scribble"], images(1)[:0], "0")
    # ComfyUI's Apply ControlNet takes it and guides no step
    with pytest.raises(AnimateDiffError, match=r"start_percent \(0.9\) is after end_percent \(0.1\)"):
        applied(sparse["scribble"], images(1), "0", start_percent=0.9, end_percent=0.1)


def test_grey_sketches_and_rgba_pictures_are_taken_as_their_rgb(sparse):
    """As ComfyUI's image nodes give them (a mask turned image, a PNG with alpha)."""
    def hint(picture):
        return applied(sparse["scribble"], picture, "0")[0].cond_hint_original
    grey, rgb = images(1, seed=3)[..., :1], images(1, seed=3)
    assert torch.equal(hint(grey), hint(grey.repeat(1, 1, 1, 3)))
    assert torch.equal(hint(torch.cat([rgb, torch.rand_like(grey)], dim=-1)), hint(rgb))


@pytest.mark.parametrize("indices, problem", [("0, 6", r"frame_indices \[6\] lie outside the 6 frames"),
                                              ("0, -7", r"\[-7\] lie outside"),
                                              ("1, -5", "name the same frame twice")])
def test_frames_the_video_does_not_have_are_refused_when_sampling(base, sparse, indices, problem):
    control, _ = applied(sparse["scribble"], images(2), indices)
    control.pre_run(base.model, lambda p: base.model.model_sampling.percent_to_sigma(p))
    with pytest.raises(AnimateDiffError, match=problem), torch.inference_mode():
        control.get_control(torch.zeros(6, 4, 8, 8), torch.full((6,), 3.0), {"c_crossattn": torch.zeros(6, 77, 768)},
                            1, {})


def test_comfyuis_core_context_windows_are_refused_with_ours_named(base, sparse):
    """The core node's windows give a window's frames but not the video's length: refused, not guessed."""
    control, _ = applied(sparse["scribble"], images(1), "-1")
    control.pre_run(base.model, lambda p: base.model.model_sampling.percent_to_sigma(p))
    window = comfy.context_windows.IndexListContextWindow([4, 5, 6, 7])
    with pytest.raises(AnimateDiffError, match="core Context Windows node: use AnimateDiff_ContextWindows"), \
            torch.inference_mode():
        control.get_control(torch.zeros(4, 4, 8, 8), torch.full((4,), 3.0), {"c_crossattn": torch.zeros(4, 77, 768)},
                            1, {"context_window": window})


def test_files_that_are_not_sparsectrls_are_refused_with_what_they_are(small, tmp_path):
    folder_paths.add_model_folder_path("controlnet", str(tmp_path))
    (tmp_path / "motion.safetensors").write_bytes((small / "mm_v3.safetensors").read_bytes())
    with pytest.raises(ModelFileError, match="is a motion module, not a SparseCtrl.*AnimateDiff_LoadMotionModule"):
        LoadSparseCtrl().load("motion.safetensors")
    plain = {k: v for k, v in file_weights(small / FILES["scribble"]).items() if ".motion_modules." not in k}
    safetensors.torch.save_file(plain, str(tmp_path / "controlnet.safetensors"))
    with pytest.raises(ModelFileError,
                       match="is a ControlNet in diffusers' format, not a SparseCtrl.*core Load ControlNet Model"):
        LoadSparseCtrl().load("controlnet.safetensors")
    damaged = {k: v for k, v in file_weights(small / FILES["rgb"]).items() if not k.startswith("controlnet_mid")}
    safetensors.torch.save_file(damaged, str(tmp_path / "damaged.safetensors"))
    with pytest.raises(ModelFileError, match="2 weights are missing"):
        LoadSparseCtrl().load("damaged.safetensors")


def test_a_full_size_rgb_sparsectrl_loads_with_sd15s_shapes_and_runs_its_forward(fixtures_dir):
    """The released size (SD1.5: 320 channels, 8 heads, 768-wide text), in fp16."""
    with torch.inference_mode():
        model, _, _ = load_sparse_ctrl_model(fixtures_dir / "sparsectrl_rgb.safetensors")
    sd = safetensors.torch.load_file(str(fixtures_dir / "sparsectrl_rgb.safetensors"))
    sd = {k: v.float() for k, v in sd.items()}
    assert sum(p.numel() for p in model.control.parameters()) + sum(
        p.numel() for n, p in model.motion.named_parameters()) == sum(
        v.numel() for k, v in sd.items() if not k.endswith("pos_encoder.pe"))
    heads = [(b[1].transformer_blocks[0].attn1.heads, b[1].transformer_blocks[0].attn1.dim_head)
             for b in (model.control.input_blocks[i] for i in (1, 4, 7))]
    assert heads == [(8, 40), (8, 80), (8, 160)]
    assert [model.motion.down_blocks[i].motion_modules[0].channels for i in range(4)] == [320, 640, 1280, 1280]
    frames, g = 3, torch.Generator().manual_seed(5)
    x, hint = torch.randn(frames, 4, 8, 8, generator=g), torch.randn(frames, 5, 8, 8, generator=g)
    timesteps, context = torch.full((frames,), 500.0), torch.randn(frames, 77, 768, generator=g)
    with torch.inference_mode():
        model.float()
        got = model(x, hint, timesteps, context, video_frames=frames)
        assert_close(got, restated_forward(model, sd, x, hint, timesteps, context, frames), rel=1e-4)


@pytest.mark.parametrize("name", ["sparsectrl_rgb.safetensors", "sparsectrl_scribble.ckpt"])
def test_the_layout_files_are_checked_against_is_comfyuis_read_off_torchs_own_layers(fixtures_dir, name):
    """Newer ComfyUIs' layers make their weights only when loaded (dynamic VRAM), so the expected layout comes from
    torch's own layers in ComfyUI's ControlNet: here it is the one ComfyUI's ops give."""
    import comfy.ops
    from animatediff.motion_module.formats import MOTION_KEY, read_state_dict
    from animatediff.patching.sparse_ctrl import PLAIN_OPS, _control_net, _unet_config
    spatial = {k: v for k, v in read_state_dict(fixtures_dir / "small" / name).items() if not MOTION_KEY.match(k)}
    config, latent_hints = _unet_config(spatial, name), "controlnet_cond_embedding.weight" in spatial
    with torch.device("meta"):
        nets = [_control_net(config, 5 if latent_hints else 3, latent_hints, ops)
                for ops in (PLAIN_OPS, comfy.ops.manual_cast)]
    plain, comfys = ({k: v.shape for k, v in net.state_dict().items()} for net in nets)
    assert plain == comfys and len(plain) > 300
