"""The frontend end to end in a real browser: Debian's chromium, headless, driven by
playwright-core (tests/browser/stream_query.js, installed by `make browser`), on this machine.
It opens the site through Caddy over HTTPS (Caddy's own CA trusted, the name localhost),
logs in with the site's API key, sends a streamed query and sees the answer grow token by
token until it is done. The screenshot is kept in build/molecule/app_tier-browser.png."""
import json
import os
import shutil
import subprocess

import pytest

# The certificate of Caddy's CA (tls internal) that signs the site's, sent with it.
INTERMEDIATE = "/var/lib/multimodel/caddy/caddy/pki/authorities/local/intermediate.crt"
CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(not CHROMIUM, reason="Debian's chromium is not installed (make host-packages installs it)")
def test_a_streamed_answer_appears_in_the_browser(host, api_key, tmp_path):
    project = os.environ["MOLECULE_PROJECT_DIRECTORY"]
    modules = os.path.join(project, "build", "browser", "node_modules")
    assert os.path.isdir(os.path.join(modules, "playwright-core")), "run make browser (npm ci of tests/browser)"
    address = subprocess.run(["docker", "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                              host.backend.get_hostname()], capture_output=True, text=True, check=True).stdout.split()[0]
    (tmp_path / "ca.crt").write_text(host.file(INTERMEDIATE).content_string)
    screenshot = os.path.join(project, "build", "molecule", "app_tier-browser.png")
    os.makedirs(os.path.dirname(screenshot), exist_ok=True)
    run = subprocess.run(["node", os.path.join(project, "tests", "browser", "stream_query.js"), address, api_key,
                          str(tmp_path / "ca.crt"), screenshot, CHROMIUM],
                         env=dict(os.environ, NODE_PATH=modules), capture_output=True, text=True, timeout=240,
                         check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    page = json.loads(run.stdout)
    assert page["title"] == "multimodel terminal" and page["errors"] == [], page
    assert page["session"] == 401  # the site has API keys: the page asked for one, and logged in
    assert not [text for dummy, text in page["lines"] if text.startswith("error")], page["lines"]
    answer = [text for cls, text in page["lines"] if cls == "answer"][-1]
    assert answer.strip(), page["lines"]
    # Streamed: the answer grew in several steps, from WebSocket frames, before it was done.
    lengths = [length for dummy, length in page["growth"]]
    assert len(set(lengths)) >= 3 and lengths == sorted(lengths), page["growth"]
    assert page["frames"] >= 3, page
    assert page["sent"] < page["growth"][0][0] <= page["growth"][-1][0] <= page["done"]
    assert os.path.getsize(screenshot) > 10000
