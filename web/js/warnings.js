// Warnings on the motion-module and sampler nodes when a latent holds more frames than the motion module can
// see at once (or a ModelSampling node would replace Apply Motion Module's schedule), on Apply SparseCtrl and
// PIA Image when their frames are not in the video, on Apply CameraCtrl when a call would hold more frames than
// its pose encoder takes, and on Prompt Schedule when its frames are not the latent's: in the words the run
// would stop with, in the canvas and in the Vue node design alike.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";
import {
  APPLY, APPLY_CAMERA, APPLY_SPARSE, CONTEXT, LOAD, PIA_IMAGE, PROMPT_SCHEDULE, SAMPLER, classOf, inputIndex,
  inputNode, isActive, isGuidanceSlot, latentFrames, modelPathUp, refreshEvery, samplersDownstream, vueNodeDesign,
  widgetValue,
} from "./graph.js";

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

// Apply CameraCtrl: each UNet call holds a window's frames (all of them without windows), and CameraCtrl's pose
// encoder takes at most 16.
const CAMERA_FRAMES = 16;
function cameraWarning(node) {
  for (const sampler of samplersDownstream(node)) {
    const frames = latentFrames(sampler);
    if (typeof frames !== "number" || !isActive(sampler)) continue;
    const windows = modelPathUp(sampler).find((n) => classOf(n) === CONTEXT && isActive(n));
    const length = windows ? widgetValue(windows, "context_length") : frames;
    if (typeof length !== "number" || Math.min(length, frames) <= CAMERA_FRAMES) continue;
    return windows
      ? `context_length=${length}, but CameraCtrl's pose encoder takes at most ${CAMERA_FRAMES} frames at a ` +
        `time: set context_length to ${CAMERA_FRAMES} or less.`
      : `${frames} frames, but CameraCtrl's pose encoder takes at most ${CAMERA_FRAMES} at a time: add Context ` +
        `Windows (AnimateDiff) with context_length ${CAMERA_FRAMES} or less, or use fewer frames.`;
  }
  return null;
}

// Prompt Schedule's frames against the frames of the samplers its conditioning reaches with an animating model:
// ComfyUI would repeat or cut the prompts to the latent's batch, so Apply Motion Module stops such a run.
function promptScheduleWarning(node) {
  const scheduled = widgetValue(node, "frames");
  for (const sampler of samplersDownstream(node, isGuidanceSlot)) {
    const frames = latentFrames(sampler);
    if (typeof scheduled !== "number" || typeof frames !== "number" || !isActive(sampler)) continue;
    if (!modelPathUp(sampler).some((n) => classOf(n) === APPLY && isActive(n))) continue;
    if (scheduled !== frames) {
      return `frames=${scheduled}, but the latent holds ${frames}: set frames to ${frames} (the latent's ` +
        `batch_size), or the batch_size to ${scheduled}.`;
    }
  }
  return null;
}

// The nodes that show a warning.
export const WARNED = [APPLY, SAMPLER, APPLY_SPARSE, PIA_IMAGE, APPLY_CAMERA, PROMPT_SCHEDULE];

function nodeWarning(node) {
  if (classOf(node) === PROMPT_SCHEDULE) return promptScheduleWarning(node);
  if (classOf(node) === APPLY_SPARSE) return sparseWarning(node);
  if (classOf(node) === APPLY_CAMERA) return cameraWarning(node);
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
export function drawWarning(ctx, node, text) {
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

// The canvas design draws the warning below the node (drawWarning); the Vue design shows it as a DOM widget at
// the bottom of the node, hidden while there is nothing to say (and always in the canvas design).
export function addWarning(node) {
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
