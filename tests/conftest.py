"""Shared set-up of the test suite: the tests folder on sys.path (for ``import reference``, ``import localhttp``), a
seed per test, a session-wide temp dir for processed data (hermetic: nothing is written to ~/.cache, and IMDB / News20
are processed once per session whichever test needs them first), and the fixtures of the data and run tests: ``data``,
``workdir``, ``home`` (an empty home, no proxies) and ``server`` (a local HTTP server for the download paths)."""
from __future__ import annotations

import http.server
import os
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from datamodules import files

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import reference` under any --import-mode


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same global RNG state, so a failure reproduces when run alone."""
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session", autouse=True)
def _processed_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GATEZOO_CACHE", os.environ.get("GATEZOO_TEST_CACHE") or str(tmp_path_factory.mktemp("processed")))
        yield


@pytest.fixture(scope="session")
def data() -> Path:
    """The shared data directory (``$GATEZOO_DATA``, else ../shared/data); missing, the tests fail (never skip)."""
    env = os.environ.get(files.ENV_DATA)
    path = Path(env).expanduser().absolute() if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (path / "MANIFEST.md").is_file():
        pytest.fail(f"no shared data at {path}: set ${files.ENV_DATA} to the directory of shared/data/MANIFEST.md")
    return path


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A run's results, checkpoints and W&B files in tmp_path (the current directory there too); the data from
    ``$GATEZOO_DATA``, else ../shared/data."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEZOO_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("GATEZOO_RUNS", str(tmp_path / "runs"))
    if "GATEZOO_DATA" not in os.environ:
        monkeypatch.setenv("GATEZOO_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    return tmp_path


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/www; ``hits`` lists the paths requested."""
    root, hits = tmp_path / "www", []
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield SimpleNamespace(root=root, url=f"http://127.0.0.1:{srv.server_address[1]}", hits=hits)
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty home (so ~/.cache/gatezoo/data is empty too) and no proxy between us and 127.0.0.1."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "home"
