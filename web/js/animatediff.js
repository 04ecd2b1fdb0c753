// The pack's front-end: a timeline of the context windows on "Context Windows (AnimateDiff)" nodes, and a
// warning on the motion-module and sampler nodes when a latent holds more frames than the motion module can
// see at once, and on Apply SparseCtrl and PIA Image when their frames are not in the video; in the canvas and
// in the Vue node design alike. Only the public extension API and LiteGraph
// node methods are used, everything is feature-detected, and errors are caught: a front-end update may hide
// these aids, never break a graph.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";
import { checkSettings, contextWindows, windowWeights } from "./context_schedule.js";

const CONTEXT = "AnimateDiff_ContextWindows";
const APPLY = "AnimateDiff_ApplyMotionModule";
const SAMPLER = "AnimateDiff_Sampler";
const LOAD = "AnimateDiff_LoadMotionModule";
const APPLY_SPARSE = "AnimateDiff_ApplySparseCtrl";
const PIA_IMAGE = "AnimateDiff_PIAImage";
const TIMELINE_HEIGHT = 110;
const MAX_PREVIEW_FRAMES = 4096; // ComfyUI's own batch_size limit

const widgetValue = (node, name) => node?.widgets?.find((w) => w.name === name)?.value;
const inputIndex = (node, name) => node?.inputs?.findIndex((i) => i.name === name) ?? -1;
const isModelSlot = (slot) => slot?.type === "MODEL" || slot?.type === "*"; // "*": Reroute nodes
const isGuidanceSlot = (slot) => ["CONDITIONING", "GUIDER", "*"].includes(slot?.type);
const classOf = (node) => node?.comfyClass ?? node?.type;
const isActive = (node) => node.mode !== 2 && node.mode !== 4; // LiteGraph's muted (NEVER) and BYPASS modes

// Drawing runs every frame: report a failure once, not sixty times a second.
const reported = new Set();
function reportOnce(what, error) {
  if (reported.has(what)) return;
  reported.add(what);
  console.warn(`AnimateDiff: ${what}`, error);
}

function inputNode(node, index) {
  try {
    return index >= 0 && typeof node.getInputNode === "function" ? node.getInputNode(index) : null;
  } catch {
    return null; // e.g. a node being removed from its graph
  }
}

// The nodes a MODEL travels through on its way into `node` (nearest first), through any adapter nodes.
function modelPathUp(node) {
  const path = [], seen = new Set([node]);
  let index = inputIndex(node, "model");
  let current = node;
  for (;;) {
    const up = inputNode(current, index >= 0 ? index : current.inputs?.findIndex(isModelSlot) ?? -1);
    if (!up || seen.has(up)) return path;
    path.push(up);
    seen.add(up);
    current = up;
    index = inputIndex(up, "model");
  }
}

// The frame count reaching a sampler: the batch_size of the latent node upstream of its latent_image.
function latentFrames(sampler) {
  let node = inputNode(sampler, inputIndex(sampler, "latent_image"));
  for (let hops = 0; node && hops < 32; hops++) {
    const frames = widgetValue(node, "batch_size");
    if (typeof frames === "number") return frames;
    node = inputNode(node, node.inputs?.findIndex((i) => i.type === "LATENT" || i.type === "*") ?? -1);
  }
  return null;
}

// Samplers (any node with a latent_image input: KSampler, AnimateDiff_Sampler, …) that take what comes out
// of `node` on slots `carries` accepts (its MODEL, or its conditioning), however many nodes lie between.
function samplersDownstream(node, carries = isModelSlot) {
  const found = [], seen = new Set([node]), todo = [node];
  while (todo.length) {
    const current = todo.pop();
    (current.outputs ?? []).forEach((output, slot) => {
      if (!carries(output) || typeof current.getOutputNodes !== "function") return;
      for (const next of current.getOutputNodes(slot) ?? []) {
        if (seen.has(next)) continue;
        seen.add(next);
        if (inputIndex(next, "latent_image") >= 0) found.push(next);
        else todo.push(next);
      }
    });
  }
  return found;
}

