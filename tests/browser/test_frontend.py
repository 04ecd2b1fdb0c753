"""The ComfyUI front-end with the pack loaded, in headless Chromium: node help, example workflows, the
context-window timeline, the frame-count warning, and a run queued from the page."""
import colorsys
import itertools
import json
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animatediff.sampling.context import window_weights, windows

pytestmark = pytest.mark.slow
PACK_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = PACK_ROOT / "example_workflows"
TIMELINE_PNG = "/tmp/animatediff-timeline.png"

# JavaScript run in the page. Only tests reach into LiteGraph like this; the extension itself does not.
FIND_NODE = "(type) => (app.graph.nodes ?? app.graph._nodes).find((n) => n.type === type)"
SET_WIDGET = f"""([type, name, value, redraw]) => {{
    const node = ({FIND_NODE})(type);
    const widget = node.widgets.find((w) => w.name === name);
    widget.value = value;
    widget.callback?.(value, app.canvas, node);  // what a widget does when a user changes it
    if (redraw) app.graph.setDirtyCanvas(true, true);
}}"""
# Puts a Context Windows node between a node (Apply Motion Module unless named) and the sampler.
INSERT_CONTEXT_WINDOWS = f"""(where) => {{
    const [pos, after] = where ?? [[880, 470], "AnimateDiff_ApplyMotionModule"];
    const find = {FIND_NODE};
    const apply = find(after), sampler = find("AnimateDiff_Sampler");
    const context = LiteGraph.createNode("AnimateDiff_ContextWindows");
    context.pos = pos;
    app.graph.add(context);
    apply.connect(0, context, 0);
    context.connect(0, sampler, 0);
    app.graph.setDirtyCanvas(true, true);
}}"""
# The page-pixel rectangle of a part of a node: node-local x, y, width, height → client coordinates.
NODE_RECT = f"""([type, x, y, width, height]) => {{
    const node = ({FIND_NODE})(type);
    const [left, top] = app.canvasPosToClientPos([node.pos[0] + x, node.pos[1] + y]);
    const [right, bottom] = app.canvasPosToClientPos([node.pos[0] + x + width, node.pos[1] + y + height]);
    return {{x: left, y: top, width: right - left, height: bottom - top}};
}}"""

# Where the timeline is on the page: its own canvas element.
TIMELINE_RECT = f"""() => {{
    const node = ({FIND_NODE})('AnimateDiff_ContextWindows');
    const {{x, y, width, height}} = node.widgets.find((w) => w.name === 'animatediff_timeline').element
        .getBoundingClientRect();
    return {{x, y, width, height}};
}}"""

# ComfyUI's Vue node design ("Nodes 2.0"), where nodes are page elements ([data-node-id]) instead of drawings
SET_VUE_NODES = "async (on) => { await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', on); }"
NODE_ELEMENT_RECT = f"""(type) => {{
    const id = ({FIND_NODE})(type).id;
    const {{x, y, width, height}} = document.querySelector(`[data-node-id="${{id}}"]`).getBoundingClientRect();
    return {{x, y, width, height}};
}}"""
WARNING_BOX = f"""(type) => {{
    const element = ({FIND_NODE})(type).widgets.find((w) => w.name === 'animatediff_warning').element;
    const {{x, y, width, height}} = element.getBoundingClientRect();
    return {{text: element.textContent, visible: element.offsetParent !== null && height > 0,
             rect: {{x, y, width, height}}, node: ({NODE_ELEMENT_RECT})(type)}};
}}"""


def load_workflow(page, workflow: dict):
    page.evaluate("async (workflow) => { await app.loadGraphData(workflow); }", workflow)


def set_widget(page, node_type, name, value, redraw=True):
    page.evaluate(SET_WIDGET, [node_type, name, value, redraw])


def node_state(page, node_type):
    """What the extension last drew on the node (node.animatediff: timeline and/or warning)."""
    return page.evaluate(f"(type) => ({FIND_NODE})(type)?.animatediff ?? null", node_type)


def load_tiny_txt2vid(page, frames, motion="mm_v2.safetensors"):
    """The shipped txt2vid example with the test models, 32×32 pixels and one step."""
    load_workflow(page, json.loads((EXAMPLES / "txt2vid.json").read_text()))
    for node_type, name, value in [("CheckpointLoaderSimple", "ckpt_name", "sd15_random.safetensors"),
                                   ("AnimateDiff_LoadMotionModule", "model_name", motion),
                                   ("EmptyLatentImage", "width", 32), ("EmptyLatentImage", "height", 32),
                                   ("EmptyLatentImage", "batch_size", frames), ("AnimateDiff_Sampler", "steps", 1)]:
        set_widget(page, node_type, name, value)


