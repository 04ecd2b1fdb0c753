// Reading the graph for the pack's editor aids: the pack's node ids, widget values, what feeds a node and
// which samplers a node's output reaches, the latent's frame count, and a refresh loop that survives errors.
// Only the public extension API and LiteGraph node methods are used.
import { app } from "../../../scripts/app.js";

export const CONTEXT = "AnimateDiff_ContextWindows";
export const APPLY = "AnimateDiff_ApplyMotionModule";
export const SAMPLER = "AnimateDiff_Sampler";
export const LOAD = "AnimateDiff_LoadMotionModule";
export const APPLY_SPARSE = "AnimateDiff_ApplySparseCtrl";
export const PIA_IMAGE = "AnimateDiff_PIAImage";
export const APPLY_CAMERA = "AnimateDiff_ApplyCameraCtrl";
export const PROMPT_SCHEDULE = "AnimateDiff_PromptSchedule";

export const widgetValue = (node, name) => node?.widgets?.find((w) => w.name === name)?.value;
export const inputIndex = (node, name) => node?.inputs?.findIndex((i) => i.name === name) ?? -1;
// A MODEL travels on, or inside a GUIDER (CFGGuider → SamplerCustomAdvanced); "*": Reroute nodes
export const isModelSlot = (slot) => ["MODEL", "GUIDER", "*"].includes(slot?.type);
export const isGuidanceSlot = (slot) => ["CONDITIONING", "GUIDER", "*"].includes(slot?.type);
export const classOf = (node) => node?.comfyClass ?? node?.type;
export const isActive = (node) => node.mode !== 2 && node.mode !== 4; // LiteGraph's muted (NEVER) and BYPASS modes

// Drawing runs every frame: report a failure once, not sixty times a second.
const reported = new Set();
export function reportOnce(what, error) {
  if (reported.has(what)) return;
  reported.add(what);
  console.warn(`AnimateDiff: ${what}`, error);
}

export function inputNode(node, index) {
  try {
    return index >= 0 && typeof node.getInputNode === "function" ? node.getInputNode(index) : null;
  } catch {
    return null; // e.g. a node being removed from its graph
  }
}

// The nodes a MODEL travels through on its way into `node` (nearest first), through any adapter nodes.
export function modelPathUp(node) {
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

// The frame count reaching a sampler: the latent's batch_size, through the core nodes that change it.
export function latentFrames(sampler) {
  return latentCount(inputNode(sampler, inputIndex(sampler, "latent_image")), 0);
}

function latentCount(node, depth) {
  if (!node || depth > 32 || node.mode === 2) return null; // a muted node gives nothing
  const latentInput = node.inputs?.findIndex((i) => i.type === "LATENT" || i.type === "*") ?? -1;
  const passedThrough = () => latentCount(inputNode(node, latentInput), depth + 1);
  if (node.mode === 4) return passedThrough(); // bypassed
  const own = widgetValue(node, "batch_size"); // Empty Latent Image and its kin
  if (typeof own === "number") return own;
  const up = (name) => latentCount(inputNode(node, inputIndex(node, name)), depth + 1);
  const known = (...values) => values.every((v) => typeof v === "number");
  switch (classOf(node)) {
    case "RepeatLatentBatch": {
      const [count, amount] = [up("samples"), widgetValue(node, "amount")];
      return known(count, amount) ? count * amount : null;
    }
    case "LatentFromBatch": { // as ComfyUI cuts it: the index and length kept inside the batch
      const [count, index, length] = [up("samples"), widgetValue(node, "batch_index"), widgetValue(node, "length")];
      return known(count, index, length) ? Math.min(count - Math.min(count - 1, index), length) : null;
    }
    case "LatentBatch": {
      const [first, second] = [up("samples1"), up("samples2")];
      return known(first, second) ? first + second : null;
    }
    default: // other latent nodes (upscale, noise mask, …) keep their input's batch
      return passedThrough();
  }
}

// Samplers (any node with a latent_image input: KSampler, AnimateDiff_Sampler, …) that take what comes out
// of `node` on slots `carries` accepts (its MODEL, or its conditioning), however many nodes lie between.
export function samplersDownstream(node, carries = isModelSlot) {
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

// What the aids show depends on other nodes (links, the latent's batch_size, the motion module file), which
// change without telling this node: it is worked out a few times a second, in both of the front-end's node
// designs, and shown again only when it changed.
const REFRESH_MS = 250;

export function refreshEvery(node, what, refresh) {
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
export const vueNodeDesign = () => !!app.extensionManager?.setting?.get?.("Comfy.VueNodes.Enabled");