// --- the motion module's positional table, asked once per file from nodes/routes.py ---
const moduleInfo = new Map(); // file name → {max_frames, version} | "pending" | "unknown"

function motionModuleInfo(name) {
  if (typeof name !== "string" || !name) return null;
  if (!moduleInfo.has(name)) {
    moduleInfo.set(name, "pending");
    api
      .fetchApi(`/animatediff/motion_module_info?name=${encodeURIComponent(name)}`)
      .then((response) => (response.ok ? response.json() : "unknown"))
      .catch(() => "unknown")
      .then((info) => {
        moduleInfo.set(name, info);
        // a file missing now may be added later (then ComfyUI's refresh lists it): ask again in a while
        if (info === "unknown") setTimeout(() => moduleInfo.delete(name), 30_000);
      });
  }
  const info = moduleInfo.get(name);
  return typeof info === "object" ? info : null;
}

function motionModuleName(apply) {
  let node = inputNode(apply, inputIndex(apply, "motion_model"));
  for (let hops = 0; node && hops < 16 && classOf(node) !== LOAD; hops++) node = inputNode(node, 0); // Reroutes
  const widget = node?.widgets?.find((w) => w.name === "model_name");
  const listed = widget?.options?.values;
  // a name the server does not list (a workflow from another machine) has no table to ask for
  return widget && (!Array.isArray(listed) || listed.includes(widget.value)) ? widget.value : null;
}

// The warning of one sampler, or null, in either case the run would stop with the same message: a
// ModelSampling node between Apply Motion Module and the sampler replaces the schedule Apply set, or its frames
// exceed the table of the motion module on its model path and no context windows are on that path.
function samplerWarning(sampler) {
  const path = modelPathUp(sampler);
  const applyAt = path.findIndex((n) => classOf(n) === APPLY && isActive(n));
  const apply = path[applyAt];
  if (!apply) return null;
  const resampling = path.slice(0, applyAt).find((n) => /^ModelSampling/.test(classOf(n)) && isActive(n));
  if (resampling && widgetValue(apply, "beta_schedule") !== "use_existing") {
    return {
      apply,
      text: `${resampling.title || classOf(resampling)} after Apply Motion Module replaces its noise schedule: ` +
        `move it before Apply Motion Module, or set beta_schedule to use_existing.`,
    };
  }
  if (path.some((n) => classOf(n) === CONTEXT && isActive(n))) return null;
  const frames = latentFrames(sampler);
  const info = motionModuleInfo(motionModuleName(apply));
  if (!info || typeof frames !== "number" || frames <= info.max_frames) return null;
  return {
    apply,
    text: `${frames} frames, but this ${info.version} motion module sees at most ${info.max_frames} at once: ` +
      `add Context Windows (AnimateDiff) before the sampler, or use fewer frames.`,
  };
}

// Apply SparseCtrl's frame_indices checked against the frames of the samplers its conditioning reaches, in the
// words the run would stop with.
function sparseWarning(node) {
  const text = String(widgetValue(node, "frame_indices") ?? "");
  const parts = text.replace(/;/g, ",").split(",").map((p) => p.trim()).filter((p) => p);
  if (!parts.length || parts.some((p) => !/^[+-]?\d+$/.test(p))) {
    return `frame_indices must be whole numbers separated by commas, e.g. "0" or "0, 8, -1".`;
  }
  const indices = parts.map(Number);
  for (const sampler of samplersDownstream(node, isGuidanceSlot)) {
    const frames = latentFrames(sampler);
    if (typeof frames !== "number" || !isActive(sampler)) continue;
    const outside = indices.filter((i) => i >= frames || i < -frames);
    if (outside.length) {
      return `SparseCtrl frame_indices [${outside.join(", ")}] lie outside the ${frames} frames being sampled ` +
        `(valid: 0…${frames - 1}, or -1…-${frames} from the end).`;
    }
    const resolved = indices.map((i) => (i < 0 ? i + frames : i));
    if (new Set(resolved).size < resolved.length) {
      return `SparseCtrl frame_indices [${indices.join(", ")}] name the same frame twice among ${frames} frames; ` +
        `give each frame one image.`;
    }
  }
  return null;
}

