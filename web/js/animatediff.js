// The pack's front-end: a timeline of the context windows on "Context Windows (AnimateDiff)" nodes, and the
// warnings of warnings.js on the motion-module, sampler, Apply SparseCtrl, PIA Image, Apply CameraCtrl and
// Prompt Schedule nodes; in the canvas and in the Vue node design alike. Only the public extension API and
// LiteGraph node methods are used, everything is feature-detected, and errors are caught: a front-end update
// may hide these aids, never break a graph.
import { app } from "../../../scripts/app.js";
import { checkSettings, contextWindows, windowWeights } from "./context_schedule.js";
import { CONTEXT, classOf, latentFrames, refreshEvery, reportOnce, samplersDownstream, widgetValue } from "./graph.js";
import { WARNED, addWarning, drawWarning } from "./warnings.js";

const TIMELINE_HEIGHT = 110;
const MAX_PREVIEW_FRAMES = 4096; // ComfyUI's own batch_size limit

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
    if (!WARNED.includes(nodeData?.name)) return;
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
      else if (WARNED.includes(classOf(node))) addWarning(node);
    } catch (error) {
      reportOnce("editor aids not added", error);
    }
  },
});
