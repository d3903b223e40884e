"""serve.py in a subprocess on a free local port, for the tests that talk to it over HTTP."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
from cli_runner import clean_env
from repo import REPO_ROOT


class Server:
    """serve.py in a subprocess; ``url`` once it prints where it serves."""

    def __init__(self, folder: Path, *overrides: str, env: dict | None = None):
        self.log = folder / f"server-{time.monotonic_ns()}.log"
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "serve.py", "port=0", *overrides], cwd=REPO_ROOT, env=env or clean_env(),
                stdout=out, stderr=subprocess.STDOUT, text=True,
            )
        deadline = time.monotonic() + 120
        while not (match := re.search(r"serving (\S+) on (http://\S+) ", self.log.read_text())):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"serve.py did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        self.model, self.url = match.groups()

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def wait_until_it_stops_listening(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/health", timeout=5)
            except httpx.TransportError:
                return
            time.sleep(0.05)
        raise AssertionError(f"serve.py still listens {seconds} s on")

    def complete(self, **body) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/completions", json=body, timeout=120)

    def health_when_idle(self, seconds: float = 60) -> dict:
        """GET /health once no request is active (a cancelled one stops at its next token), or at the deadline."""
        deadline = time.monotonic() + seconds
        while (health := httpx.get(f"{self.url}/health").json())["active_requests"] and time.monotonic() < deadline:
            time.sleep(0.05)
        return health
