"""A real headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by
Selenium, and a real ``polaris-twin`` process to point it at. Shared by the console
tests and ``bench/console.py``."""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def browser_available() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


def artifacts_dir() -> Path:
    root = Path(
        os.environ.get(
            "POLARIS_TEST_ARTIFACTS", Path(tempfile.gettempdir()) / "polaris-test-artifacts"
        )
    )
    out = root / "console"
    out.mkdir(parents=True, exist_ok=True)
    return out


@contextmanager
def chromium(width: int = 1440, height: int = 1000) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="polaris-chromium-")
    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_argument(f"--window-size={width},{height}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def full_page_screenshot(driver: Any, path: Path) -> Path:
    """The whole page, not only the viewport (DevTools protocol)."""
    import base64

    size = driver.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
    )
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1},
        },
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TwinProcess:
    """``polaris-twin --world-model statistical --demo-load N`` as a subprocess."""

    def __init__(
        self, demo_load: float = 200.0, model: str = "statistical", extra: tuple[str, ...] = ()
    ) -> None:
        self.http_port = free_port()
        self.log = Path(tempfile.mkstemp(prefix="polaris-twin-", suffix=".log")[1])
        args = [
            sys.executable,
            "-m",
            "twin.cli",
            "--world-model",
            model,
            "--grpc-host",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--http-port",
            str(self.http_port),
            *extra,
        ]
        if demo_load:
            args += ["--demo-load", str(demo_load)]
        self.proc = subprocess.Popen(args, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.nats_url = ""

    def wait_ready(self, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"twin exited: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as r:
                    if r.status == 200:
                        m = re.search(
                            r"embedded nats-server ready at (nats://\S+)", self.log.read_text()
                        )
                        self.nats_url = m.group(1) if m else ""
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"twin not ready in {timeout}s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def publish(
    nats_url: str, messages: list[bytes], subject: str = "polaris.telemetry.events.stream"
) -> None:
    async def go() -> None:
        import nats

        nc = await nats.connect(nats_url)
        try:
            for m in messages:
                await nc.publish(subject, m)
            await nc.flush()
        finally:
            await nc.drain()

    asyncio.run(go())


def anomaly_messages(
    system: str = "probe",
    metric: str = "latency",
    n: int = 150,
    t0: float | None = None,
    seed: int = 7,
) -> list[bytes]:
    """``n`` ordinary points then a spike: the statistical detector flags the spike."""
    rng = random.Random(seed)
    t0 = time.time() - n - 1 if t0 is None else t0
    msgs = [
        orjson.dumps(
            {
                "name": metric,
                "value": 100 + rng.gauss(0, 2),
                "unit": "ms",
                "source": system,
                "timestamp": t0 + i,
            }
        )
        for i in range(n)
    ]
    msgs.append(
        orjson.dumps(
            {"name": metric, "value": 900.0, "unit": "ms", "source": system, "timestamp": t0 + n}
        )
    )
    return msgs


def severe_logs(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