// PIA Image's picture_frame checked against the frames of the samplers its model reaches.
function pictureFrameWarning(node) {
  const frame = widgetValue(node, "picture_frame");
  for (const sampler of samplersDownstream(node)) {
    const frames = latentFrames(sampler);
    if (typeof frame === "number" && typeof frames === "number" && isActive(sampler) && frame >= frames) {
      return `picture_frame=${frame}, but the video has ${frames} frames (0 to ${frames - 1}): choose a frame ` +
        `of the video.`;
    }
  }
  return null;
}

function nodeWarning(node) {
  if (classOf(node) === APPLY_SPARSE) return sparseWarning(node);
  if (classOf(node) === PIA_IMAGE) return pictureFrameWarning(node);
  if (classOf(node) === APPLY) {
    const warnings = samplersDownstream(node).map(samplerWarning);
    return warnings.find((w) => w?.apply === node)?.text ?? null;
  }
  return samplerWarning(node)?.text ?? null;
}

function wrapText(ctx, text, width) {
  const lines = [];
  let line = "";
  for (const word of text.split(" ")) {
    const candidate = line ? `${line} ${word}` : word;
    if (line && ctx.measureText(candidate).width > width) {
      lines.push(line);
      line = word;
    } else line = candidate;
  }
  return line ? [...lines, line] : lines;
}

// Drawn just below the node, so it never covers its widgets.
function drawWarning(ctx, node, text) {
  if (node.flags?.collapsed) return;
  const [width, height] = node.size;
  ctx.save();
  ctx.font = "12px sans-serif";
  const lines = wrapText(ctx, `⚠ ${text}`, width - 16);
  ctx.fillStyle = "#b3261e";
  ctx.beginPath();
  const boxHeight = lines.length * 16 + 8;
  if (ctx.roundRect) ctx.roundRect(0, height + 6, width, boxHeight, 6);
  else ctx.rect(0, height + 6, width, boxHeight);
  ctx.fill();
  ctx.fillStyle = "#ffffff";
  ctx.textAlign = "left";
  ctx.textBaseline = "top";
  lines.forEach((line, i) => ctx.fillText(line, 8, height + 11 + i * 16));
  ctx.restore();
}

// What the aids show depends on other nodes (links, the latent's batch_size, the motion module file), which
// change without telling this node: it is worked out a few times a second, in both of the front-end's node
// designs, and shown again only when it changed.
const REFRESH_MS = 250;

function refreshEvery(node, what, refresh) {
  const run = () => {
    try {
      refresh();
    } catch (error) {
      reportOnce(what, error);
    }
  };
  run();
  const timer = setInterval(run, REFRESH_MS);
  const onRemoved = node.onRemoved;
  node.onRemoved = function (...args) {
    clearInterval(timer);
    return onRemoved?.apply(this, args);
  };
}

// The Vue node design ("Nodes 2.0") lays nodes out as page elements and calls no drawing hook per node.
const vueNodeDesign = () => !!app.extensionManager?.setting?.get?.("Comfy.VueNodes.Enabled");

// The canvas design draws the warning below the node (drawWarning); the Vue design shows it as a DOM widget at
// the bottom of the node, hidden while there is nothing to say (and always in the canvas design).
function addWarning(node) {
  const box = document.createElement("div");
  box.style.cssText = "display: none; margin: 4px 0; padding: 4px 8px; border-radius: 6px; background: #b3261e; " +
    "color: #ffffff; font: 12px sans-serif; pointer-events: none;";
  const widget = node.addDOMWidget?.("animatediff_warning", "animatediff_warning", box, {
    serialize: false, hideOnZoom: false, getMinHeight: () => 0, getMaxHeight: () => 0,
  });
  if (widget) widget.serialize = false;
  refreshEvery(node, "frame-count check skipped", () => {
    const warning = nodeWarning(node);
    if (warning !== node.animatediff?.warning) app.graph?.setDirtyCanvas?.(true, false); // the canvas draws it
    node.animatediff = { ...node.animatediff, warning };
    const text = warning && widget && vueNodeDesign() ? `⚠ ${warning}` : "";
    if (box.textContent !== text) {
      box.textContent = text;
      box.style.display = text ? "block" : "none";
    }
  });
}

