"""Operations: work pools, deployments, `up` / `down`, failure notifications, ECS templates.

The slow tests start a real Prefect server (`prefect server start`) with one
process worker per pool through `deployments.local.up`, run probe flows from
`tests/ops_helpers.py` as deployments, and stop everything with `down`. One
test runs the server on PostgreSQL 15.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import pytest
from prefect import Flow
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, State
from prefect.deployments import run_deployment
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import MissingFlowError, PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_aws.workers.ecs_worker import ECSJobConfiguration

from deployments.deploy import DeploymentSpec, check_parameters, deploy_all, deployment_specs
from blocks import EDGE_BLOCK_NAME, STORAGE_BLOCK_NAME
from deployments.local import DATABASE_URL_VARIABLE, REPO_ROOT, SAMPLE_MANIFEST, down, up
from deployments.notifications import emit_training_failure, ensure_failure_notifications
from deployments.pools import CPU_POOL, GPU_POOL, MODEL_TYPE_POOLS, POOL_CONCURRENCY, pool_for_model_type
from ops_helpers import WebhookReceiver, free_port, log_tails, postgres_server, wait_until

AWS_DIR = REPO_ROOT / "deployments" / "aws"
HELPERS = "tests/ops_helpers.py"
DAQ = "press-line-7"
DEVICE = "spindle-3"
REASON = "macro-F1 0.31 is below the floor 0.5"
RUN_TIMEOUT_S = 120
NOTIFICATION_TIMEOUT_S = 60


def probe_spec(name: str, pool: str, out_dir: Path) -> DeploymentSpec:
    return DeploymentSpec(
        name=name, entrypoint=f"{HELPERS}:report_process", work_pool=pool, parameters={"out_dir": str(out_dir)}, tags=["daqflow"]
    )


def load_flow(spec: DeploymentSpec) -> Flow:
    return Flow.from_source(source=str(REPO_ROOT), entrypoint=spec.entrypoint)


# Work pools


@pytest.mark.parametrize(("model_type", "pool"), [("lightgbm", "daqflow-cpu"), ("cnn1d", "daqflow-gpu")])
def test_pool_for_model_type_known(model_type, pool):
    assert pool_for_model_type(model_type) == pool


def test_pool_for_model_type_unknown():
    with pytest.raises(ValueError, match=r"'xgboost' has no work pool; known model types: \['cnn1d', 'lightgbm'\]"):
        pool_for_model_type("xgboost")


def test_every_model_type_pool_has_a_limit():
    assert set(MODEL_TYPE_POOLS.values()) == set(POOL_CONCURRENCY)


# Deployment specs


def test_deployment_specs_names_and_pools():
    specs = {spec.name: spec for spec in deployment_specs(storage_block="s", edge_block="e", fleet=None, manifest="m.csv")}

    assert set(specs) == {"nightly-retrain", "train-device-cpu", "train-device-gpu", "build-dataset", "publish-edge", "rollback-edge"}
    assert specs["train-device-cpu"].work_pool == CPU_POOL
    assert specs["train-device-gpu"].work_pool == GPU_POOL
    assert specs["train-device-cpu"].entrypoint == specs["train-device-gpu"].entrypoint == "flows/train_fleet.py:train_device_group"
    assert {spec.work_pool for name, spec in specs.items() if not name.startswith("train-device")} == {CPU_POOL}


def test_deployment_specs_nightly_schedule():
    specs = {spec.name: spec for spec in deployment_specs(storage_block="s", edge_block="e", fleet=None, manifest="m.csv")}

    assert specs["nightly-retrain"].cron == "0 2 * * *"
    assert specs["nightly-retrain"].timezone == "Asia/Taipei"
    assert [name for name, spec in specs.items() if spec.cron] == ["nightly-retrain"]


def test_deployment_specs_parameters_without_fleet():
    specs = {spec.name: spec for spec in deployment_specs(storage_block="store-a", edge_block="edge-a", fleet=None, manifest="m.csv")}

    assert specs["nightly-retrain"].parameters == {"manifest": "m.csv", "storage": "store-a", "edge_target": "edge-a"}
    assert specs["build-dataset"].parameters == {"manifest": "m.csv", "storage": "store-a"}
    assert all("fleet" not in spec.parameters for spec in specs.values())
    assert all(spec.tags[0] == "daqflow" for spec in specs.values())
    assert not any(tag.startswith("daq:") for spec in specs.values() for tag in spec.tags)


def test_deployment_specs_fleet_sets_daq_tag(tmp_path):
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('daq_id = "press-line-7"\n[defaults]\nmodel_type = "lightgbm"\n')

    specs = deployment_specs(storage_block="s", edge_block="e", fleet=str(fleet), manifest="m.csv")

    assert all("daq:press-line-7" in spec.tags for spec in specs)
    assert {spec.name for spec in specs if spec.parameters.get("fleet") == str(fleet)} == {"nightly-retrain", "train-device-cpu", "train-device-gpu"}


def test_deployment_specs_missing_fleet(tmp_path):
    with pytest.raises(FileNotFoundError, match="fleet file .*absent.toml not found"):
        deployment_specs(storage_block="s", edge_block="e", fleet=str(tmp_path / "absent.toml"), manifest="m.csv")


BAD_SPECS = [
    ({"name": ""}, "deployment name '' is invalid"),
    ({"name": "a/b"}, "deployment name 'a/b' is invalid"),
    ({"entrypoint": "flows/x.py"}, "entrypoint 'flows/x.py' is invalid"),
    ({"entrypoint": "flows/x:fn"}, "entrypoint 'flows/x:fn' is invalid"),
    ({"timezone": "Asia/Taipei"}, "has timezone 'Asia/Taipei' but no cron schedule"),
    ({"cron": "0 2 * *"}, "invalid schedule .*Invalid cron string"),
    ({"cron": "0 2 * * *", "timezone": "Asia/Taipe"}, "invalid schedule .*Invalid timezone"),
]


@pytest.mark.parametrize(("changes", "message"), BAD_SPECS)
def test_deployment_spec_rejects(changes, message):
    fields = {"name": "probe", "entrypoint": f"{HELPERS}:report_process", "work_pool": CPU_POOL, **changes}

    with pytest.raises(ValueError, match=message):
        DeploymentSpec(**fields)


def test_check_parameters_unknown_name():
    spec = DeploymentSpec(name="probe", entrypoint=f"{HELPERS}:report_process", work_pool=CPU_POOL, parameters={"out_dir": "x", "outdir": "y"})

    with pytest.raises(ValueError, match=r"takes no parameter\(s\) \['outdir'\]; it takes \['out_dir', 'hold_s'\]"):
        check_parameters(load_flow(spec), spec)


def test_check_parameters_scheduled_missing_required():
    spec = DeploymentSpec(name="probe", entrypoint=f"{HELPERS}:report_process", work_pool=CPU_POOL, cron="0 2 * * *")

    with pytest.raises(ValueError, match=r"needs parameter\(s\) \['out_dir'\] that the spec does not set"):
        check_parameters(load_flow(spec), spec)


def test_check_parameters_on_demand_may_omit_required():
    spec = DeploymentSpec(name="probe", entrypoint=f"{HELPERS}:report_process", work_pool=CPU_POOL)

    check_parameters(load_flow(spec), spec)


def test_deploy_all_rejects_before_deploying(tmp_path):
    good = probe_spec("probe", CPU_POOL, tmp_path)
    bad = DeploymentSpec(name="typo", entrypoint=f"{HELPERS}:report_process", work_pool=CPU_POOL, parameters={"outdir": "x"})

    # No server is running here: the check must fail before any API call.
    with pytest.raises(ValueError, match="deployment 'typo'"):
        deploy_all(REPO_ROOT, [good, bad])


def test_deploy_all_missing_entrypoint_file():
    spec = DeploymentSpec(name="ghost", entrypoint="flows/ghost.py:ghost", work_pool=CPU_POOL)

    with pytest.raises(FileNotFoundError, match="entrypoint file flows/ghost.py not found in"):
        deploy_all(REPO_ROOT, [spec])


def test_deploy_all_duplicate_names(tmp_path):
    spec = probe_spec("probe", CPU_POOL, tmp_path)

    with pytest.raises(ValueError, match=r"deployment names \['probe'\] appear more than once"):
        deploy_all(REPO_ROOT, [spec, spec])


@pytest.mark.parametrize("spec", deployment_specs(storage_block="s", edge_block="e", fleet=None, manifest="m.csv"), ids=lambda s: s.name)
def test_default_spec_fits_flow_signature(spec):
    try:
        flow = load_flow(spec)
    except (FileNotFoundError, MissingFlowError) as error:
        pytest.skip(f"flow {spec.entrypoint} is not written yet: {error}")

    check_parameters(flow, spec)


# Notifications and templates, without a server


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"device_id": ""}, "device_id is empty"),
        ({"daq_id": ""}, "daq_id is empty"),
        ({"flow_run_id": "run-42"}, "flow_run_id 'run-42' is not a UUID"),
    ],
)
def test_emit_training_failure_rejects(arguments, message):
    valid = {"device_id": DEVICE, "daq_id": DAQ, "reason": REASON, "flow_run_id": "6f1c1a2e-8d4b-4d0e-9a51-3f0f5c2b7d10"}

    with pytest.raises(ValueError, match=message):
        emit_training_failure(**{**valid, **arguments})


@pytest.mark.parametrize("url", ["ftp://hooks.example.com/x", "hooks.example.com/x", "http:///x"])
def test_notifications_reject_webhook_url(url):
    with pytest.raises(ValueError, match="webhook URL .* is invalid"):
        ensure_failure_notifications(webhook_url=url)


@pytest.mark.parametrize("name", ["ecs-cpu.json", "ecs-gpu.json"])
def test_ecs_template_has_no_account_data(name):
    text = (AWS_DIR / name).read_text()
    variables = json.loads(text)["variables"]

    assert not re.search(r"\b\d{12}\b", text), "an AWS account id"
    assert set(variables["required"]) == {"image", "vpc_id", "subnet_ids", "security_group_ids", "task_role_arn", "execution_role_arn"}
    for key in variables["required"]:
        assert "default" not in variables["properties"][key], key
        assert variables["properties"][key]["description"], key


# `up` and `down`, without a server


def test_down_without_pid_file(tmp_path):
    down(home=tmp_path)

    assert not (tmp_path / "pids.json").exists()


def test_up_port_in_use(tmp_path):
    with WebhookReceiver() as busy:
        with pytest.raises(RuntimeError, match=f"port {busy.port} on 127.0.0.1 is in use"):
            up(home=tmp_path, port=busy.port)

    assert not (tmp_path / "pids.json").exists()


# A running stack: server, one worker per pool, deployments, notifications


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("probe-records")


@pytest.fixture(scope="module")
def stack_specs(probe_dir) -> list[DeploymentSpec]:
    failing = ["daqflow", f"daq:{DAQ}"]
    return [
        probe_spec("probe-cpu", CPU_POOL, probe_dir),
        probe_spec("probe-gpu", GPU_POOL, probe_dir),
        DeploymentSpec(
            name="failing-training",
            entrypoint=f"{HELPERS}:fail_training",
            work_pool=CPU_POOL,
            parameters={"device_id": DEVICE, "daq_id": DAQ, "reason": REASON},
            tags=failing,
        ),
        DeploymentSpec(name="crash", entrypoint=f"{HELPERS}:crash", work_pool=CPU_POOL, tags=failing),
        *deployment_specs(storage_block=STORAGE_BLOCK_NAME, edge_block=EDGE_BLOCK_NAME, fleet=None, manifest=str(SAMPLE_MANIFEST)),
    ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, webhook, stack_specs) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("ops-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(DATABASE_URL_VARIABLE, raising=False)
        try:
            yield up(
                home=home, port=free_port(), webhook_url=webhook.url, workdir=home / "data", specs=stack_specs, fast_polling=True
            )
        finally:
            down(home=home)


@pytest.fixture
def live_stack(stack) -> Iterator[dict[str, Any]]:
    with temporary_settings(updates={PREFECT_API_URL: stack["api_url"]}):
        yield stack


def start_run(name: str, **parameters: Any) -> FlowRun:
    return run_deployment(name, parameters=parameters or None, timeout=0)


def wait_for_state(flow_run_id, home: str, reached: Callable[[State], bool], goal: str) -> FlowRun:
    with get_client(sync_client=True) as client:
        seen: list[FlowRun] = []

        def check() -> FlowRun | None:
            seen[:] = [client.read_flow_run(flow_run_id)]
            return seen[0] if seen[0].state is not None and reached(seen[0].state) else None

        def describe() -> str:
            last = seen[0].state.name if seen and seen[0].state else "unknown"
            return f"flow run {flow_run_id} did not become {goal}; its last state was {last}\n{log_tails(Path(home))}"

        return wait_until(check, timeout_s=RUN_TIMEOUT_S, describe=describe)


def wait_for_final(flow_run_id, home: str) -> FlowRun:
    return wait_for_state(flow_run_id, home, lambda state: state.is_final(), "final")


def wait_for_running(flow_run_id, home: str) -> FlowRun:
    return wait_for_state(flow_run_id, home, lambda state: state.is_running(), "Running")


def wait_for_message(webhook: WebhookReceiver, home: str, *needles: str) -> dict[str, Any]:
    return wait_until(
        lambda: webhook.find(*needles),
        timeout_s=NOTIFICATION_TIMEOUT_S,
        describe=lambda: f"no webhook message contains {needles}; received {webhook.messages}\n{log_tails(Path(home))}",
    )


def probe_record(probe_dir: Path, flow_run: FlowRun) -> dict[str, Any]:
    return json.loads((probe_dir / f"{flow_run.id}.json").read_text())


@pytest.mark.slow
def test_up_starts_server_and_workers(live_stack):
    assert live_stack["reused_server"] is False
    assert live_stack["database"] == "sqlite"
    assert psutil.pid_exists(live_stack["server_pid"])
    assert set(live_stack["worker_pids"]) == {CPU_POOL, GPU_POOL}
    assert len(live_stack["deployment_ids"]) == 10


@pytest.mark.slow
def test_up_saves_default_blocks(live_stack):
    storage = Block.load(live_stack["blocks"]["storage"])
    edge = Block.load(live_stack["blocks"]["edge_target"])

    assert storage.basepath == str(Path(live_stack["home"]) / "data")
    assert edge.basepath == str(Path(live_stack["home"]) / "data" / "edge")


@pytest.mark.slow
@pytest.mark.parametrize(("deployment", "pool"), [("probe-cpu", CPU_POOL), ("probe-gpu", GPU_POOL)])
def test_probe_runs_on_its_pool(live_stack, probe_dir, deployment, pool):
    flow_run = wait_for_final(start_run(f"ops-probe/{deployment}").id, live_stack["home"])
    record = probe_record(probe_dir, flow_run)

    assert flow_run.state.is_completed(), flow_run.state
    assert flow_run.work_pool_name == pool
    assert flow_run.work_queue_name == "default"
    assert record["ppid"] == live_stack["worker_pids"][pool], "the flow-run process is not a child of that pool's worker"
    assert flow_run.infrastructure_pid.split(":")[-1] == str(record["pid"])


@pytest.mark.slow
def test_work_pools_have_limits(live_stack):
    with get_client(sync_client=True) as client:
        pools = {name: client.read_work_pool(name) for name in POOL_CONCURRENCY}

    for name, limit in POOL_CONCURRENCY.items():
        assert pools[name].type == "process", name
        assert pools[name].concurrency_limit == limit, name


@pytest.mark.slow
def test_gpu_pool_runs_one_flow_at_a_time(live_stack, probe_dir):
    first = start_run("ops-probe/probe-gpu", out_dir=str(probe_dir), hold_s=3.0)
    second = start_run("ops-probe/probe-gpu", out_dir=str(probe_dir), hold_s=3.0)
    runs = [wait_for_final(run.id, live_stack["home"]) for run in (first, second)]
    records = sorted((probe_record(probe_dir, run) for run in runs), key=lambda r: r["started"])

    assert all(run.state.is_completed() for run in runs), [run.state for run in runs]
    assert records[1]["started"] >= records[0]["finished"], records


@pytest.mark.slow
def test_deploy_all_updates_in_place(live_stack, probe_dir):
    spec = DeploymentSpec(
        name="scheduled-probe", entrypoint=f"{HELPERS}:report_process", work_pool=CPU_POOL, cron="0 2 * * *", timezone="Asia/Taipei",
        parameters={"out_dir": str(probe_dir)}, tags=["daqflow"],
    )  # fmt: skip
    changed = DeploymentSpec(**{**spec.__dict__, "parameters": {"out_dir": str(probe_dir), "hold_s": 1.0}})

    [first_id] = deploy_all(REPO_ROOT, [spec])
    [second_id] = deploy_all(REPO_ROOT, [changed])
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(second_id)

    assert second_id == first_id
    assert deployment.parameters == {"out_dir": str(probe_dir), "hold_s": 1.0}
    assert len(deployment.schedules) == 1
    assert deployment.schedules[0].schedule.cron == "0 2 * * *"
    assert deployment.schedules[0].schedule.timezone == "Asia/Taipei"


@pytest.mark.slow
def test_deploy_all_removes_dropped_schedule(live_stack, probe_dir):
    scheduled = DeploymentSpec(
        name="unscheduled-probe", entrypoint=f"{HELPERS}:report_process", work_pool=CPU_POOL, cron="0 2 * * *",
        parameters={"out_dir": str(probe_dir)},
    )  # fmt: skip
    on_demand = DeploymentSpec(**{**scheduled.__dict__, "cron": None})

    deploy_all(REPO_ROOT, [scheduled])
    [deployment_id] = deploy_all(REPO_ROOT, [on_demand])
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(deployment_id)

    assert deployment.schedules == []


@pytest.mark.slow
def test_up_again_reuses_running_processes(live_stack, webhook, stack_specs):
    home = Path(live_stack["home"])
    again = up(home=home, port=live_stack["port"], webhook_url=webhook.url, workdir=home / "data", specs=stack_specs)

    assert again["reused_server"] is True
    assert again["server_pid"] == live_stack["server_pid"]
    assert again["worker_pids"] == live_stack["worker_pids"]
    assert again["deployment_ids"] == live_stack["deployment_ids"]


@pytest.mark.slow
def test_failed_training_notifies(live_stack, webhook):
    flow_run = wait_for_final(start_run("ops-failing-training/failing-training").id, live_stack["home"])
    device_message = wait_for_message(webhook, live_stack["home"], f"device {DEVICE}", str(flow_run.id))
    run_message = wait_for_message(webhook, live_stack["home"], f"({flow_run.id}) ended Failed")

    assert flow_run.state.is_failed(), flow_run.state
    assert f"of DAQ {DAQ}" in device_message["body"]
    assert REASON in device_message["body"]
    assert flow_run.name in device_message["body"]
    assert f"daqflow flow run {flow_run.name}" in run_message["body"]
    assert f"DAQ: {DAQ}" in run_message["body"]
    assert "Deployment: failing-training" in run_message["body"]
    assert REASON in run_message["body"]
    assert run_message["subject"] == f"daqflow: flow run {flow_run.name} Failed"


@pytest.mark.slow
def test_crashed_run_notifies(live_stack, webhook):
    flow_run = wait_for_final(start_run("ops-crash/crash").id, live_stack["home"])
    message = wait_for_message(webhook, live_stack["home"], f"({flow_run.id}) ended Crashed")

    assert flow_run.state.is_crashed(), flow_run.state
    assert f"DAQ: {DAQ}" in message["body"]
    assert re.search(r"exited with (non-zero )?status code:? 3\b", message["body"]), message["body"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "launch_type", "cpu", "memory", "gpus"),
    [("ecs-cpu.json", "FARGATE", 2048, 8192, None), ("ecs-gpu.json", "EC2", 8192, 32768, [{"type": "GPU", "value": "1"}])],
)
def test_ecs_template_creates_pool(live_stack, name, launch_type, cpu, memory, gpus):
    pool_name = f"daqflow-test-{name.removesuffix('.json')}"
    account = {
        "image": "registry.example/daqflow:test",
        "vpc_id": "vpc-test",
        "subnet_ids": ["subnet-private-a", "subnet-private-b"],
        "security_group_ids": ["sg-test"],
        "task_role_arn": "arn:aws:iam::000000000000:role/daqflow-task",
        "execution_role_arn": "arn:aws:iam::000000000000:role/daqflow-execution",
    }
    command = [sys.executable, "-m", "prefect", "work-pool", "create", pool_name, "--type", "ecs", "--base-job-template", str(AWS_DIR / name)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, "PREFECT_API_URL": live_stack["api_url"]})
    with get_client(sync_client=True) as client:
        pool = client.read_work_pool(pool_name)
    job = asyncio.run(ECSJobConfiguration.from_template_and_values(pool.base_job_template, account))

    assert result.returncode == 0, result.stdout + result.stderr
    assert pool.type == "ecs"
    assert job.task_definition["cpu"] == cpu
    assert job.task_definition["memory"] == memory
    assert job.task_definition["containerDefinitions"][0].get("resourceRequirements") == gpus
    assert job.task_run_request["launchType"] == launch_type
    assert job.task_run_request["overrides"]["taskRoleArn"] == account["task_role_arn"]
    assert job.network_configuration == {"subnets": account["subnet_ids"], "securityGroups": ["sg-test"], "assignPublicIp": "DISABLED"}


@pytest.mark.slow
def test_ecs_pool_rejects_run_without_account_values(live_stack, probe_dir):
    template = json.loads((AWS_DIR / "ecs-cpu.json").read_text())
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="daqflow-test-unfilled", type="ecs", base_job_template=template))
    deploy_all(REPO_ROOT, [probe_spec("probe-unfilled-ecs", "daqflow-test-unfilled", probe_dir)])

    with pytest.raises(PrefectHTTPStatusError, match="422") as error:
        start_run("ops-probe/probe-unfilled-ecs")

    assert "'image' is a required property" in error.value.response.text, error.value.response.text


# PostgreSQL


@pytest.mark.slow
def test_up_and_down_on_postgresql(tmp_path, monkeypatch):
    home = tmp_path / "ops"
    with postgres_server() as database_url:
        monkeypatch.setenv(DATABASE_URL_VARIABLE, database_url)
        try:
            info = up(
                home=home, port=free_port(), workdir=tmp_path / "data", specs=[probe_spec("probe-cpu", CPU_POOL, tmp_path)], fast_polling=True
            )
            with temporary_settings(updates={PREFECT_API_URL: info["api_url"]}):
                completed = wait_for_final(start_run("ops-probe/probe-cpu").id, info["home"])
                running = wait_for_running(start_run("ops-probe/probe-cpu", out_dir=str(tmp_path), hold_s=300.0).id, info["home"])
            stored = asyncio.run(_count_flow_runs(database_url, completed.id))
            pids = [info["server_pid"], *info["worker_pids"].values(), int(running.infrastructure_pid.split(":")[-1])]
            processes = [psutil.Process(pid) for pid in pids]
        finally:
            down(home=home)

    assert info["database"] == "postgresql"
    assert completed.state.is_completed(), f"{completed.state}\n{log_tails(home)}"
    assert stored == 1
    for process in processes:
        assert not is_alive(process), f"PID {process.pid} still runs after down()"
    assert not (home / "pids.json").exists()


def is_alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def _count_flow_runs(database_url: str, flow_run_id) -> int:
    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        return await connection.fetchval("SELECT count(*) FROM flow_run WHERE id = $1", flow_run_id)
    finally:
        await connection.close()
