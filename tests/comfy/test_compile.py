"""Under ComfyUI's torch.compile wrapper (what the core TorchCompileModel node sets), the patched UNet traces
into graphs that give the eager model's numbers, with no graph break."""
import comfy.ldm.modules.attention as comfy_attention
import pytest
import torch
import torch._dynamo
from comfy_api.torch_helpers import set_torch_compile_wrapper

from comfy_env import ksample
from animatediff.patching.motion import apply_motion_model


class CapturingBackend:
    """A torch.compile backend that records every graph dynamo captures and runs it as it is."""

    def __init__(self):
        self.graphs = []

    def __call__(self, graph_module, example_inputs):
        self.graphs.append(graph_module)
        return graph_module.forward

    def motion_ops(self) -> int:
        """Captured operations that come from the motion module's code."""
        return sum("motion_module/layers.py" in str(node.meta.get("stack_trace", ""))
                   for g in self.graphs for node in g.graph.nodes)


def spatial_attention_as_on_a_gpu(model):
    """On a CPU ComfyUI's spatial attention asks psutil for free memory, which dynamo cannot trace; on a GPU it
    picks PyTorch's SDPA. The core attention override makes this CPU run take the GPU's path."""
    def use_sdpa(func, *args, **kwargs):
        return comfy_attention.attention_pytorch(*args, **kwargs)
    model.model_options["transformer_options"]["optimized_attention_override"] = use_sdpa
    return model


# v1 at two frame counts: its GroupNorm hooks read the count the wrapper noted, which a recompile must not freeze
@pytest.mark.parametrize("version,frame_counts", [("v1", (16, 8)), ("v2", (16,))])
def test_compiled_sampling_matches_eager_with_no_break_in_the_motion_modules(base, motion, version, frame_counts):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    eager = spatial_attention_as_on_a_gpu(apply_motion_model(base, motion[version], 1.0, "autoselect"))
    compiled = eager.clone()
    backend = CapturingBackend()
    set_torch_compile_wrapper(model=compiled, backend=backend)

    for frames in frame_counts:
        expected = ksample(eager, frames=frames, steps=2)
        got = ksample(compiled, frames=frames, steps=2)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

    assert backend.motion_ops() > 0, "the motion modules ran outside every captured graph"
    assert dict(torch._dynamo.utils.counters["graph_break"]) == {}


def test_in_context_windows_an_effect_mask_pia_and_cameractrl_do_not_recompile_per_window(base, motion, fixtures_dir):
    """Their per-window tensors are made outside the compiled UNet: one graph serves every window."""
    from animatediff.nodes.camera_ctrl import ApplyCameraCtrl
    from animatediff.nodes.context import ContextWindows
    from animatediff.nodes.image_to_video import PIAImage
    from animatediff.nodes.motion import ApplyMotionModule
    from animatediff.patching.camera_ctrl import load_camera_ctrl_file
    from animatediff.patching.motion import load_motion_model_file
    from animatediff.sampling.camera import camera_motion
    camera = load_camera_ctrl_file(fixtures_dir / "small" / "cameractrl.safetensors", "cameractrl.safetensors")
    pia = load_motion_model_file(fixtures_dir / "small" / "mm_pia.ckpt", "mm_pia.ckpt")
    picture = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))}
    masked = ApplyMotionModule().apply(base, motion["v2"], None, 1.0, "autoselect", 0.7, torch.rand(24, 64, 64))[0]
    with_picture = PIAImage().apply(ApplyMotionModule().apply(base, pia, None, 1.0, "autoselect")[0], picture,
                                    "moderate motion", 2)[0]
    with_camera = ApplyCameraCtrl().apply(ApplyMotionModule().apply(base, motion["v3"], None, 1.0, "autoselect")[0],
                                          camera, camera_motion("pan left", 24), 1.0)[0]
    for model in (masked, with_picture, with_camera):
        torch._dynamo.reset()
        eager = spatial_attention_as_on_a_gpu(ContextWindows().apply(model, 8, 2, "uniform_standard", "pyramid", 1,
                                                                     False)[0])
        compiled = eager.clone()
        backend = CapturingBackend()
        set_torch_compile_wrapper(model=compiled, backend=backend)
        torch.testing.assert_close(ksample(compiled, frames=24, steps=2), ksample(eager, frames=24, steps=2),
                                   rtol=1e-5, atol=1e-5)
        assert len(backend.graphs) == 1 and backend.motion_ops() > 0


def test_benchmark_row_with_the_module_blocks_compiled_matches_eager_and_puts_the_blocks_back(base, motion):
    """scripts/bench_compiled.py's row for GPUs (the module's transformer blocks compiled, the image model eager),
    here in the packed layout a GPU runs, with a backend that runs the captured graphs as they are."""
    from unittest import mock

    from bench_compiled import fused_blocks_overhead

    from animatediff.motion_module import layers, sequences
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    backend = CapturingBackend()
    with mock.patch.object(layers, "sequences_for", sequences.PackedSequences):
        row = fused_blocks_overhead(base, motion["v2"], frames=4, latent=8, rounds=1, backend=backend)

    assert backend.motion_ops() > 0, "no block ran compiled"
    assert row["relative_difference"] < 1e-6 and row["with_s"] > 0 and row["without_s"] > 0
    blocks = [m for m in motion["v2"].model.modules() if isinstance(m, layers.TemporalTransformerBlock)]
    assert blocks and all("forward" not in vars(block) for block in blocks)
