// The context-window schedules and fuse weights of sampling/context.py, for drawing them in the browser.
// A line-by-line port: tests/browser/test_frontend.py checks that both give the same windows and weights.
// A window is a list of frame indices in the order the motion module sees them.

export const SCHEDULES = ["uniform_standard", "uniform_looped", "static", "batched"];
export const FUSE_METHODS = ["pyramid", "flat", "overlap_linear"];

const range = (start, stop) => Array.from({ length: stop - start }, (_, i) => start + i);

// Python's round() rounds halves to even (round(2.5) == 2); Math.round would move seams by a frame.
function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// The message sampling.context.check_settings would raise, or null when the settings are valid.
export function checkSettings(length, overlap, stride = 1, schedule = "uniform_standard") {
  if (!(length >= 1)) return `context_length must be at least 1 (it is ${length})`;
  if (!(overlap >= 0)) return `context_overlap must be 0 or more (it is ${overlap})`;
  if (overlap >= length) return `context_overlap (${overlap}) must be smaller than context_length (${length})`;
  if (!(stride >= 1)) return `context_stride must be at least 1 (it is ${stride})`;
  if (!SCHEDULES.includes(schedule)) return `unknown schedule ${schedule}`;
  return null;
}

// 0, 1/2, 1/4, 3/4, 1/8, …: the base-2 van der Corput sequence (how far uniform schedules shift per step).
export function rotation(step) {
  let fraction = 0, scale = 0.5;
  while (step > 0) {
    fraction += scale * (step & 1);
    step >>= 1;
    scale /= 2;
  }
  return fraction;
}

function tileLine(n, length, overlap, offset) {
  if (n <= length) return [range(0, n)];
  const hop = length - overlap;
  let start = offset % hop ? (offset % hop) - hop : 0;
  const starts = [];
  for (;;) {
    const placed = Math.min(Math.max(start, 0), n - length);
    if (!starts.length || starts[starts.length - 1] !== placed) starts.push(placed);
    if (start + length >= n) return starts.map((s) => range(s, s + length));
    start += hop;
  }
}

function tileRing(n, length, overlap, offset, closedLoop) {
  if (n <= length) return [range(0, n)];
  const hop = length - overlap;
  const count = closedLoop ? Math.ceil(n / hop) : Math.ceil((n - overlap) / hop);
  return range(0, count).map((k) => range(0, length).map((j) => (offset + k * hop + j) % n));
}

function tileBatches(n, length) {
  const windows = [];
  for (let s = 0; s < n; s += length) windows.push(range(s, Math.min(s + length, n)));
  return windows;
}

function tile(schedule, n, length, overlap, closedLoop, step) {
  switch (schedule) {
    case "uniform_standard":
      return tileLine(n, length, overlap, roundHalfEven(rotation(step) * (length - overlap)));
    case "uniform_looped":
      return tileRing(n, length, overlap, roundHalfEven(rotation(step) * n) % n, closedLoop);
    case "static":
      return tileLine(n, length, overlap, 0);
    case "batched":
      return tileBatches(n, length);
  }
  throw new Error(`unknown schedule ${schedule}`);
}

// The windows of sampling step `step` (0-based), as sampling.context.windows returns them.
export function contextWindows(schedule, frames, length, overlap, stride = 1, closedLoop = false, step = 0) {
  const problem = checkSettings(length, overlap, stride, schedule);
  if (problem) throw new Error(problem);
  if (frames <= length) return [range(0, frames)];
  const found = [], seen = new Set();
  for (let level = 0; level < stride; level++) {
    const spacing = 2 ** level;
    if (spacing > 1 && spacing * length > frames) break;
    for (let first = 0; first < spacing; first++) {
      const framesHere = [];
      for (let f = first; f < frames; f += spacing) framesHere.push(f);
      for (const window of tile(schedule, framesHere.length, length, overlap, closedLoop, step)) {
        const indices = window.map((p) => framesHere[p]);
        const key = indices.join(",");
        if (!seen.has(key)) {
          seen.add(key);
          found.push(indices);
        }
      }
    }
  }
  return found;
}

// Unnormalised weight of each position of a window (sampling.context.fuse_weights).
export function fuseWeights(method, windowLength, overlap = 0) {
  return range(0, windowLength).map((p) => {
    const fromEdge = Math.min(p, windowLength - 1 - p);
    if (method === "pyramid") return fromEdge + 1;
    if (method === "flat") return 1;
    if (method === "overlap_linear") return Math.min((fromEdge + 1) / (overlap + 1), 1);
    throw new Error(`unknown fuse_method ${method}`);
  });
}

// Per window, the share of each of its frames in the fused result; a frame's shares sum to one.
export function windowWeights(windows, frames, method, overlap = 0) {
  const raw = windows.map((w) => fuseWeights(method, w.length, overlap));
  const total = new Array(frames).fill(0);
  windows.forEach((w, i) => w.forEach((f, p) => (total[f] += raw[i][p])));
  return windows.map((w, i) => w.map((f, p) => raw[i][p] / total[f]));
}
