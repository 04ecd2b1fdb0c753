#!/usr/bin/env bash
# Installs what the browser tests (tests/browser) need from the system: Debian's Chromium, which Playwright
# drives. (Playwright itself comes with scripts/requirements-dev.txt; `playwright install` is never used.)
set -euo pipefail
chromium=${ANIMATEDIFF_CHROMIUM:-/usr/bin/chromium}
[ -x "$chromium" ] && exit 0

if [ "$(id -u)" = 0 ]; then
    as_root=()
elif command -v sudo >/dev/null; then
    as_root=(sudo)
else
    echo "browser-deps: $chromium is missing and there is no sudo: install Debian's chromium package." >&2
    exit 1
fi
if ! command -v apt-get >/dev/null; then
    echo "browser-deps: $chromium is missing and this is not a Debian system: install Chromium and set" \
         "ANIMATEDIFF_CHROMIUM to its binary." >&2
    exit 1
fi
echo "browser-deps: installing Debian's chromium for the browser tests" >&2
"${as_root[@]}" apt-get update -qq >&2
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