def inside(rect, box) -> bool:
    """Whether a page rectangle lies within another (both {x, y, width, height})."""
    return (box["x"] <= rect["x"] and rect["x"] + rect["width"] <= box["x"] + box["width"]
            and box["y"] <= rect["y"] and rect["y"] + rect["height"] <= box["y"] + box["height"])


def screenshot(page, path: Path, rect=None) -> Image.Image:
    page.screenshot(path=str(path), clip=rect)
    print(f"screenshot: {path}")
    return Image.open(path).convert("RGB")


def pixels_near(image: Image.Image, rgb, tolerance=8) -> int:
    distance = np.abs(np.asarray(image, dtype=np.int16) - np.array(rgb, dtype=np.int16)).max(axis=-1)
    return int((distance <= tolerance).sum())


def hsl(hue, saturation, lightness):
    """The RGB of a CSS hsl() colour, as the timeline draws its window bars."""
    return tuple(round(255 * c) for c in colorsys.hls_to_rgb(hue / 360, lightness / 100, saturation / 100))


WINDOW_COLOURS = [hsl(hue, 75, 58) for hue in (205, 35, 140, 285, 0, 95)]  # the HUES of web/js/animatediff.js


def test_every_node_has_help_and_the_pack_its_icon(server, pack_name):
    ours = sorted(name for name, info in server.get("/object_info").items()
                  if info["python_module"] == f"custom_nodes.{pack_name}")
    assert len(ours) >= 6 and "AnimateDiff_ContextWindows" in ours
    for node_id in ours:  # where the front-end's node library fetches a custom node's help from
        with urllib.request.urlopen(f"{server.url}/extensions/{pack_name}/docs/{node_id}.md") as response:
            text = response.read().decode()
        assert text.startswith("# ") and len(text) > 200, node_id
    with urllib.request.urlopen(f"{server.url}/extensions/{pack_name}/icon.svg") as response:
        assert response.read().lstrip().startswith(b"<svg")


def test_motion_module_info_route(server):
    assert server.get("/animatediff/motion_module_info?name=mm_v1.safetensors") == {
        "name": "mm_v1.safetensors", "version": "v1", "max_frames": 24}
    assert server.get("/api/animatediff/motion_module_info?name=mm_v2.safetensors") == {
        "name": "mm_v2.safetensors", "version": "v2", "max_frames": 32}
    assert server.get("/animatediff/motion_module_info?name=AnimateLCM_sd15_t2v.safetensors") == {
        "name": "AnimateLCM_sd15_t2v.safetensors", "version": "AnimateLCM", "max_frames": 64}
    assert server.get("/animatediff/motion_module_info?name=mm_sdxl_v10_beta.safetensors") == {
        "name": "mm_sdxl_v10_beta.safetensors", "version": "SDXL", "max_frames": 32}
    status, body = server.request("GET", "/animatediff/motion_module_info?name=a_checkpoint.safetensors")
    assert status == 400 and "is a Stable Diffusion checkpoint, not a motion module" in body["error"]
    status, body = server.request("GET", "/animatediff/motion_module_info?name=no_tensors.safetensors")
    assert status == 400 and body["error"] == "no_tensors.safetensors: holds no weights."  # not the server's path
    for name in ["mm_v3.safetensors", "../checkpoints/sd15_random.safetensors", ""]:  # only listed files
        status, body = server.request("GET", f"/animatediff/motion_module_info?name={urllib.parse.quote(name)}")
        assert status == 404 and "is not in models/animatediff_models" in body["error"], name


def test_example_workflows_open_with_every_node_known(page, server, pack_name, screenshots):
    listed = server.get("/workflow_templates")[pack_name]  # what ComfyUI's template browser offers
    assert sorted(listed) == sorted(p.stem for p in EXAMPLES.glob("*.json"))
    object_info = server.get("/object_info")
    for name in listed:
        workflow = page.evaluate(
            "async (url) => (await fetch(url)).json()", f"/api/workflow_templates/{pack_name}/{name}.json")
        types = sorted({node["type"] for node in workflow["nodes"]})
        result = page.evaluate("""async (workflow) => {
            const missing = [];
            const original = app.showMissingNodesError;
            app.showMissingNodesError = (types) => missing.push(...types);  // the "missing nodes" dialog
            try { await app.loadGraphData(workflow); } finally { app.showMissingNodesError = original; }
            const nodes = app.graph.nodes ?? app.graph._nodes;
            const { output } = await app.graphToPrompt();
            return {
                missing,
                unregistered: workflow.nodes.map((n) => n.type).filter((t) => !(t in LiteGraph.registered_node_types)),
                loaded: nodes.map((n) => n.type).sort(),
                broken: nodes.filter((n) => n.has_errors).map((n) => n.type),
                prompt: Object.values(output).map((n) => n.class_type),
            };
        }""", workflow)
        assert result["missing"] == [] and result["unregistered"] == [] and result["broken"] == [], (name, result)
        assert sorted(result["loaded"]) == sorted(n["type"] for n in workflow["nodes"]), name
        assert result["prompt"] and all(t in object_info for t in result["prompt"]), (name, result["prompt"])
        assert any(t.startswith("AnimateDiff_") for t in types), name
        screenshot(page, screenshots / f"workflow-{name}.png")


