"""Screenshots of the MLflow UI on a sweep, as a browser shows it (the README's pictures).

    python benchmarks/ui_screenshots.py sweeps/quickstart.yaml [--store mlflow.db] [--out docs]

Starts ``mlflow server`` on loopback over the store, opens in headless Chromium (Debian's
``chromium``, driven by Playwright) the link ``lvas sweep`` prints (runs grouped by row) and the
sweep's parent run, and saves ``mlflow_first_screen.png`` and ``mlflow_parent_run.png``.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep")
    ap.add_argument("--store", default="mlflow.db")
    ap.add_argument("--out", default="docs")
    args = ap.parse_args()
    from mlflow import MlflowClient
    from playwright.sync_api import sync_playwright

    from lvas.sweep.parent import ui_link
    from lvas.sweepspec import load_sweep

    spec = load_sweep(args.sweep)
    uri = f"sqlite:///{Path(args.store).resolve()}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host",
                               "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(180):
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        link = ui_link(spec, uri).replace("http://127.0.0.1:5000", base)
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(spec.name)
        parent = next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("lvas_role") == "sweep")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1500, "height": 950})
            for url, name, wait_for in (
                    (link, "mlflow_first_screen.png", "Group:"),
                    (f"{base}/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}?workflowType=machine_learning",
                     "mlflow_parent_run.png", "Best row")):
                page.goto(url)
                for _ in range(120):
                    if wait_for in page.inner_text("body"):
                        break
                    time.sleep(0.5)
                time.sleep(1.0)
                page.screenshot(path=str(out / name))
                print(out / name)
            browser.close()
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
