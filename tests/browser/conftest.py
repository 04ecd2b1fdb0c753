"""The pack as users meet it: a real ComfyUI server and its real front-end in Debian's headless Chromium.
The server and browser live for one test module, so their memory is free again for the rest of the suite.

Chromium comes from the system (scripts/browser-deps.sh installs it), never from `playwright install`, and
its absence fails these tests rather than skipping them.
"""
import os
from pathlib import Path

import pytest
import safetensors.torch
from playwright.sync_api import sync_playwright

from comfy_server import ComfyServer
from make_fixtures import comfyui_path

CHROMIUM = os.environ.get("ANIMATEDIFF_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--no-first-run"]


@pytest.fixture(scope="module")
def server(fixtures_dir, tmp_path_factory):
    no_tensors = tmp_path_factory.mktemp("files") / "no_tensors.safetensors"
    safetensors.torch.save_file({}, no_tensors)
    models = {
        "checkpoints": {"sd15_random.safetensors": fixtures_dir / "sd15_random.safetensors"},
        "animatediff_models": {"mm_v1.safetensors": fixtures_dir / "mm_v1.safetensors",
                               "mm_v2.safetensors": fixtures_dir / "mm_v2.safetensors",
                               "mm_sdxl_v10_beta.safetensors": fixtures_dir / "small" / "mm_sdxl.safetensors",
                               "AnimateLCM_sd15_t2v.safetensors": fixtures_dir / "small" / "mm_animatelcm.safetensors",
                               "a_checkpoint.safetensors": fixtures_dir / "sd15_random.safetensors",
                               "no_tensors.safetensors": no_tensors},
    }
    with ComfyServer(comfyui_path(), models) as running:
        # a fresh user is greeted by the template browser; this user has seen it
        status, _ = running.request("POST", "/settings/Comfy.TutorialCompleted", True)
        assert status == 200
        yield running


@pytest.fixture(scope="module")
def pack_name(server) -> str:
    """The pack's folder name under custom_nodes, which names its URLs (/extensions/<pack>/...)."""
    module = server.get("/object_info/AnimateDiff_Sampler")["AnimateDiff_Sampler"]["python_module"]
    return module.split(".", 1)[1]


SCREENSHOTS = []  # the folder, once made: named in the summary at the end of the run


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory):
    SCREENSHOTS.append(tmp_path_factory.mktemp("screenshots"))
    return SCREENSHOTS[-1]


def pytest_terminal_summary(terminalreporter):
    for folder in SCREENSHOTS:
        terminalreporter.write_line(f"browser screenshots: {folder} (the context-window timeline is also "
                                    "copied to /tmp/animatediff-timeline.png)")


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/browser-deps.sh (scripts/test does), or set "
                    "ANIMATEDIFF_CHROMIUM to a Chromium binary.")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def app_page(browser, server):
    """One page with the ComfyUI front-end loaded (that takes a while); each test loads its own graph."""
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.problems = []
    page.on("pageerror", lambda error: page.problems.append(f"uncaught: {error}"))
    page.on("console", lambda message: page.problems.append(f"console.{message.type}: {message.text}")
            if message.type in ("error", "warning") and "AnimateDiff" in message.text else None)
    # our files must all load; a 4xx/5xx of anything under /extensions/ would show here
    page.on("response", lambda response: page.problems.append(f"HTTP {response.status}: {response.url}")
            if response.status >= 400 and "/extensions/" in response.url else None)
    page.goto(server.url)
    page.wait_for_function("() => window.app?.graph && window.LiteGraph?.registered_node_types", timeout=120_000)
    page.wait_for_function("() => 'AnimateDiff_ContextWindows' in LiteGraph.registered_node_types")
    assert page.problems == [], page.problems
    yield page
    page.close()


@pytest.fixture
def page(app_page):
    """The shared page; fails the test if the page threw, or our extension logged an error or a warning."""
    app_page.problems.clear()
    yield app_page
    assert app_page.problems == [], app_page.problems