def test_javascript_schedules_match_python(page, pack_name):
    cases = []
    for schedule, frames, (length, overlap), stride, closed_loop, step in itertools.product(
            ["uniform_standard", "uniform_looped", "static", "batched"], [1, 16, 17, 40, 64, 100],
            [(16, 4), (8, 0), (12, 6), (16, 15), (24, 8)], [1, 3], [False, True], [0, 1, 2, 5, 6]):
        if schedule != "uniform_looped" and closed_loop or schedule in ("static", "batched") and step:
            continue  # the option or the step changes nothing there
        cases.append([schedule, frames, length, overlap, stride, closed_loop, step])
    fuse_methods = ["pyramid", "flat", "overlap_linear"]
    js = page.evaluate("""async ([url, cases, methods]) => {
        const schedule = await import(url);
        return cases.map(([s, frames, length, overlap, stride, loop, step]) => {
            const windows = schedule.contextWindows(s, frames, length, overlap, stride, loop, step);
            return [windows, methods.map((m) => schedule.windowWeights(windows, frames, m, overlap))];
        });
    }""", [f"/extensions/{pack_name}/js/context_schedule.js", cases, fuse_methods])
    assert len(js) == len(cases) > 1000
    for case, (js_windows, js_weights) in zip(cases, js):
        schedule, frames, length, overlap, stride, closed_loop, step = case
        expected = windows(schedule, frames, length, overlap, stride, closed_loop, step)
        assert js_windows == expected, case
        for method, weights in zip(fuse_methods, js_weights):
            for got, want in zip(weights, window_weights(expected, frames, method, overlap)):
                assert got == pytest.approx(want.tolist(), abs=1e-12), (case, method)


def test_timeline_draws_the_windows_and_follows_the_widgets(page, screenshots):
    load_tiny_txt2vid(page, frames=40)
    page.evaluate(INSERT_CONTEXT_WINDOWS)
    page.wait_for_function(f"() => ({FIND_NODE})('AnimateDiff_ContextWindows').animatediff?.timeline?.frames === 40")
    timeline = node_state(page, "AnimateDiff_ContextWindows")["timeline"]
    assert timeline["fromLatent"] is True  # 40 is the batch_size of the Empty Latent Image that reaches it
    assert timeline["windows"] == windows("uniform_standard", 40, 16, 4) == [
        list(range(0, 16)), list(range(12, 28)), list(range(24, 40))]
    # pyramid: frame 12 is the 1st frame of window 1 (weight 1) and the 4th from the end of window 0 (weight 4)
    assert timeline["weights"][1][:5] == pytest.approx([1 / 5, 2 / 5, 3 / 5, 4 / 5, 1])

    timeline_rect = page.evaluate(TIMELINE_RECT)
    before = screenshot(page, screenshots / "timeline-16-4.png", timeline_rect)
    for colour in WINDOW_COLOURS[:3]:  # one bar colour per window, and no fourth
        assert pixels_near(before, colour) > 30, colour
    assert pixels_near(before, WINDOW_COLOURS[3]) == 0

    # the user shortens the windows: the timeline recomputes and redraws without any other help
    set_widget(page, "AnimateDiff_ContextWindows", "context_length", 8, redraw=False)
    page.wait_for_function(f"() => ({FIND_NODE})('AnimateDiff_ContextWindows').animatediff.timeline.length === 8")
    timeline = node_state(page, "AnimateDiff_ContextWindows")["timeline"]
    assert timeline["windows"] == windows("uniform_standard", 40, 8, 4) and len(timeline["windows"]) == 9
    page.wait_for_timeout(300)  # the next frame is drawn
    after = screenshot(page, screenshots / "timeline-8-4.png", timeline_rect)
    for colour in WINDOW_COLOURS:
        assert pixels_near(after, colour) > 10, colour

    set_widget(page, "AnimateDiff_ContextWindows", "fuse_method", "flat", redraw=False)
    page.wait_for_function(f"() => ({FIND_NODE})('AnimateDiff_ContextWindows').animatediff.timeline.fuse === 'flat'")
    timeline = node_state(page, "AnimateDiff_ContextWindows")["timeline"]
    assert timeline["weights"][0] == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5]

    set_widget(page, "AnimateDiff_ContextWindows", "context_length", 16)
    set_widget(page, "AnimateDiff_ContextWindows", "fuse_method", "pyramid")
    # what the extension adds stays in the page: not in the saved widget values, not in the prompt
    saved = page.evaluate(f"""async () => {{
        const node = ({FIND_NODE})('AnimateDiff_ContextWindows');
        const {{ output }} = await app.graphToPrompt();
        return {{
            widgets_values: app.graph.serialize().nodes.find((n) => n.id === node.id).widgets_values,
            inputs: Object.keys(output[String(node.id)].inputs).sort(),
        }};
    }}""")
    assert saved["widgets_values"] == [16, 4, "uniform_standard", "pyramid", 1, False]
    assert saved["inputs"] == sorted(["model", "context_length", "context_overlap", "schedule", "fuse_method",
                                      "context_stride", "closed_loop"])
    page.wait_for_function(f"() => ({FIND_NODE})('AnimateDiff_ContextWindows').animatediff.timeline.length === 16")
    page.wait_for_timeout(300)
    node_rect = page.evaluate(f"""() => {{
        const node = ({FIND_NODE})('AnimateDiff_ContextWindows');
        return ({NODE_RECT})(['AnimateDiff_ContextWindows', -10, -40, node.size[0] + 20, node.size[1] + 50]);
    }}""")
    path = screenshots / "timeline-node.png"
    screenshot(page, path, node_rect)
    shutil.copyfile(path, TIMELINE_PNG)
    print(f"screenshot: {TIMELINE_PNG}")


