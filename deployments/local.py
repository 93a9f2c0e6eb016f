"""`daqflow up` / `daqflow down`: a Prefect server, one worker per pool, and the deployments, on this machine.

`up` starts `prefect server start` on 127.0.0.1 and one process worker per
work pool, each in its own process group with its log in `home`. It records
their PIDs in `home/pids.json`, then creates the work pools, the default
storage and edge blocks, the deployments and (given a webhook URL) the
failure notifications. `down` stops the recorded processes. Example::

    from deployments.local import down, up

    info = up(webhook_url="https://hooks.example.com/daqflow")
    print(info["ui_url"])
    down()

The server stores its data in SQLite under `home/prefect` unless
`PREFECT_API_DATABASE_CONNECTION_URL` is set, for example to
`postgresql+asyncpg://user:password@host:5432/prefect`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from blocks import EDGE_BLOCK_NAME, STORAGE_BLOCK_NAME, register_blocks
from deployments.deploy import DeploymentSpec, deploy_all, deployment_specs
from deployments.notifications import ensure_failure_notifications
from deployments.pools import POOL_CONCURRENCY, ensure_work_pools
from flows._runtime import PRIVACY_ENVIRONMENT

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOME = Path(".daqflow/ops")
PIDS_FILE = "pids.json"
DATABASE_URL_VARIABLE = "PREFECT_API_DATABASE_CONNECTION_URL"
SAMPLE_MANIFEST = REPO_ROOT / "data" / "sample" / "cwru" / "recordings.csv"

LOG_TAIL_LINES = 40


def up(
    *,
    home: Path = DEFAULT_HOME,
    port: int = 4200,
    webhook_url: str | None = None,
    source_dir: Path = REPO_ROOT,
    workdir: Path = Path(".daqflow"),
    specs: list[DeploymentSpec] | None = None,
    fast_polling: bool = False,
    timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Start (or find) the server and workers, then apply pools, blocks, deployments and notifications.

    A second call with the same `home` finds the running server through
    `home/pids.json`, restarts any worker that has stopped, and applies the
    pools, blocks, deployments and notifications again. When a later step fails, the
    processes already started keep running; `down` stops them.

    Args:
        home: folder for the PID file, the logs and the server's PREFECT_HOME.
        port: port of the server on 127.0.0.1.
        webhook_url: when set, failure notifications are sent to this URL.
        source_dir: folder the flows are deployed from; workers run flows there.
        workdir: folder of the default storage and edge blocks that
            `blocks.register_blocks` saves.
        specs: deployments to create; default `deployment_specs` with those
            two blocks and the sample manifest.
        fast_polling: workers poll every second instead of every 10 s, for
            tests and demos.
        timeout_s: how long to wait for the server and each worker to come up.

    Returns:
        `api_url`, `ui_url`, `port`, `home`, `database` (the URL scheme, e.g. "sqlite"),
        `server_pid`, `worker_pids` (pool name to PID), `blocks` (the saved
        block names), `deployment_ids` and `reused_server`.

    Raises:
        RuntimeError, TimeoutError: the server or a worker did not come up; the
            message ends with the tail of its log.
    """
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    api_url = f"http://127.0.0.1:{port}/api"
    state = _read_state(home) or {"workers": {}}

    reused_server = _find_server(state, port) is not None
    if not reused_server:
        _stop_stale_workers(state, timeout_s=timeout_s)
        state = {"workers": {}, "server": _start_server(home, port)}
        _write_state(home, state)
    _wait_for_health(api_url, state["server"], timeout_s=timeout_s)

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        ensure_work_pools()
        _start_missing_workers(home, state, api_url, source_dir=Path(source_dir), fast_polling=fast_polling, timeout_s=timeout_s)
        saved_blocks = register_blocks(Path(workdir))
        deployment_ids = deploy_all(Path(source_dir), specs if specs is not None else _default_specs())
        if webhook_url is not None:
            ensure_failure_notifications(webhook_url=webhook_url)

    logger.info("daqflow is up: UI at http://127.0.0.1:%d; set PREFECT_API_URL=%s to use the prefect CLI", port, api_url)
    return {
        "api_url": api_url,
        "ui_url": f"http://127.0.0.1:{port}",
        "port": port,
        "home": str(home),
        "database": _database_scheme(),
        "server_pid": state["server"]["pid"],
        "worker_pids": {pool: record["pid"] for pool, record in state["workers"].items()},
        "blocks": saved_blocks,
        "deployment_ids": deployment_ids,
        "reused_server": reused_server,
    }


