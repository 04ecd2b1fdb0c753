"""The benchmark at a tiny size, so it cannot rot: it runs end to end and reports sane numbers."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"


def test_benchmark_quick_run_reports_every_figure(tmp_path):
    subprocess.run([sys.executable, str(BENCH), "--quick", "--out", str(tmp_path)], check=True, timeout=1800)
    report = json.loads((tmp_path / "bench.json").read_text())
    (row,) = report["overhead"]
    assert row["version"] == "v2" and row["with_s"] > 0 and row["without_s"] > 0
    assert 1.2 < row["flop_floor"] < 1.6  # the module adds about a third of the UNet's FLOPs
    rooflines = [card["v2"] for card in report["roofline"]["cards"].values()]
    assert len(rooflines) == 4 and all(1 < r < 2 for r in rooflines)
    assert all(report["load"][k] > 0 for k in ("ours_s", "read_s", "to_device_s", "minimum_s")) and report["module"]["ratio"] > 0
    training = report["training"]
    assert 0 < training["recomputed_kept_bytes"] < training["kept_kept_bytes"] and training["kept_s"] > 0
    assert [m["frames"] for m in report["memory"]] == [8, 16]
    assert all(m["rss_peak_bytes"] >= m["rss_after_load_bytes"] > 0 for m in report["memory"])
    tables = (tmp_path / "bench.md").read_text()
    assert "FLOP floor" in tables and "Roofline ratio" in tables and "kept for backward" in tables