def warning(page, node_type):
    page.evaluate("() => app.graph.setDirtyCanvas(true, true)")
    page.wait_for_timeout(200)  # a frame or two
    return (node_state(page, node_type) or {}).get("warning")


def wait_for_warning(page, node_type, present: bool):
    """The module's table size arrives from the server asynchronously; the next frames show the result."""
    deadline = time.time() + 15
    while time.time() < deadline:
        text = warning(page, node_type)
        if bool(text) == present:
            return text
    raise AssertionError(f"{node_type}: warning {'never appeared' if present else 'stayed'}: {text!r}")


def wait_for_warning_text(page, node_type, part: str):
    deadline = time.time() + 15
    while time.time() < deadline:
        text = warning(page, node_type)
        if text and part in text:
            return text
    raise AssertionError(f"{node_type}: warning never said {part!r}: {text!r}")


def test_warning_when_frames_exceed_the_motion_module(page, screenshots):
    load_tiny_txt2vid(page, frames=40, motion="mm_v2.safetensors")
    text = wait_for_warning(page, "AnimateDiff_Sampler", True)
    assert "40 frames" in text and "at most 32" in text and "Context Windows" in text
    assert wait_for_warning(page, "AnimateDiff_ApplyMotionModule", True) == text
    rect = page.evaluate(f"""() => {{
        const node = ({FIND_NODE})('AnimateDiff_Sampler');
        return ({NODE_RECT})(['AnimateDiff_Sampler', -10, -40, node.size[0] + 20, node.size[1] + 110]);
    }}""")
    image = screenshot(page, screenshots / "warning-40-frames-v2.png", rect)
    assert pixels_near(image, (0xb3, 0x26, 0x1e)) > 500  # the red box below the node

    set_widget(page, "EmptyLatentImage", "batch_size", 16)
    wait_for_warning(page, "AnimateDiff_Sampler", False)
    wait_for_warning(page, "AnimateDiff_ApplyMotionModule", False)
    image = screenshot(page, screenshots / "no-warning-16-frames.png", rect)
    assert pixels_near(image, (0xb3, 0x26, 0x1e)) == 0

    # v1 modules have 24 positions: 28 frames is too many for them, not for v2
    set_widget(page, "EmptyLatentImage", "batch_size", 28)
    wait_for_warning(page, "AnimateDiff_Sampler", False)
    set_widget(page, "AnimateDiff_LoadMotionModule", "model_name", "mm_v1.safetensors")
    assert "at most 24" in wait_for_warning(page, "AnimateDiff_Sampler", True)

    # context windows on the model path make any length fine
    set_widget(page, "EmptyLatentImage", "batch_size", 40)
    page.evaluate(INSERT_CONTEXT_WINDOWS)
    wait_for_warning(page, "AnimateDiff_Sampler", False)
    wait_for_warning(page, "AnimateDiff_ApplyMotionModule", False)
    # ...unless they are bypassed
    page.evaluate(f"() => {{ ({FIND_NODE})('AnimateDiff_ContextWindows').mode = 4; }}")
    assert "40 frames" in wait_for_warning(page, "AnimateDiff_Sampler", True)
    assert "40 frames" in wait_for_warning(page, "AnimateDiff_ApplyMotionModule", True)