// --- the context-window timeline ---
function contextSettings(node) {
  return {
    length: widgetValue(node, "context_length") ?? 16,
    overlap: widgetValue(node, "context_overlap") ?? 4,
    schedule: widgetValue(node, "schedule") ?? "uniform_standard",
    fuse: widgetValue(node, "fuse_method") ?? "pyramid",
    stride: widgetValue(node, "context_stride") ?? 1,
    closedLoop: !!widgetValue(node, "closed_loop"),
  };
}

// What the timeline shows: the frames of a latent reaching this node's sampler if there is one, else the
// preview_frames the user typed. Kept on the node (node.animatediff) for tests and other extensions.
function computeTimeline(node) {
  const s = contextSettings(node);
  const fromLatent = samplersDownstream(node).map(latentFrames).find((f) => typeof f === "number");
  const frames = Math.min(fromLatent ?? widgetValue(node, "preview_frames") ?? 64, MAX_PREVIEW_FRAMES);
  const problem = checkSettings(s.length, s.overlap, s.stride, s.schedule);
  if (problem || !(frames >= 1)) return { frames, fromLatent: fromLatent != null, problem: problem ?? "no frames" };
  const windows = contextWindows(s.schedule, frames, s.length, s.overlap, s.stride, s.closedLoop, 0);
  const weights = windowWeights(windows, frames, s.fuse, s.overlap);
  return { frames, fromLatent: fromLatent != null, windows, weights, ...s };
}

const HUES = [205, 35, 140, 285, 0, 95];

function drawTimeline(ctx, t, width) {
  const bottom = TIMELINE_HEIGHT - 4;
  ctx.save();
  ctx.fillStyle = "rgba(0,0,0,0.3)";
  ctx.fillRect(0, 0, width, bottom);
  ctx.font = "11px sans-serif";
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  ctx.fillStyle = t.problem ? "#ff8a65" : "#cccccc";
  const source = t.fromLatent ? "from the latent" : "preview_frames";
  ctx.fillText(t.problem ?? `${t.frames} frames (${source})`, 5, 4, width - 10);
  if (!t.problem) {
    ctx.textAlign = "right";
    ctx.fillText(`${t.windows.length} window${t.windows.length === 1 ? "" : "s"}`, width - 5, 4);
    // one row per window; a frame's bar height is its share in the fused result, so where windows
    // overlap the bars show the crossfade
    const top = 19, rowsHeight = bottom - 16 - top;
    const shown = t.windows.slice(0, Math.floor(rowsHeight / 3));
    const row = rowsHeight / shown.length, cell = width / t.frames;
    shown.forEach((window, i) => {
      const hue = HUES[i % HUES.length];
      const base = top + (i + 1) * row;
      ctx.fillStyle = `hsla(${hue}, 70%, 60%, 0.22)`;
      window.forEach((f) => ctx.fillRect(f * cell, base - row + 1, Math.max(cell, 1), row - 1));
      ctx.fillStyle = `hsl(${hue}, 75%, 58%)`;
      window.forEach((f, p) => {
        const h = (row - 1) * t.weights[i][p];
        ctx.fillRect(f * cell, base - h, Math.max(cell, 1), h);
      });
    });
    ctx.fillStyle = "#999999";
    ctx.textBaseline = "bottom";
    ctx.textAlign = "left";
    ctx.fillText("0", 5, bottom - 2);
    ctx.textAlign = "right";
    ctx.fillText(String(t.frames - 1), width - 5, bottom - 2);
    ctx.textAlign = "center";
    const hidden = t.windows.length - shown.length;
    const note = hidden > 0 ? `${hidden} more not shown`
      : t.schedule.startsWith("uniform") ? "first step; windows shift every step" : t.schedule;
    ctx.fillText(`${t.fuse} · ${note}`, width / 2, bottom - 2, width - 60);
  }
  ctx.restore();
}

