"""Helpers for the operations tests: probe flows, a webhook receiver, PostgreSQL, bounded waits.

The probe flows are deployed from this file (entrypoint
`tests/ops_helpers.py:<flow>`), so importing it must stay cheap and free of
side effects: workers import it in every flow run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from prefect import flow
from prefect.runtime import flow_run

T = TypeVar("T")

POSTGRES_BIN = Path("/usr/local/bin")
POSTGRES_USER = "nobody"
LOG_TAIL_LINES = 30


@flow(name="ops-probe")
def report_process(out_dir: str, hold_s: float = 0.0) -> None:
    """Write this flow run's id, PID, parent PID and start and end times to `out_dir/<flow run id>.json`."""
    started = time.time()
    time.sleep(hold_s)
    record = {"flow_run_id": flow_run.id, "pid": os.getpid(), "ppid": os.getppid(), "started": started, "finished": time.time()}
    Path(out_dir, f"{flow_run.id}.json").write_text(json.dumps(record))


@flow(name="ops-failing-training")
def fail_training(device_id: str, daq_id: str, reason: str) -> None:
    """Report `device_id` as failed, then fail the flow run with `reason`."""
    from deployments.notifications import emit_training_failure

    emit_training_failure(device_id=device_id, daq_id=daq_id, reason=reason, flow_run_id=flow_run.id)
    raise RuntimeError(reason)


@flow(name="ops-crash")
def crash(exit_code: int = 3) -> None:
    """End the flow-run process at once, as an out-of-memory kill would; the worker reports Crashed."""
    os._exit(exit_code)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(check: Callable[[], T | None], *, timeout_s: float, describe: Callable[[], str], interval_s: float = 0.5) -> T:
    """Poll `check` until it returns a value other than None or False; fail with `describe()` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value is not None and value is not False:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s: {describe()}")


def log_tails(home: Path) -> str:
    """Return the last lines of every log in `home`, for failure messages."""
    parts = []
    for log in sorted(Path(home).glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        parts.append(f"--- {log.name} ---\n" + "\n".join(lines))
    return "\n".join(parts) or f"no logs in {home}"


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that stores the JSON body of every POST it receives."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/daqflow-failures"

    def __enter__(self) -> "WebhookReceiver":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def find(self, *needles: str) -> dict[str, Any] | None:
        """Return the first message whose body contains every needle."""
        with self._lock:
            return next((m for m in self.messages if all(n in m.get("body", "") for n in needles)), None)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.messages.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@contextmanager
def postgres_server() -> Iterator[str]:
    """Run PostgreSQL 15 on 127.0.0.1 in a temporary folder; yield an asyncpg URL of an empty database.

    PostgreSQL refuses to run as root, so the cluster belongs to the
    unprivileged user `nobody` (through `runuser`). The folder is made with
    `tempfile.mkdtemp` under /tmp because pytest's own temporary folders are
    closed to other users.
    """
    folder = Path(tempfile.mkdtemp(prefix="daqflow-postgres-"))
    shutil.chown(folder, user=POSTGRES_USER)
    data = folder / "data"
    port = free_port()
    started = False
    try:
        _as_postgres_user("initdb", "-D", str(data), "-U", "prefect", "--auth=trust", "-E", "UTF8", "--no-locale")
        _as_postgres_user(
            "pg_ctl", "-D", str(data), "-l", str(folder / "postgres.log"), "-w", "-t", "60",
            # A throwaway test cluster needs no crash safety, so fsync is off.
            "-o", f"-h 127.0.0.1 -p {port} -k {folder} -c fsync=off", "start",
        )  # fmt: skip
        started = True
        asyncio.run(_create_database(port, "prefect"))
        yield f"postgresql+asyncpg://prefect@127.0.0.1:{port}/prefect"
    finally:
        if started:
            _as_postgres_user("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def _as_postgres_user(program: str, *arguments: str) -> None:
    command = ["runuser", "-u", POSTGRES_USER, "--", str(POSTGRES_BIN / program), *arguments]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd="/")
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with exit code {result.returncode}:\n{result.stdout}\n{result.stderr}")


async def _create_database(port: int, name: str) -> None:
    connection = await asyncpg.connect(host="127.0.0.1", port=port, user="prefect", database="postgres")
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