# Puts a core node (type, its widget values) between the Empty Latent Image and the sampler's latent_image; a
# LatentBatch also takes a second Empty Latent Image of `second` frames.
INSERT_LATENT_NODE = f"""([type, widgets, second]) => {{
    const find = {FIND_NODE};
    const empty = find("EmptyLatentImage"), sampler = find("AnimateDiff_Sampler");
    const node = LiteGraph.createNode(type);
    node.pos = [empty.pos[0], empty.pos[1] + 300];
    app.graph.add(node);
    for (const [name, value] of Object.entries(widgets)) node.widgets.find((w) => w.name === name).value = value;
    empty.connect(0, node, 0);
    if (second) {{
        const other = LiteGraph.createNode("EmptyLatentImage");
        app.graph.add(other);
        other.widgets.find((w) => w.name === "batch_size").value = second;
        other.connect(0, node, 1);
    }}
    node.connect(0, sampler, sampler.inputs.findIndex((i) => i.name === "latent_image"));
    app.graph.setDirtyCanvas(true, true);
}}"""


@pytest.mark.parametrize("latent_node, widgets, second, frames", [
    ("LatentFromBatch", {"batch_index": 40, "length": 30}, None, 24),  # 40–63 of 64
    ("RepeatLatentBatch", {"amount": 2}, None, 128),
    ("LatentBatch", {}, 16, 80),
])
def test_the_frames_are_counted_through_latent_batch_nodes(page, latent_node, widgets, second, frames):
    """The frames a sampler gets after the core nodes that cut, repeat or join latent batches (64 made)."""
    load_tiny_txt2vid(page, frames=64)
    page.evaluate(INSERT_LATENT_NODE, [latent_node, widgets, second])
    for node in ("AnimateDiff_ApplyMotionModule", "AnimateDiff_Sampler"):
        if frames > 32:
            assert f"{frames} frames, but this v2 motion module sees at most 32" in wait_for_warning(page, node, True)
        else:
            wait_for_warning(page, node, False)
    page.evaluate(f"(type) => {{ ({FIND_NODE})(type).mode = 4; }}", latent_node)  # bypassed: the 64 pass through
    wait_for_warning_text(page, "AnimateDiff_Sampler", "64 frames, but this v2 motion module sees at most 32")


def test_warnings_reach_samplercustomadvanced_through_its_guider(page):
    """Apply Motion Module → CFGGuider → SamplerCustomAdvanced: the MODEL travels inside the GUIDER."""
    load_tiny_txt2vid(page, frames=48)
    page.evaluate(f"""() => {{
        const find = {FIND_NODE};
        const apply = find("AnimateDiff_ApplyMotionModule"), old = find("AnimateDiff_Sampler");
        const guider = LiteGraph.createNode("CFGGuider"), sampler = LiteGraph.createNode("SamplerCustomAdvanced");
        guider.pos = [old.pos[0], old.pos[1] + 400];
        sampler.pos = [old.pos[0] + 300, old.pos[1] + 400];
        app.graph.add(guider);
        app.graph.add(sampler);
        apply.connect(0, guider, 0);
        guider.connect(0, sampler, sampler.inputs.findIndex((i) => i.name === "guider"));
        find("EmptyLatentImage").connect(0, sampler, sampler.inputs.findIndex((i) => i.name === "latent_image"));
        app.graph.remove(old);
    }}""")
    assert "48 frames, but this v2 motion module sees at most 32" in wait_for_warning(
        page, "AnimateDiff_ApplyMotionModule", True)
    set_widget(page, "EmptyLatentImage", "batch_size", 16)
    wait_for_warning(page, "AnimateDiff_ApplyMotionModule", False)


def test_warning_when_a_model_sampling_node_follows_apply(page, screenshots):
    """The run would stop: ModelSamplingDiscrete between Apply Motion Module and the sampler would bring SD1.5's
    betas back. Before Apply (where it belongs) or with beta_schedule use_existing, nothing to say."""
    load_tiny_txt2vid(page, frames=16)
    wait_for_warning(page, "AnimateDiff_Sampler", False)
    page.evaluate(f"""() => {{
        const find = {FIND_NODE};
        const apply = find("AnimateDiff_ApplyMotionModule"), sampler = find("AnimateDiff_Sampler");
        const sampling = LiteGraph.createNode("ModelSamplingDiscrete");
        sampling.pos = [880, 470];
        app.graph.add(sampling);
        apply.connect(0, sampling, 0);
        sampling.connect(0, sampler, 0);
    }}""")
    text = wait_for_warning(page, "AnimateDiff_Sampler", True)
    assert text.startswith("ModelSamplingDiscrete after Apply Motion Module replaces its noise schedule")
    assert wait_for_warning(page, "AnimateDiff_ApplyMotionModule", True) == text
    screenshot(page, screenshots / "warning-model-sampling-after-apply.png")
    set_widget(page, "AnimateDiff_ApplyMotionModule", "beta_schedule", "use_existing")
    wait_for_warning(page, "AnimateDiff_Sampler", False)
    set_widget(page, "AnimateDiff_ApplyMotionModule", "beta_schedule", "autoselect")
    wait_for_warning(page, "AnimateDiff_Sampler", True)
    page.evaluate(f"() => {{ ({FIND_NODE})('ModelSamplingDiscrete').mode = 4; }}")  # bypassed
    wait_for_warning(page, "AnimateDiff_Sampler", False)
    wait_for_warning(page, "AnimateDiff_ApplyMotionModule", False)