function addTimeline(node) {
  // Not part of the node's inputs: kept out of the prompt (options.serialize) and out of widgets_values
  // (serialize), so workflows stay loadable without this extension. The value is kept in node.properties.
  const frames = node.addWidget?.("number", "preview_frames", node.properties?.animatediff_preview_frames ?? 64,
    (value) => {
      node.properties = { ...node.properties, animatediff_preview_frames: value };
    },
    { min: 1, max: MAX_PREVIEW_FRAMES, step: 10, step2: 1, precision: 0, round: 1, serialize: false });
  if (frames) {
    frames.serialize = false;
    frames.tooltip = "Frames to draw the windows for when no Empty Latent Image reaches this model's sampler.";
  }
  // A canvas of its own in a DOM widget: the front-end lays it out inside the node both in its canvas design
  // and in its Vue one ("Nodes 2.0"), where a widget that draws on the graph's canvas is painted over the node.
  const canvas = document.createElement("canvas");
  canvas.style.cssText = `display: block; width: 100%; height: ${TIMELINE_HEIGHT}px; pointer-events: none;`;
  const widget = node.addDOMWidget?.("animatediff_timeline", "animatediff_timeline", canvas, {
    serialize: false, hideOnZoom: false, getMinHeight: () => TIMELINE_HEIGHT, getMaxHeight: () => TIMELINE_HEIGHT,
  });
  if (!widget) return;
  widget.serialize = false;
  let drawn = null;
  refreshEvery(node, "timeline not drawn", () => {
    const timeline = computeTimeline(node);
    node.animatediff = { ...node.animatediff, timeline };
    // drawn at the pixels it takes on screen, whatever the zoom (the front-end scales the element)
    const width = canvas.clientWidth;
    const ratio = (window.devicePixelRatio || 1) * (canvas.getBoundingClientRect().width / width || 1);
    const key = JSON.stringify([timeline, width, ratio.toFixed(2)]);
    if (!width || key === drawn) return; // not on screen, or nothing new to draw
    drawn = key;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(TIMELINE_HEIGHT * ratio);
    const ctx = canvas.getContext("2d");
    ctx.scale(ratio, ratio);
    drawTimeline(ctx, timeline, width);
  });
  fitContent(node);
  // a saved workflow brings its own node size and properties: keep the timeline visible, restore the length
  const onConfigure = node.onConfigure;
  node.onConfigure = function (...args) {
    const result = onConfigure?.apply(this, args);
    const saved = this.properties?.animatediff_preview_frames;
    if (frames && typeof saved === "number") frames.value = saved;
    fitContent(this);
    return result;
  };
}

function fitContent(node) {
  if (typeof node.computeSize !== "function" || !(node.size?.length >= 2)) return; // size may be a typed array
  const [w, h] = node.computeSize();
  const width = Math.max(node.size[0], w, 320), height = Math.max(node.size[1], h);
  if (width !== node.size[0] || height !== node.size[1]) node.size = [width, height];
}

app.registerExtension({
  name: "AnimateDiff.ComfyUI",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (![APPLY, SAMPLER, APPLY_SPARSE, PIA_IMAGE].includes(nodeData?.name)) return;
    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx, ...rest) {
      const result = onDrawForeground?.apply(this, [ctx, ...rest]);
      try {
        const warning = this.animatediff?.warning;
        if (warning) drawWarning(ctx, this, warning);
      } catch (error) {
        reportOnce("frame-count warning not drawn", error);
      }
      return result;
    };
  },
  nodeCreated(node) {
    try {
      if (classOf(node) === CONTEXT) addTimeline(node);
      else if ([APPLY, SAMPLER, APPLY_SPARSE, PIA_IMAGE].includes(classOf(node))) addWarning(node);
    } catch (error) {
      reportOnce("editor aids not added", error);
    }
  },
});
