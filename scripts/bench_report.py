"""The benchmark's report (scripts/bench.py measures): bench.json as measured, and bench.md, its tables."""
import json

from bench_training import training_markdown


def save(report, folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.json").write_text(json.dumps(report, indent=2))
    (folder / "bench.md").write_text(markdown(report))


def markdown(r):
    gib = 1024 ** 3
    lines = [f"Benchmark on {r['device']}, torch {r['torch']}, {r['date']}, {r['frames']} frames, cfg batch 2.", "",
             "| module | latent | with (s/step) | without (s/step) | measured ratio | FLOP floor |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {o['version']} | {o['latent']}×{o['latent']} | {o['with_s']:.3f} | {o['without_s']:.3f} | "
              f"{o['ratio']:.3f} | {o['flop_floor']:.3f} |" for o in r["overhead"]]
    lines += compiled_rows_markdown(r)
    lines += roofline_markdown(r.get("roofline"))
    load, module = r["load"], r["module"]
    memory_size = "{0}×{0}".format(r["memory"][0]["latent"] * 8)
    lines += ["", f"Load of mm_v2.safetensors ({load['file_dtype']} file, {load['unet_dtype']} UNet; each in a fresh "
              f"process): our loader {load['ours_s']:.2f} s vs {load['read_s']:.2f} s to read its tensors (ratio "
              f"{load['ratio']:.2f}). Then ComfyUI moves it to {load['device']} as sampling does: "
              f"{load['to_device_s']:.2f} s; only moving the file's tensors there: {load['minimum_s']:.2f} s (ratio "
              f"{load['on_device_ratio']:.2f}).",
              f"One module (C=320, 64×64, 16 frames): {module['ours_s'] * 1e3:.1f} ms vs {module['plain_s'] * 1e3:.1f} ms "
              f"for plain PyTorch (ratio {module['ratio']:.2f}).", "",
              *sampling_markdown(r.get("sampling")),
              *training_markdown(r.get("training")),
              f"| frames (context 16, {memory_size}) | peak RSS (GiB) | RSS after load (GiB) | peak − after load (GiB) "
              "| CUDA peak (GiB) |",
              "|---|---|---|---|---|"]
    lines += [f"| {m['frames']} | {m['rss_peak_bytes'] / gib:.2f} | {m['rss_after_load_bytes'] / gib:.2f} | "
              f"{(m['rss_peak_bytes'] - m['rss_after_load_bytes']) / gib:.2f} | {m['cuda_peak_bytes'] / gib:.2f} |"
              for m in r["memory"]]
    return "\n".join(lines) + "\n"


COMPILED_ROWS = {  # report key: the row's label after the version, and the note under the table
    "compiled": (" compiled", "Compiled: both models under the core TorchCompileModel node's wrapper (inductor); first "
                 "calls {with_first_call_s:.0f} s with the module, {without_first_call_s:.0f} s without; output "
                 "{relative_difference:.1e} (relative) from eager."),
    "fused_blocks": (", its transformer blocks compiled", "Transformer blocks compiled: only the motion module's "
                     "(inductor fuses their passes over the tokens), the image model eager; first call "
                     "{with_first_call_s:.0f} s; output {relative_difference:.1e} (relative) from eager."),
}


def compiled_rows_markdown(r):
    """Rows of the overhead table, then what they mean."""
    present = [(r[key], label, note) for key, (label, note) in COMPILED_ROWS.items() if key in r]
    rows = [f"| {c['version']}{label} | {c['latent']}×{c['latent']} | {c['with_s']:.3f} | {c['without_s']:.3f} | "
            f"{c['ratio']:.3f} | |" for c, label, _ in present]
    return rows + [line for c, _, note in present for line in ("", note.format(**c))]


def roofline_markdown(roofline):
    if not roofline:
        return []
    size, versions = roofline["latent"] * 8, roofline["versions"]
    return ["", f"Roofline ratio at {size}×{size}, {roofline['frames']} frames: both models run one operation at a time, "
            "each at the slower of its FLOPs at the card's peak and its bytes at the card's bandwidth "
            "(spec sheets; fp16, as a GPU runs the call).", "",
            "| card (peak FLOP/s, bytes/s) | without (ms) | " + " | ".join(versions) + " |",
            "|---|---|" + "---|" * len(versions),
            *(f"| {card} ({roofline['peaks'][card][0] / 1e12:.0f} TFLOP/s, {roofline['peaks'][card][1] / 1e12:.2f} TB/s) | "
              f"{c['without_ms']:.1f} | " + " | ".join(f"{c[v]:.3f}" for v in versions) + " |"
              for card, c in roofline["cards"].items())]


def sampling_markdown(s):
    if not s:
        return []
    gib = 1024 ** 3
    return [f"Sampling {s['latent'] * 8}×{s['latent'] * 8}, {s['frames']} frames, {s['steps']} steps, {s['dtype']}:", "",
            "| | s/step | peak allocated (GiB) | of it, loaded weights (GiB) |", "|---|---|---|---|",
            *(f"| {label} | {s[f'{name}_s_per_step']:.3f} | {s[f'{name}_peak_bytes'] / gib:.2f} | "
              f"{s[f'{name}_loaded_bytes'] / gib:.2f} |" for name, label in (("with", "with mm_v2"), ("without", "without"))),
            f"| ratio | {s['ratio']:.3f} | | |", ""]