def test_warning_when_sparsectrl_frames_are_not_in_the_video(page, screenshots):
    """Apply SparseCtrl's frame_indices against the frames of the sampler its conditioning reaches, with the
    message the run would stop with."""
    load_workflow(page, json.loads((EXAMPLES / "sparsectrl_img2vid.json").read_text()))
    set_widget(page, "EmptyLatentImage", "batch_size", 16)
    wait_for_warning(page, "AnimateDiff_ApplySparseCtrl", False)
    set_widget(page, "AnimateDiff_ApplySparseCtrl", "frame_indices", "0, 20")
    assert wait_for_warning(page, "AnimateDiff_ApplySparseCtrl", True) == (
        "SparseCtrl frame_indices [20] lie outside the 16 frames being sampled (valid: 0…15, or -1…-16 from the "
        "end).")
    rect = page.evaluate(f"""() => {{
        const node = ({FIND_NODE})('AnimateDiff_ApplySparseCtrl');
        return ({NODE_RECT})(['AnimateDiff_ApplySparseCtrl', -10, -40, node.size[0] + 20, node.size[1] + 110]);
    }}""")
    image = screenshot(page, screenshots / "warning-sparsectrl-frame-20.png", rect)
    assert pixels_near(image, (0xb3, 0x26, 0x1e)) > 500
    set_widget(page, "EmptyLatentImage", "batch_size", 24)  # now frame 20 exists
    wait_for_warning(page, "AnimateDiff_ApplySparseCtrl", False)
    set_widget(page, "AnimateDiff_ApplySparseCtrl", "frame_indices", "23, -1")
    wait_for_warning_text(page, "AnimateDiff_ApplySparseCtrl", "[23, -1] name the same frame twice among 24 frames")
    set_widget(page, "AnimateDiff_ApplySparseCtrl", "frame_indices", "0; last")
    wait_for_warning_text(page, "AnimateDiff_ApplySparseCtrl", "must be whole numbers separated by commas")
    set_widget(page, "AnimateDiff_ApplySparseCtrl", "frame_indices", "0, -1")
    wait_for_warning(page, "AnimateDiff_ApplySparseCtrl", False)


def test_warning_when_the_pia_picture_frame_is_not_in_the_video(page):
    load_workflow(page, json.loads((EXAMPLES / "pia_img2vid.json").read_text()))
    wait_for_warning(page, "AnimateDiff_PIAImage", False)
    set_widget(page, "AnimateDiff_PIAImage", "picture_frame", 16)
    assert wait_for_warning(page, "AnimateDiff_PIAImage", True) == (
        "picture_frame=16, but the video has 16 frames (0 to 15): choose a frame of the video.")
    set_widget(page, "EmptyLatentImage", "batch_size", 24)  # now frame 16 exists
    wait_for_warning(page, "AnimateDiff_PIAImage", False)


def test_warning_when_the_prompt_schedule_has_other_frames_than_the_latent(page):
    """The run would stop (Apply Motion Module's check); the warning says so before it is queued."""
    load_workflow(page, json.loads((EXAMPLES / "txt2vid_long.json").read_text()))
    wait_for_warning(page, "AnimateDiff_PromptSchedule", False)  # 64 and 64
    set_widget(page, "AnimateDiff_PromptSchedule", "frames", 70)
    assert wait_for_warning(page, "AnimateDiff_PromptSchedule", True) == (
        "frames=70, but the latent holds 64: set frames to 64 (the latent's batch_size), or the batch_size to 70.")
    set_widget(page, "EmptyLatentImage", "batch_size", 70)
    wait_for_warning(page, "AnimateDiff_PromptSchedule", False)
    set_widget(page, "EmptyLatentImage", "batch_size", 64)
    wait_for_warning(page, "AnimateDiff_PromptSchedule", True)
    page.evaluate(f"() => {{ ({FIND_NODE})('AnimateDiff_ApplyMotionModule').mode = 4; }}")  # no check to stop it
    wait_for_warning(page, "AnimateDiff_PromptSchedule", False)


