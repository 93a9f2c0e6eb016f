"""Deployments of the daqflow flows: what runs where, on which schedule, with which defaults.

`deployment_specs` lists the deployments as plain data and `deploy_all` turns
them into Prefect deployments on process pools, loading each flow from a
source folder (the checkout) with no image build. Example::

    from pathlib import Path
    from deployments.deploy import deploy_all, deployment_specs
    from deployments.pools import ensure_work_pools

    ensure_work_pools()
    specs = deployment_specs(storage_block="daqflow", edge_block="daqflow-edge", fleet=None,
                             manifest="data/sample/cwru/recordings.csv")
    deployment_ids = deploy_all(Path("."), specs)
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import Flow
from prefect.client.schemas.schedules import CronSchedule
from prefect.schedules import Cron
from pydantic import ValidationError

from deployments.pools import CPU_POOL, GPU_POOL

logger = logging.getLogger(__name__)

DAQFLOW_TAG = "daqflow"
NIGHTLY_CRON = "0 2 * * *"
NIGHTLY_TIMEZONE = "Asia/Taipei"


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment: a flow entrypoint, the pool that runs it, its schedule and default parameters.

    Attributes:
        name: deployment name, shown in the UI as `<flow name>/<name>`.
        entrypoint: `<path relative to the source folder>.py:<flow function>`.
        work_pool: name of the work pool whose workers run the flow.
        cron: cron expression of the schedule, or None for runs on demand only.
        timezone: IANA time zone of `cron`, e.g. "Asia/Taipei"; None means UTC.
        parameters: default flow parameters; a run may override them.
        tags: tags of the deployment, copied to every flow run it creates.
    """

    name: str
    entrypoint: str
    work_pool: str
    cron: str | None = None
    timezone: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._check_name()
        self._check_entrypoint()
        self._check_schedule()

    @property
    def entrypoint_path(self) -> str:
        return self.entrypoint.rsplit(":", 1)[0]

    def _check_name(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"deployment name {self.name!r} is invalid; use a non-empty name without '/'.")

    def _check_entrypoint(self) -> None:
        path, _, function = self.entrypoint.rpartition(":")
        if not path.endswith(".py") or not function.isidentifier():
            raise ValueError(
                f"deployment {self.name!r}: entrypoint {self.entrypoint!r} is invalid; "
                "write it as 'path/to/file.py:flow_function', relative to the source folder."
            )

    def _check_schedule(self) -> None:
        if self.cron is None:
            if self.timezone is not None:
                raise ValueError(
                    f"deployment {self.name!r} has timezone {self.timezone!r} but no cron schedule; set `cron` or drop `timezone`."
                )
            return
        try:
            CronSchedule(cron=self.cron, timezone=self.timezone)
        except ValidationError as error:
            reasons = "; ".join(detail["msg"] for detail in error.errors())
            raise ValueError(f"deployment {self.name!r}: invalid schedule ({reasons}).") from None


def deployment_specs(*, storage_block: str, edge_block: str, fleet: str | None, manifest: str) -> list[DeploymentSpec]:
    """List the daqflow deployments.

    `nightly-retrain` runs every night at 02:00 Asia/Taipei on the CPU pool and
    hands device training to `train-device-cpu` and `train-device-gpu`, one
    per pool. `build-dataset`, `publish-edge` and `rollback-edge` run on
    demand on the CPU pool.

    Args:
        storage_block: name of the saved storage block the flows read and write.
        edge_block: name of the saved edge target block that bundles are published to.
        fleet: path of the fleet TOML file, passed to the flows as given. When
            set, its `daq_id` is read here and every deployment gets the tag
            `daq:<daq_id>`, which failure notifications report.
        manifest: path or fsspec URL of the recordings manifest.

    Raises:
        FileNotFoundError, ValueError: `fleet` is set but missing or invalid.
    """
    tags = [DAQFLOW_TAG, *_daq_tags(fleet)]
    fleet_parameters = {} if fleet is None else {"fleet": fleet}
    train_parameters = {"storage": storage_block, **fleet_parameters}

    return [
        DeploymentSpec(
            name="nightly-retrain",
            entrypoint="flows/nightly_retrain.py:nightly_retrain",
            work_pool=CPU_POOL,
            cron=NIGHTLY_CRON,
            timezone=NIGHTLY_TIMEZONE,
            parameters={"manifest": manifest, "storage": storage_block, "edge_target": edge_block, **fleet_parameters},
            tags=[*tags, "nightly"],
        ),
        DeploymentSpec(
            name="train-device-cpu",
            entrypoint="flows/train_fleet.py:train_device_group",
            work_pool=CPU_POOL,
            parameters=train_parameters,
            tags=[*tags, "train"],
        ),
        DeploymentSpec(
            name="train-device-gpu",
            entrypoint="flows/train_fleet.py:train_device_group",
            work_pool=GPU_POOL,
            parameters=train_parameters,
            tags=[*tags, "train"],
        ),
        DeploymentSpec(
            name="build-dataset",
            entrypoint="flows/build_dataset.py:build_dataset",
            work_pool=CPU_POOL,
            parameters={"manifest": manifest, "storage": storage_block},
            tags=[*tags, "dataset"],
        ),
        DeploymentSpec(
            name="publish-edge",
            entrypoint="flows/publish_edge.py:publish_edge",
            work_pool=CPU_POOL,
            parameters={"storage": storage_block, "edge_target": edge_block},
            tags=[*tags, "edge"],
        ),
        DeploymentSpec(
            name="rollback-edge",
            entrypoint="flows/publish_edge.py:rollback_edge",
            work_pool=CPU_POOL,
            parameters={"edge_target": edge_block},
            tags=[*tags, "edge"],
        ),
    ]


