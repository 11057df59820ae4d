"""`dvc plots show` writes an HTML page that works offline.

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so without a network every
Vega plot is blank. .dvc/config sets `plots.html_template` (resolved against .dvc/) to a page with
those scripts inlined; these tests check the config, the template, and the page the real dvc CLI
writes with it in a scratch repo: no remote script, the libraries inlined, every plot's div there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DVC_DIR = REPO / ".dvc"
BIN = Path(sys.executable).parent

# a <script> that loads anything from the network (http, https or protocol-relative)
REMOTE_SCRIPT = re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"']?\s*(?:https?:)?//", re.IGNORECASE)
SCRIPT_SRC = re.compile(r"<script\b[^>]*\bsrc\s*=", re.IGNORECASE)
# the UMD globals each inlined build defines, next to the version string it carries
LIBRARIES = {
    "vega": (r"\.vega=\{\}", r'"use strict";var \w+="{v}"'),
    "vega-lite": (r"\.vegaLite=\{\}", r'"use strict";var \w+="{v}"'),
    "vega-embed": (r"\.vegaEmbed=", r'\w+="{v}"'),
}

DVC_YAML = """\
plots:
  - confusion.csv:
      template: confusion
      x: actual
      y: predicted
  - Loss:
      template: linear
      x: step
      y:
        loss.csv: loss
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def _dvc(cwd: Path, *args: str) -> str:
    dvc = shutil.which("dvc", path=_env()["PATH"])
    assert dvc, "dvc CLI not found next to the interpreter or on PATH"
    proc = subprocess.run(
        [dvc, *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _configured_template() -> str:
    return _dvc(REPO, "config", "--project", "plots.html_template").strip()


def _default_versions() -> dict[str, str]:
    """The versions DVC's own page loads from the CDN: the template must inline the same."""
    from dvc_render.vega import VegaRenderer

    found = dict(re.findall(r"/npm/(vega(?:-lite|-embed)?)@([\d.]+)", VegaRenderer.SCRIPTS))
    assert set(found) == set(LIBRARIES), VegaRenderer.SCRIPTS
    return found


def test_config_names_an_existing_offline_template():
    value = _configured_template()
    assert value and not os.path.isabs(value), value
    template = DVC_DIR / value  # dvc joins a relative plots.html_template onto .dvc/
    assert template.is_file(), template
    text = template.read_text(encoding="utf8")
    assert text.count("{plot_divs}") == 1
    # DVC fills a scripts placeholder with its CDN <script src> tags: the template must not have one
    assert "{scripts}" not in text
    assert not SCRIPT_SRC.search(text)
    for name, version in _default_versions().items():
        assert f"{name} {version}" in text.split("<html>", 1)[0], f"header names {name} {version}"


def _write_plot_data(root: Path) -> None:
    labels = ["cat", "dog", "owl"]
    rows = ["actual,predicted"] + [f"{a},{labels[i % 2]}" for i, a in enumerate(labels * 4)]
    (root / "confusion.csv").write_text("\n".join(rows) + "\n")
    steps = "\n".join(f"{i},{2.0 - 0.1 * i:.2f}" for i in range(10))
    (root / "loss.csv").write_text(f"step,loss\n{steps}\n")
    (root / "dvc.yaml").write_text(DVC_YAML)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("plots-offline")
    _dvc(root, "init", "--no-scm", "-q")
    value = _configured_template()
    dest = root / ".dvc" / value
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(DVC_DIR / value, dest)
    _dvc(root, "config", "plots.html_template", value)
    _write_plot_data(root)
    # no --html-template: plain `dvc plots show` must pick the template up from the config
    _dvc(root, "plots", "show", "-o", "html")
    return (root / "html" / "index.html").read_text(encoding="utf8")


def test_page_loads_no_remote_script(page):
    assert not REMOTE_SCRIPT.search(page)
    assert not SCRIPT_SRC.search(page)
    assert "cdn.jsdelivr" not in page


def test_page_inlines_vega_vega_lite_and_vega_embed(page):
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", page, flags=re.DOTALL)
    code = "\n".join(scripts)
    for name, version in _default_versions().items():
        umd_global, version_pattern = LIBRARIES[name]
        assert re.search(umd_global, code), f"{name} build not inlined"
        assert re.search(version_pattern.format(v=re.escape(version)), code), f"{name} {version}"


def test_page_has_every_plot_filled(page):
    for div in ("confusion_csv", "Loss"):
        assert f'<div id = "{div}">' in page, div
        assert f"vegaEmbed('#{div}', spec)" in page, div
    assert page.count("vegaEmbed('#") == 2
    assert "<DVC_METRIC" not in page
    assert "{plot_divs}" not in page and "{refresh_tag}" not in page
    assert '"cat"' in page and '"loss"' in page