def down(*, home: Path = DEFAULT_HOME, timeout_s: float = 30.0) -> None:
    """Stop the server and workers that `up` recorded in `home/pids.json`.

    Workers get SIGINT, because a Prefect worker logs SIGTERM and keeps
    running. The flow-run processes they started get SIGTERM. The server gets
    SIGTERM last, so it can record how those runs ended. Whatever is still
    running after `timeout_s` is killed with SIGKILL, with its process group.
    A PID whose process has since been replaced by another program (same
    PID, other start time) is left alone.
    """
    home = Path(home).resolve()
    state = _read_state(home)
    if state is None:
        logger.info("No daqflow processes are recorded in %s; nothing to stop", home)
        return

    workers = [p for p in (_live_process(r) for r in state["workers"].values()) if p is not None]
    flow_runs = [child for worker in workers for child in _children(worker)]
    _stop(workers, signal.SIGINT, timeout_s=timeout_s)
    _stop(flow_runs, signal.SIGTERM, timeout_s=timeout_s)

    server = _live_process(state.get("server"))
    _stop([server] if server else [], signal.SIGTERM, timeout_s=timeout_s)

    (home / PIDS_FILE).unlink()
    logger.info("Stopped the daqflow server and %d worker(s) recorded in %s", len(workers), home)


def _default_specs() -> list[DeploymentSpec]:
    return deployment_specs(
        storage_block=STORAGE_BLOCK_NAME, edge_block=EDGE_BLOCK_NAME, fleet=None, manifest=str(SAMPLE_MANIFEST)
    )


def _database_scheme() -> str:
    url = os.environ.get(DATABASE_URL_VARIABLE)
    return url.split(":", 1)[0].split("+", 1)[0] if url else "sqlite"


def _child_environment(home: Path, api_url: str) -> dict[str, str]:
    environment = dict(os.environ)
    for name, value in PRIVACY_ENVIRONMENT.items():
        environment.setdefault(name, value)
    environment["PREFECT_HOME"] = str(home / "prefect")
    environment["PREFECT_API_URL"] = api_url
    return environment


def _stop_stale_workers(state: dict[str, Any], *, timeout_s: float) -> None:
    """Stop workers left running by an earlier `up` whose server has stopped."""
    stale = [p for p in (_live_process(r) for r in state["workers"].values()) if p is not None]
    if stale:
        logger.info("Stopping %d worker(s) of a server that is no longer running", len(stale))
        _stop(stale, signal.SIGINT, timeout_s=timeout_s)


def _start_server(home: Path, port: int) -> dict[str, Any]:
    _check_port_free(port)
    if _database_scheme() == "sqlite":
        # Measured with 27 runs at once and no pool limit: the server returned HTTP 503 (database is locked).
        logger.warning(
            "The Prefect server stores its data in SQLite under %s; several busy workers can lock it. "
            "Set %s to a PostgreSQL URL for production.",
            home / "prefect",
            DATABASE_URL_VARIABLE,
        )
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    environment = _child_environment(home, f"http://127.0.0.1:{port}/api")
    record = _spawn(command, environment, log=home / "server.log", cwd=home)
    record["port"] = port
    logger.info("Started the Prefect server on 127.0.0.1:%d (PID %d, log %s)", port, record["pid"], record["log"])
    return record


def _start_missing_workers(
    home: Path, state: dict[str, Any], api_url: str, *, source_dir: Path, fast_polling: bool, timeout_s: float
) -> None:
    environment = _child_environment(home, api_url)
    # Workers never open the database; keep its credentials out of their environment.
    environment.pop(DATABASE_URL_VARIABLE, None)
    if fast_polling:
        environment["PREFECT_WORKER_QUERY_SECONDS"] = "1"

    started: dict[str, float] = {}
    for pool in POOL_CONCURRENCY:
        if _live_process(state["workers"].get(pool)) is not None:
            continue
        started[pool] = time.time()
        state["workers"][pool] = _start_worker(home, pool, environment, cwd=source_dir)
        _write_state(home, state)

    for pool, started_at in started.items():
        _wait_for_worker(pool, state["workers"][pool], started_at=started_at, timeout_s=timeout_s)


