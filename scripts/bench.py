"""Benchmark: motion-module overhead vs the FLOP floor, memory vs frames, load time, one-module speed, and
MotionLoRA training's memory.

    python scripts/bench.py [--quick] [--compiled-only] [--out docs/bench]

Full SD1.5 architecture with the random fixtures, on the embedded host, in this process (CPU, or CUDA when
present). Ratios are measured interleaved (A B A B …) and reported as medians, because these machines are
shared and noisy; absolute seconds are only meaningful on a GPU. Writes bench.json and bench.md.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import safetensors
import safetensors.torch
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_module import module_micro  # noqa: E402
from bench_report import markdown, save  # noqa: E402
from bench_training import training_memory  # noqa: E402
from bench_unet import (PACK, interleaved_seconds, load_as_sampling_does, load_unet, setup_comfy,  # noqa: E402
                        unet_call)
from make_fixtures import fixtures_dir  # noqa: E402
from operation_costs import CARDS, OperationCosts  # noqa: E402

VERSIONS = ("v1", "v2", "v3")
MOTION_FILE = fixtures_dir() / "mm_v2.safetensors"


def overhead(base, motion, frames, latent, rounds):
    """Median seconds per UNet call with and without the module, and the FLOP floor: the ratio of the two
    calls' FLOPs (torch's formulas), counted during the warm-up calls, for the original math: one attention per
    sequence of frames (on a GPU, packed rows also compute the scores their mask drops)."""
    from unittest import mock

    from animatediff.motion_module import layers, sequences
    from animatediff.patching.motion import apply_motion_model
    runs = {"with": apply_motion_model(base, motion, 1.0, "autoselect"), "without": base}
    flops = {}
    for name, patcher in runs.items():
        with OperationCosts() as costs, mock.patch.object(layers, "sequences_for", sequences.StridedSequences):
            unet_call(patcher, frames, latent)()
        flops[name] = costs.flops
    seconds = interleaved_seconds(runs, frames, latent, rounds)
    a, b = seconds["with"], seconds["without"]
    return {"with_s": a, "without_s": b, "ratio": a / b, "flop_floor": flops["with"] / flops["without"]}


def roofline(base, motions, frames, latent):
    """The ratio each card's spec-sheet peaks allow when the UNet runs one operation at a time, each at the slower
    of its FLOP and its byte limit: costed on fake tensors (nothing computed), as a GPU runs the call (fp16,
    packed temporal attention, PyTorch's SDPA for the spatial attention too)."""
    from unittest import mock

    import comfy.ldm.modules.attention
    from torch._subclasses.fake_tensor import FakeTensorMode

    from animatediff.motion_module import layers, sequences
    from animatediff.patching.motion import apply_motion_model

    def sdpa(func, *args, **kwargs):
        return comfy.ldm.modules.attention.attention_pytorch(*args, **kwargs)

    runs = {"without": base, **{v: apply_motion_model(base, m, 1.0, "autoselect") for v, m in motions.items()}}
    costs = {}
    for name, patcher in runs.items():
        patcher = patcher.clone()
        patcher.model_options["transformer_options"]["optimized_attention_override"] = sdpa
        call = unet_call(patcher, frames, latent)  # real: it loads the models and makes the inputs
        with FakeTensorMode(allow_non_fake_inputs=True), OperationCosts() as costs[name], \
                mock.patch.object(layers, "sequences_for", sequences.PackedSequences):
            call()
    cards = {}
    for card in CARDS:
        base_s = costs["without"].roofline_seconds(card)
        by_operation = costs["v2"].roofline_seconds_by_operation(card)
        by_operation.subtract(costs["without"].roofline_seconds_by_operation(card))
        cards[card] = {"without_ms": base_s * 1e3,
                       **{v: costs[v].roofline_seconds(card) / base_s for v in motions},
                       "v2_module_ms_by_operation": {k: s * 1e3 for k, s in by_operation.most_common() if s > 0}}
    return {"latent": latent, "frames": frames, "versions": list(motions), "peaks": CARDS, "cards": cards}


LOAD_KINDS = {
    "ours": "our loader (read, detect, check the layout and the values, convert to the UNet dtype ComfyUI picks, "
            "build), until the node has its motion model, in host memory as every ComfyUI loader leaves models",
    "read": "the file's tensors copied into memory from the memory-mapped file (safetensors' fastest way)",
    "minimum": "each tensor of the mapped file moved to the device and dtype sampling uses, nothing else",
}


def load_time(rounds):
    """Loading mm_v2 with our loader, against reading the file's tensors and against the least a loader must do to
    put them on the device, each in a fresh process (a user's first load; no allocator state carried over from
    another), alternating. The loader's child also times ComfyUI moving the model to the device afterwards, as the
    first sampling step does for every model."""
    import comfy.model_management
    runs = {which: [] for which in LOAD_KINDS}
    for _ in range(rounds):
        for which, results in runs.items():
            results.append(run_child("--load-child", which))
    median = {which: statistics.median(r["seconds"] for r in results) for which, results in runs.items()}
    to_device = statistics.median(r["to_device_seconds"] for r in runs["ours"])
    with safetensors.safe_open(str(MOTION_FILE), "pt") as f:  # reads one tensor, not the whole file
        file_dtype = f.get_tensor(next(iter(f.keys()))).dtype
    return {"ours_s": median["ours"], "read_s": median["read"], "ratio": median["ours"] / median["read"],
            "to_device_s": to_device, "minimum_s": median["minimum"],
            "on_device_ratio": (median["ours"] + to_device) / median["minimum"],
            "rounds": {which: [r["seconds"] for r in results] for which, results in runs.items()},
            "file_dtype": str(file_dtype), "unet_dtype": str(comfy.model_management.unet_dtype()),
            "device": str(comfy.model_management.get_torch_device())}


def wait_for(tensors):
    sum(float(t.view(-1)[-1]) for t in tensors)  # reading a value waits for its copy to the device


def load_child(which):
    """Runs in a fresh process: one of LOAD_KINDS; prints its seconds (for ours, also those of the move to the
    device)."""
    setup_comfy()
    import comfy.model_management

    from animatediff.patching.motion import load_motion_model_file
    device, dtype = comfy.model_management.get_torch_device(), comfy.model_management.unet_dtype()
    start = time.perf_counter()
    if which == "ours":
        patcher = load_motion_model_file(MOTION_FILE, MOTION_FILE.name).patcher
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        load_as_sampling_does(patcher)
        wait_for(patcher.model.parameters())
        print(json.dumps({"seconds": seconds, "to_device_seconds": time.perf_counter() - start}))
        return
    tensors = list(safetensors.torch.load_file(str(MOTION_FILE)).values())
    tensors = [t.clone() if which == "read" else t.to(device, dtype) for t in tensors]
    wait_for(tensors)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def sampling(base, motion, frames, latent, steps, rounds):
    """A real sampling run (euler, cfg 7.5) with and without the module, alternating: seconds per step
    (timed between the first and the last step, so loading and the first step's warm-up stay out) and the
    device's peak allocated memory, weights included."""
    import comfy.model_management
    import comfy.sample

    from animatediff.patching.motion import apply_motion_model
    runs = {"with": apply_motion_model(base, motion, 1.0, "autoselect"), "without": base}
    results = {name: {"s_per_step": [], "peak_bytes": [], "loaded_bytes": []} for name in runs}
    cond = [[torch.randn(1, 77, 768), {}]]
    latent_image = torch.zeros(frames, 4, latent, latent)
    cuda = torch.cuda.is_available()
    stamps = []

    def step_done(*_):
        if cuda:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
    for _ in range(rounds):
        for name, patcher in runs.items():
            comfy.model_management.unload_all_models()  # "without" must not carry the module's weights
            load_as_sampling_does(patcher)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            results[name]["loaded_bytes"].append(torch.cuda.memory_allocated() if cuda else 0)
            stamps.clear()
            comfy.sample.sample(patcher, torch.randn_like(latent_image), steps, 7.5, "euler", "normal", cond, cond,
                                latent_image, callback=step_done, disable_pbar=True, seed=0)
            results[name]["s_per_step"].append((stamps[-1] - stamps[0]) / (len(stamps) - 1))
            results[name]["peak_bytes"].append(torch.cuda.max_memory_allocated() if cuda else 0)
    out = {"frames": frames, "latent": latent, "steps": steps, "dtype": str(comfy.model_management.unet_dtype())}
    for name, r in results.items():
        out[f"{name}_s_per_step"] = statistics.median(r["s_per_step"])
        out[f"{name}_peak_bytes"] = max(r["peak_bytes"])
        out[f"{name}_loaded_bytes"] = max(r["loaded_bytes"])
    out["ratio"] = out["with_s_per_step"] / out["without_s_per_step"]
    return out


def peak_memory_child(frames, context_length, latent):
    """Runs in a fresh process: one sampling step at `frames` frames; prints the peak memory figures."""
    setup_comfy()
    import comfy.sample
    import comfy.samplers

    from animatediff.patching.motion import apply_motion_model, load_motion_model_file
    base = load_unet()
    motion = load_motion_model_file(MOTION_FILE, "mm_v2")
    model = apply_motion_model(base, motion, 1.0, "autoselect")
    from animatediff.patching.context import apply_context_windows
    model = apply_context_windows(model, context_length, 4, "uniform_standard", "pyramid")
    load_as_sampling_does(model)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak RSS (VmHWM) to the current RSS
    before = resident_bytes("VmHWM")
    latent_image = torch.zeros(frames, 4, latent, latent)
    cond = [[torch.randn(1, 77, 768), {}]]
    comfy.sample.sample(model, torch.randn_like(latent_image), 1, 7.5, "euler", "normal", cond, cond,
                        latent_image, disable_pbar=True, seed=0)
    peak = resident_bytes("VmHWM")
    cuda = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    print(json.dumps({"frames": frames, "latent": latent, "rss_peak_bytes": peak, "rss_after_load_bytes": before,
                      "cuda_peak_bytes": cuda}))


def resident_bytes(field):
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def peak_memory(frames, context_length, latent):
    return run_child("--memory-child", str(frames), str(context_length), str(latent))


def run_child(*args):
    """This script in a fresh process; its last line of output, as JSON."""
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"bench.py {' '.join(args)} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny sizes and one round: a smoke test, not a measurement")
    p.add_argument("--compiled-only", action="store_true",
                   help="only the torch.compile rows (v2 at 512×512; meant for CUDA), printed as JSON lines")
    p.add_argument("--out", type=Path, default=PACK / "docs" / "bench")
    p.add_argument("--memory-child", nargs=3, type=int, help=argparse.SUPPRESS)
    p.add_argument("--load-child", choices=list(LOAD_KINDS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        return peak_memory_child(*args.memory_child)
    if args.load_child:
        return load_child(args.load_child)

    setup_comfy()
    from animatediff.patching.motion import load_motion_model_file
    if args.compiled_only:
        from bench_compiled import compiled_rows
        motion = load_motion_model_file(MOTION_FILE, "mm_v2")
        for _, row in compiled_rows(load_unet(), motion, frames=16, latent=64, rounds=5):
            print(json.dumps(row), flush=True)
        return
    gpu = torch.cuda.is_available()
    rounds = 1 if args.quick else (5 if gpu else 3)
    sizes = [8] if args.quick else ([8, 16, 64] if gpu else [8, 16])
    frames = 4 if args.quick else 16
    report = {"device": torch.cuda.get_device_name() if gpu else f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "frames": frames, "overhead": [], "memory": []}
    # ~20 s a round, most of it starting processes; a file read is the noisiest figure on a GPU machine
    report["load"] = load_time(1 if args.quick else (5 if gpu else 3))
    print(json.dumps(report["load"]), flush=True)
    base = load_unet()
    motions = {v: load_motion_model_file(fixtures_dir() / f"mm_{v}.safetensors", f"mm_{v}")
               for v in (["v2"] if args.quick else VERSIONS)}
    for latent in sizes:
        for version, motion in motions.items():
            if args.quick and version != "v2":
                continue
            row = {"version": version, "latent": latent, **overhead(base, motion, frames, latent, rounds)}
            report["overhead"].append(row)
            print(json.dumps(row), flush=True)
    report["roofline"] = roofline(base, motions, frames, 8 if args.quick else 64)
    print(json.dumps(report["roofline"]["cards"]), flush=True)
    report["module"] = module_micro(rounds, size=16 if args.quick else 64)
    print(json.dumps(report["module"]), flush=True)
    if gpu or args.quick:
        report["sampling"] = sampling(base, motions["v2"], frames, 8 if args.quick else 64, 3 if args.quick else 20,
                                      rounds=1 if args.quick else 2)
        print(json.dumps(report["sampling"]), flush=True)
    # the node's default resolution (256²) on a GPU; on a CPU, 128², a step of ~15 s
    report["training"] = training_memory(base, motions["v2"], frames, 8 if args.quick else (32 if gpu else 16),
                                         rounds=1 if args.quick else (3 if gpu else 2))
    print(json.dumps(report["training"]), flush=True)
    for n in ([8, 16] if args.quick else [16, 32, 64, 128]):
        report["memory"].append(peak_memory(n, 16, 64 if gpu and not args.quick else 8))
        print(json.dumps(report["memory"][-1]), flush=True)
    save(report, args.out)
    if gpu and not args.quick:  # inductor on a CPU: minutes of C++ builds, and ComfyUI's CPU attention breaks the graph
        from bench_compiled import compiled_rows
        for key, row in compiled_rows(base, motions["v2"], frames, 64, rounds):
            report[key] = row
            print(json.dumps(row), flush=True)
            save(report, args.out)
    print(markdown(report))


if __name__ == "__main__":
    main()
