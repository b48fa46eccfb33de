"""What a person sees, in a real browser (Debian's headless Chromium, which .ci/run installs): `make ui`'s
landing address shows the synth2 training runs, not MLflow's GenAI overview; `pipeline.html` renders its
sections and links every gate's page. The DOM is read after the page's scripts ran (`--dump-dom` with a
virtual time budget), so MLflow's single-page app has drawn its runs table."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.services import free_port, service_env, started, wait_healthy
from tests.test_mlflow_view import client_of, record_run

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium: `apt-get install chromium` (.ci/run does)"),
]


def rendered_dom(url: str, budget_ms: int = 20000) -> str:
    """The page's DOM once its scripts ran, as headless Chromium serialises it."""
    with tempfile.TemporaryDirectory() as profile:
        flags = [
            "--headless",
            "--no-sandbox",  # we run as root here
            "--disable-gpu",
            # No connection leaves this machine: without these Chromium keeps trying its own services.
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            "--dump-dom",
        ]
        result = subprocess.run([CHROMIUM, *flags, url], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0 and "</html>" in result.stdout, result.stderr[-2000:]
    return result.stdout


def text_of(dom: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", dom))


def test_make_ui_lands_on_the_synth2_training_runs_in_a_browser(workspace: Path, monkeypatch: pytest.MonkeyPatch):
    record_run(workspace, "pipeline first", monkeypatch)
    record_run(workspace, "pipeline second", monkeypatch)
    client_of(workspace).create_experiment("other")  # newer, and not where the user lands
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "flows.ui",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{workspace}/mlflow.db",
    ]
    env = service_env(PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    log = workspace / "ui.log"
    with started(cmd, env, log, {"cwd": workspace}) as proc:
        wait_healthy(proc, f"http://127.0.0.1:{port}/health", log)
        (line,) = [x for x in log.read_text().splitlines() if x.startswith("MLflow UI")]
        text = text_of(rendered_dom(line.split(": ", 1)[1]))
    # The runs table of synth2, in the model-training view: both runs by name, the experiment's breadcrumb.
    assert "pipeline first" in text and "pipeline second" in text, text[:3000]
    assert "synth2" in text and "Runs" in text
    assert "2 matching runs" in text, text[:3000]
    # Not the GenAI overview the home page opens on (its traces table and "Detect Issues").
    assert "Detect Issues" not in text and "No traces" not in text


def test_pipeline_html_renders_every_section_and_links_each_gate_page(tiny_pipeline: Path):
    report = tiny_pipeline / "reports" / "pipeline.html"
    dom = rendered_dom(report.as_uri(), budget_ms=2000)
    headings = [text_of(h).strip() for h in re.findall(r"<h2[^>]*>(.*?)</h2>", dom, flags=re.S)]
    for section in (
        "Captioning metrics",
        "Training curves",
        "Diversity of the synthetic captions",
        "Example captions (test)",
        "Data-quality gates (Great Expectations)",
    ):
        assert section in headings, headings
    for gate in ("pool", "real", "captions", "balanced", "synthetic"):
        assert f'href="gates/{gate}.html"' in dom
        page = text_of(rendered_dom((report.parent / "gates" / f"{gate}.html").as_uri(), budget_ms=1000))
        assert f"Gate {gate}: passed" in " ".join(page.split())