def _start_worker(home: Path, pool: str, environment: dict[str, str], *, cwd: Path) -> dict[str, Any]:
    name = _worker_name(pool)
    command = [
        sys.executable, "-m", "prefect", "worker", "start",
        "--pool", pool, "--type", "process", "--name", name,
        "--install-policy", "never", "--no-create-pool-if-not-found",
    ]  # fmt: skip
    record = _spawn(command, environment, log=home / f"worker-{pool}.log", cwd=cwd)
    record["name"] = name
    logger.info("Started worker %s for work pool %s (PID %d, log %s)", name, pool, record["pid"], record["log"])
    return record


def _worker_name(pool: str) -> str:
    return f"{pool}@{socket.gethostname()}"


def _spawn(command: list[str], environment: dict[str, str], *, log: Path, cwd: Path) -> dict[str, Any]:
    """Start `command` in its own process group with output appended to `log`; return its record."""
    with open(log, "ab") as log_file:
        process = subprocess.Popen(
            command, env=environment, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return {"pid": process.pid, "create_time": psutil.Process(process.pid).create_time(), "log": str(log)}


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise RuntimeError(
                f"port {port} on 127.0.0.1 is in use; pass another port, or stop the program that listens there."
            ) from None


def _find_server(state: dict[str, Any], port: int) -> psutil.Process | None:
    """Return the recorded server process when it still runs; raise when it listens on another port."""
    server = _live_process(state.get("server"))
    if server is None:
        return None
    recorded_port = state["server"]["port"]
    if recorded_port != port:
        raise RuntimeError(
            f"the daqflow server of this home already runs on port {recorded_port} (PID {server.pid}); "
            f"pass port={recorded_port}, or run `daqflow down` first."
        )
    logger.info("Found the running Prefect server on port %d (PID %d)", port, server.pid)
    return server


def _wait_for_health(api_url: str, record: dict[str, Any], *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _live_process(record) is None:
            raise RuntimeError(f"the Prefect server (PID {record['pid']}) exited before it became healthy. {_log_tail(record)}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the Prefect server at {api_url} was not healthy after {timeout_s:.0f} s. {_log_tail(record)}")


def _wait_for_worker(pool: str, record: dict[str, Any], *, started_at: float, timeout_s: float) -> None:
    """Wait until the worker has sent a heartbeat to the server since `started_at`."""
    deadline = time.monotonic() + timeout_s
    since = datetime.fromtimestamp(started_at, tz=timezone.utc)
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            if _live_process(record) is None:
                raise RuntimeError(f"the worker of work pool {pool} (PID {record['pid']}) exited. {_log_tail(record)}")
            workers = client.read_workers_for_work_pool(pool)
            if any(w.name == record["name"] and w.last_heartbeat_time and w.last_heartbeat_time >= since for w in workers):
                return
            time.sleep(0.5)
    raise TimeoutError(f"the worker of work pool {pool} sent no heartbeat within {timeout_s:.0f} s. {_log_tail(record)}")


def _log_tail(record: dict[str, Any]) -> str:
    lines = Path(record["log"]).read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    return f"Last lines of {record['log']}:\n" + "\n".join(lines)


def _live_process(record: dict[str, Any] | None) -> psutil.Process | None:
    """Return the recorded process if it still runs and is the one recorded (same start time)."""
    if record is None:
        return None
    try:
        process = psutil.Process(record["pid"])
        if abs(process.create_time() - record["create_time"]) > 0.01 or process.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.NoSuchProcess:
        return None
    return process


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _stop(processes: list[psutil.Process], first_signal: signal.Signals, *, timeout_s: float) -> None:
    """Send `first_signal`, wait up to `timeout_s`, then SIGKILL the stragglers and their process groups."""
    for process in processes:
        _send(process, first_signal)
    _, alive = psutil.wait_procs(processes, timeout=timeout_s)

    for process in alive:
        logger.warning("PID %d did not stop within %.0f s of %s; killing it", process.pid, timeout_s, first_signal.name)
        _send(process, signal.SIGKILL)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    psutil.wait_procs(alive, timeout=5)


def _send(process: psutil.Process, signal_number: signal.Signals) -> None:
    try:
        process.send_signal(signal_number)
    except psutil.NoSuchProcess:
        pass


def _read_state(home: Path) -> dict[str, Any] | None:
    path = home / PIDS_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise RuntimeError(f"{path} is not valid JSON ({error}); stop the processes it listed by hand and delete it.") from None


def _write_state(home: Path, state: dict[str, Any]) -> None:
    path = home / PIDS_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state, indent=2))
    temporary.replace(path)
