"""The benchmark's torch.compile rows (GPU only: inductor on a CPU spends minutes building C++).

- Both models compiled, as the core TorchCompileModel node does: what a user gets today.
- Only the motion module's transformer blocks compiled, the image model eager: inductor fuses the blocks' passes
  over the tokens (layer norms, positional and residual adds, GEGLU's gelu and product) into few kernels, and
  leaves the matrix products and attention to the same libraries as eager. Not a feature: the measurement that
  says whether fusing those passes would bring the module to its FLOP floor, before anyone writes fused kernels.
"""
import torch
from bench_module import timed
from bench_unet import interleaved_seconds, unet_call


def compiled_overhead(base, motion, frames, latent, rounds):
    """The UNet call under ComfyUI's torch.compile wrapper, as the core TorchCompileModel node (inductor) sets it on
    both models, with the module and without; also the first call of each (the compile) and how far the compiled
    output is from the eager one."""
    from comfy_api.torch_helpers import set_torch_compile_wrapper

    from animatediff.patching.motion import apply_motion_model
    eager = apply_motion_model(base, motion, 1.0, "autoselect")
    runs = {"with": eager.clone(), "without": base.clone()}
    first_call_s = {}
    for name, patcher in runs.items():
        set_torch_compile_wrapper(model=patcher, backend="inductor")
        first_call_s[name] = timed(unet_call(patcher, frames, latent))
    for patcher in runs.values():  # untimed: a module's first ejection can cost one recompile
        unet_call(patcher, frames, latent)()
    seconds = interleaved_seconds(runs, frames, latent, rounds)
    expected, got = unet_call(eager, frames, latent)().float(), unet_call(runs["with"], frames, latent)().float()
    return compiled_row(motion, latent, seconds, expected, got, with_first_call_s=first_call_s["with"],
                        without_first_call_s=first_call_s["without"])


def fused_blocks_overhead(base, motion, frames, latent, rounds, backend="inductor"):
    """The UNet call, eager, with each of the module's transformer blocks compiled (static shapes: one graph per
    channel count and size, 4 in SD1.5), against the image model alone; also the first call (the compiles) and the
    output's distance from the all-eager call. The blocks are restored before it returns."""
    from animatediff.motion_module.layers import TemporalTransformerBlock
    from animatediff.patching.motion import apply_motion_model
    model = apply_motion_model(base, motion, 1.0, "autoselect")
    blocks = [m for m in motion.model.modules() if isinstance(m, TemporalTransformerBlock)]
    expected = unet_call(model, frames, latent)().float()
    try:
        for block in blocks:
            block.forward = torch.compile(block.forward, backend=backend, dynamic=False, fullgraph=True)
        first_call_s = timed(unet_call(model, frames, latent))
        got = unet_call(model, frames, latent)().float()
        seconds = interleaved_seconds({"with": model, "without": base}, frames, latent, rounds)
    finally:
        for block in blocks:
            del block.forward  # the instance attribute; the class's forward shows again
    return compiled_row(motion, latent, seconds, expected, got, with_first_call_s=first_call_s)


def compiled_row(motion, latent, seconds, expected, got, **first_calls):
    """A row of the report: seconds per call with and without the module, the first calls (the compiles), and how
    far the compiled output is from the eager one."""
    a, b = seconds["with"], seconds["without"]
    return {"version": motion.spec.version, "latent": latent, "with_s": a, "without_s": b, "ratio": a / b,
            **first_calls, "relative_difference": float((got - expected).norm() / expected.norm())}


def compiled_rows(base, motion, frames, latent, rounds):
    """(report key, row) of each compiled row as soon as it is measured: each compiles for a minute or more."""
    yield "compiled", compiled_overhead(base, motion, frames, latent, rounds)
    yield "fused_blocks", fused_blocks_overhead(base, motion, frames, latent, rounds)