def test_warning_when_cameractrl_would_get_more_than_16_frames_at_a_time(page):
    load_workflow(page, json.loads((EXAMPLES / "cameractrl_txt2vid.json").read_text()))
    wait_for_warning(page, "AnimateDiff_ApplyCameraCtrl", False)
    set_widget(page, "EmptyLatentImage", "batch_size", 24)
    assert wait_for_warning(page, "AnimateDiff_ApplyCameraCtrl", True) == (
        "24 frames, but CameraCtrl's pose encoder takes at most 16 at a time: add Context Windows (AnimateDiff) "
        "with context_length 16 or less, or use fewer frames.")
    page.evaluate(INSERT_CONTEXT_WINDOWS, [[3000, 3000], "AnimateDiff_ApplyCameraCtrl"])
    wait_for_warning(page, "AnimateDiff_ApplyCameraCtrl", False)  # windows of 16
    set_widget(page, "AnimateDiff_ContextWindows", "context_length", 20)
    assert wait_for_warning(page, "AnimateDiff_ApplyCameraCtrl", True) == (
        "context_length=20, but CameraCtrl's pose encoder takes at most 16 frames at a time: set context_length "
        "to 16 or less.")


def test_queue_from_the_page_shows_the_animation(page, server, screenshots):
    load_tiny_txt2vid(page, frames=4)
    before = set(server.get("/history"))
    page.evaluate("async () => { await app.queuePrompt(0); }")
    deadline = time.time() + 600
    while time.time() < deadline:
        new = {k: v for k, v in server.get("/history").items() if k not in before}
        if new and all(e.get("status", {}).get("completed") is not None for e in new.values()):
            break
        time.sleep(1)
    assert len(new) == 1, f"expected one finished run in /history, got {list(new.values())}"
    (entry,) = new.values()
    assert entry["status"]["status_str"] == "success", entry["status"]
    (image,) = [img for out in entry["outputs"].values() for img in out.get("images", [])]
    with Image.open(server.output_dir / image["subfolder"] / image["filename"]) as webp:
        assert webp.n_frames == 4 and webp.size == (32, 32)
    # and the page shows it: the save node's preview is that file, loaded
    page.wait_for_function("""(name) => {
        const node = (app.graph.nodes ?? app.graph._nodes).find((n) => n.type === 'SaveAnimatedWEBP');
        const img = node?.imgs?.[0];
        return img?.complete && img.naturalWidth === 32 && img.src.includes(encodeURIComponent(name));
    }""", arg=image["filename"], timeout=30_000)
    screenshot(page, screenshots / "queued-run.png")


def test_timeline_of_an_unconnected_node_uses_preview_frames(page):
    load_workflow(page, json.loads((EXAMPLES / "txt2vid.json").read_text()))
    page.evaluate("""() => {
        const node = LiteGraph.createNode("AnimateDiff_ContextWindows");
        node.pos = [880, 470];
        app.graph.add(node);
        app.graph.setDirtyCanvas(true, true);
    }""")
    page.wait_for_function(f"() => ({FIND_NODE})('AnimateDiff_ContextWindows').animatediff?.timeline")
    timeline = node_state(page, "AnimateDiff_ContextWindows")["timeline"]
    assert timeline["frames"] == 64 and timeline["fromLatent"] is False
    assert timeline["windows"] == windows("uniform_standard", 64, 16, 4)

    set_widget(page, "AnimateDiff_ContextWindows", "preview_frames", 100, redraw=False)
    set_widget(page, "AnimateDiff_ContextWindows", "schedule", "uniform_looped", redraw=False)
    set_widget(page, "AnimateDiff_ContextWindows", "context_stride", 2, redraw=False)
    page.wait_for_function(f"() => ({FIND_NODE})('AnimateDiff_ContextWindows').animatediff.timeline.stride === 2")
    timeline = node_state(page, "AnimateDiff_ContextWindows")["timeline"]
    assert timeline["frames"] == 100 and timeline["windows"] == windows("uniform_looped", 100, 16, 4, stride=2)

    # an impossible setting is named on the timeline, as the node would name it when run
    set_widget(page, "AnimateDiff_ContextWindows", "context_overlap", 16, redraw=False)
    page.wait_for_function(f"() => ({FIND_NODE})('AnimateDiff_ContextWindows').animatediff.timeline.problem")
    problem = node_state(page, "AnimateDiff_ContextWindows")["timeline"]["problem"]
    assert "must be smaller than context_length" in problem
    set_widget(page, "AnimateDiff_ContextWindows", "context_overlap", 4)

    # the preview length is kept with the workflow and comes back with it
    page.evaluate("async () => { await app.loadGraphData(app.graph.serialize()); }")
    restored = page.evaluate(f"""() => {{
        const node = ({FIND_NODE})('AnimateDiff_ContextWindows');
        const widget = node.widgets.find((w) => w.name === 'preview_frames');
        return [node.properties.animatediff_preview_frames, widget.value];
    }}""")
    assert restored == [100, 100]


