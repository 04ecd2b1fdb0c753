"""A real ComfyUI server on 127.0.0.1 for the demo and the server tests, and the UI→API workflow conversion.

Started as `main.py --cpu` (or on the GPU when asked) from the host of scripts/host.sh, with its own
temporary model, input, output and user folders, so it never touches a user's ComfyUI data.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

FRONTEND_ONLY_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """`with ComfyServer(comfyui, models={"checkpoints": {...}}) as server:` — models maps a folder name to
    {file name: path}; each file is linked into the server's own model folder under that name. `env` adds to
    the environment the server process inherits."""

    def __init__(self, comfyui_path, models: dict[str, dict[str, Path]], gpu=False, python=sys.executable,
                 env: dict[str, str] | None = None):
        self.comfyui_path = Path(comfyui_path)
        self.models, self.gpu, self.python = models, gpu, python
        self.env = {**os.environ, **(env or {})}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id = uuid.uuid4().hex

    def __enter__(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="animatediff-server-")
        root = Path(self._tmp.name)
        self.output_dir, self.input_dir, self.models_dir = root / "output", root / "input", root / "models"
        yaml_lines = ["animatediff_server:", f"    base_path: {root / 'models'}"]
        for folder, files in self.models.items():
            (root / "models" / folder).mkdir(parents=True)
            for name, path in files.items():
                (root / "models" / folder / name).symlink_to(Path(path).resolve())
            yaml_lines.append(f"    {folder}: {folder}")
        (root / "extra_model_paths.yaml").write_text("\n".join(yaml_lines) + "\n")
        for folder in ("output", "input", "user", "temp"):
            (root / folder).mkdir()
        args = [self.python, "main.py", "--listen", "127.0.0.1", "--port", str(self.port),
                "--disable-auto-launch", "--extra-model-paths-config", str(root / "extra_model_paths.yaml"),
                "--output-directory", str(root / "output"), "--input-directory", str(root / "input"),
                "--user-directory", str(root / "user"), "--temp-directory", str(root / "temp")]
        if not self.gpu:
            args.append("--cpu")
        self.log_path = root / "server.log"
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(args, cwd=self.comfyui_path, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=self.env)
        self._wait_until_up(timeout=180)
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()
        self._tmp.cleanup()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait_until_up(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                self.get("/object_info/KSampler")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not start in {timeout} s:\n{self.log()[-4000:]}")

    def request(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def get(self, path):
        status, body = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}: {body}")
        return body

    def queue(self, prompt: dict) -> str:
        status, body = self.request("POST", "/prompt", {"prompt": prompt, "client_id": self.client_id})
        if status != 200:
            raise RuntimeError(f"/prompt refused the workflow (HTTP {status}): {json.dumps(body)[:2000]}")
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout=1800) -> dict:
        """The prompt's /history entry once it has finished, successfully or not."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI died while running the prompt:\n{self.log()[-4000:]}")
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")

    def run(self, prompt: dict, timeout=1800) -> dict:
        return self.wait(self.queue(prompt), timeout)


def execution_error(entry: dict) -> dict | None:
    """The execution_error message of a finished /history entry, if it failed."""
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return data
    return None


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """Converts a UI-format workflow (what users share) into the API format /prompt takes.

    Widget values are stored by position in the UI format: the node's widget inputs in declaration order
    (required, then optional), with one extra value after any input that has `control_after_generate`.
    """
    links = {link[0]: link for link in workflow["links"]}  # id, from node, from slot, to node, to slot, type
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY_NODES or node.get("mode", 0) in (2, 4):  # muted or bypassed
            continue
        info = object_info.get(node["type"])
        if info is None:
            raise KeyError(f"node {node['id']} is a {node['type']}, which this ComfyUI does not know")
        inputs, values = {}, list(node.get("widgets_values") or [])
        linked = {i["name"]: i["link"] for i in node.get("inputs", []) if i.get("link") is not None}
        specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        for name in info["input_order"].get("required", []) + info["input_order"].get("optional", []):
            kind, options = specs[name][0], (specs[name][1] if len(specs[name]) > 1 else {})
            if isinstance(kind, list) or kind in WIDGET_TYPES:
                if values:
                    inputs[name] = values.pop(0)
                if options.get("control_after_generate") and values:
                    values.pop(0)
            if name in linked:
                _, source, slot, *_ = links[linked[name]]
                inputs[name] = [str(source), slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def adapt_workflow(prompt: dict, files: dict | None = None, width: int | None = None, height: int | None = None,
                   frames: int | None = None, steps: int | None = None) -> dict:
    """Points an API-form workflow at other model files and a smaller size, in place. `files` maps a widget
    (ckpt_name, model_name, …) to the file every node with that widget should load; None keeps a value."""
    for node in prompt.values():
        inputs = node["inputs"]
        inputs.update({k: v for k, v in (files or {}).items() if k in inputs})
        if node["class_type"] == "EmptyLatentImage":
            inputs.update({k: v for k, v in {"width": width, "height": height, "batch_size": frames}.items() if v})
        if node["class_type"] == "AnimateDiff_PromptSchedule" and frames:
            inputs["frames"] = frames
        if "steps" in inputs and steps:
            inputs["steps"] = steps
    return prompt