def _daq_tags(fleet: str | None) -> list[str]:
    if fleet is None:
        return []
    from tasks.fleet import load_fleet

    return [f"daq:{load_fleet(fleet).daq_id}"]


def deploy_all(source_dir: Path, specs: list[DeploymentSpec]) -> list[str]:
    """Create or update one deployment per spec and return their ids.

    Every flow is loaded from `source_dir` and every spec checked before the
    first deployment is written, so a bad spec leaves the server unchanged.
    Rerunning with the same specs updates the deployments in place (same ids,
    same single schedule). The work pools must exist (`ensure_work_pools`).

    Cost: each entrypoint module is imported into this process once.

    Raises:
        ValueError: two specs share a name, or a spec's parameters do not fit
            its flow's signature.
        FileNotFoundError: an entrypoint file is missing from `source_dir`.
    """
    source_dir = Path(source_dir).resolve()
    _check_unique_names(specs)
    flows = [_load_flow(source_dir, spec) for spec in specs]
    for flow, spec in zip(flows, specs):
        check_parameters(flow, spec)

    return [_deploy(flow, spec) for flow, spec in zip(flows, specs)]


def check_parameters(flow: Flow, spec: DeploymentSpec) -> None:
    """Check that `spec.parameters` fit the signature of `flow`.

    Prefect stores parameters that a flow does not take, and every run of
    such a deployment then crashes at start with `SignatureMismatchError`.
    This check raises at deploy time instead. A scheduled spec must also set
    every parameter that has no default, because a scheduled run gets no other parameters.

    Raises:
        ValueError: an unknown parameter, or a missing required one on a scheduled spec.
    """
    signature = inspect.signature(flow.fn)
    named = [p for p in signature.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    takes_any_keyword = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())

    unknown = sorted(set(spec.parameters) - {p.name for p in named})
    if unknown and not takes_any_keyword:
        raise ValueError(
            f"deployment {spec.name!r}: flow {flow.name!r} ({spec.entrypoint}) takes no parameter(s) {unknown}; "
            f"it takes {[p.name for p in named]}. Rename or drop them in the deployment spec."
        )

    missing = [p.name for p in named if p.default is p.empty and p.name not in spec.parameters]
    if spec.cron is not None and missing:
        raise ValueError(
            f"deployment {spec.name!r} runs on schedule {spec.cron!r}, but flow {flow.name!r} ({spec.entrypoint}) "
            f"needs parameter(s) {missing} that the spec does not set. Add them to the spec's parameters."
        )


def _check_unique_names(specs: list[DeploymentSpec]) -> None:
    names = [spec.name for spec in specs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"deployment names {repeated} appear more than once; give every spec its own name.")


def _load_flow(source_dir: Path, spec: DeploymentSpec) -> Flow:
    if not (source_dir / spec.entrypoint_path).is_file():
        raise FileNotFoundError(
            f"deployment {spec.name!r}: entrypoint file {spec.entrypoint_path} not found in {source_dir}; "
            "check `entrypoint` or the source folder."
        )
    return Flow.from_source(source=str(source_dir), entrypoint=spec.entrypoint)


def _deploy(flow: Flow, spec: DeploymentSpec) -> str:
    # An empty list, not None, so that a redeploy without cron also removes an earlier schedule.
    schedules = [Cron(spec.cron, timezone=spec.timezone)] if spec.cron else []
    deployment_id = flow.deploy(
        name=spec.name,
        work_pool_name=spec.work_pool,
        build=False,
        push=False,
        schedules=schedules,
        parameters=spec.parameters,
        tags=spec.tags,
        print_next_steps=False,
        ignore_warnings=True,
    )
    logger.info("Deployed %s/%s (%s) to work pool %s", flow.name, spec.name, deployment_id, spec.work_pool)
    return str(deployment_id)