def test_graphs_without_the_packs_nodes_are_left_alone(page):
    page.evaluate("async () => { await app.loadGraphData(); }")  # ComfyUI's default text-to-image graph
    types = page.evaluate("() => (app.graph.nodes ?? app.graph._nodes).map((n) => n.type)")
    assert "KSampler" in types and not any(t.startswith("AnimateDiff_") for t in types)
    page.evaluate("() => app.graph.setDirtyCanvas(true, true)")
    page.wait_for_timeout(500)  # frames drawn with the extension loaded; the page fixture checks for errors
    assert page.evaluate("() => (app.graph.nodes ?? app.graph._nodes).filter((n) => n.animatediff).length") == 0


def test_timeline_in_the_vue_node_design(page, screenshots):
    """ComfyUI's Vue node design ("Nodes 2.0") lays nodes out as page elements: the timeline must sit inside its
    node there too, and follow the latent's frame count."""
    page.evaluate(SET_VUE_NODES, True)
    try:
        load_tiny_txt2vid(page, frames=40)
        page.evaluate(INSERT_CONTEXT_WINDOWS, [[3000, 3000], "AnimateDiff_ApplyMotionModule"])  # away from the rest
        page.evaluate("""() => {  // and in view
            const ds = app.canvas.ds;
            ds.offset[0] = 600 / ds.scale - 3000;
            ds.offset[1] = 200 / ds.scale - 3000;
            app.canvas.setDirty(true, true);
        }""")
        page.wait_for_function(f"() => ({FIND_NODE})('AnimateDiff_ContextWindows').animatediff?.timeline?.frames === 40")
        page.wait_for_timeout(500)  # laid out and drawn
        node_rect = page.evaluate(NODE_ELEMENT_RECT, "AnimateDiff_ContextWindows")
        timeline_rect = page.evaluate(TIMELINE_RECT)
        assert timeline_rect["height"] > 50 and timeline_rect["width"] > 100
        assert inside(timeline_rect, node_rect)
        image = screenshot(page, screenshots / "vue-timeline-40.png", timeline_rect)
        for colour in WINDOW_COLOURS[:3]:
            assert pixels_near(image, colour) > 30, colour
        assert pixels_near(image, WINDOW_COLOURS[3]) == 0

        set_widget(page, "EmptyLatentImage", "batch_size", 64)  # another node: the timeline follows it
        page.wait_for_function(f"() => ({FIND_NODE})('AnimateDiff_ContextWindows').animatediff.timeline.frames === 64")
        page.wait_for_timeout(300)
        image = screenshot(page, screenshots / "vue-timeline-64.png", page.evaluate(TIMELINE_RECT))
        for colour in WINDOW_COLOURS[:5]:  # 5 windows of 16 with overlap 4 over 64 frames
            assert pixels_near(image, colour) > 30, colour
    finally:
        page.evaluate(SET_VUE_NODES, False)


def test_warning_in_the_vue_node_design(page, screenshots):
    page.evaluate(SET_VUE_NODES, True)
    try:
        load_tiny_txt2vid(page, frames=40)
        text = wait_for_warning(page, "AnimateDiff_Sampler", True)
        page.wait_for_timeout(300)
        box = page.evaluate(WARNING_BOX, "AnimateDiff_Sampler")
        assert box["text"] == f"⚠ {text}" and box["visible"]
        assert inside(box["rect"], box["node"])
        image = screenshot(page, screenshots / "vue-warning-40.png", box["rect"])
        assert pixels_near(image, (0xb3, 0x26, 0x1e)) > 500

        set_widget(page, "EmptyLatentImage", "batch_size", 16)
        wait_for_warning(page, "AnimateDiff_Sampler", False)
        page.wait_for_timeout(300)
        assert not page.evaluate(WARNING_BOX, "AnimateDiff_Sampler")["visible"]
        # the warning's widget stays in the page: not in the saved widget values, not in the prompt
        saved = page.evaluate(f"""async () => {{
            const node = ({FIND_NODE})('AnimateDiff_Sampler');
            const {{ output }} = await app.graphToPrompt();
            return {{widgets_values: app.graph.serialize().nodes.find((n) => n.id === node.id).widgets_values,
                     inputs: Object.keys(output[String(node.id)].inputs)}};
        }}""")
        assert saved["widgets_values"] == [42, "fixed", 1, 7.5, "ddim", "ddim_uniform", 1, "default"]
        assert "animatediff_warning" not in saved["inputs"]
    finally:
        page.evaluate(SET_VUE_NODES, False)
