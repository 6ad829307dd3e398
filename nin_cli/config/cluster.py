"""What a SLURM cluster says, read with its own commands (sinfo, squeue, scontrol; no accounting
needed): the size of its partitions, so that a request no node can satisfy is refused before
anything is submitted, and the state of submitted jobs, so that a launcher following them knows
a job that is waiting in vain (an impossible pending reason) or that ended without a result
(cancelled, killed, failed) instead of waiting forever."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from nin_cli.errors import ConfigError

# Pending reasons that no amount of waiting resolves: the request exceeds what the partition,
# its nodes, the QOS or the account allow.
IMPOSSIBLE = (
    "PartitionConfig",
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "BadConstraints",
    "InvalidQOS",
    "InvalidAccount",
    "ReqNodeNotAvail",
    "QOSMaxCpuPerJobLimit",
    "QOSMaxGRESPerJob",
    "QOSMaxMemoryPerJob",
    "QOSMaxNodePerJobLimit",
    "QOSMaxWallDurationPerJobLimit",
    "AssocMaxCpuPerJobLimit",
    "AssocMaxWallDurationPerJobLimit",
)
# What to change for each: the launcher option a user types
OPTION_FOR = {
    "PartitionConfig": "hydra.launcher.timeout_min, cpus_per_task, mem_gb or gpus_per_node (its limits: scontrol show partition)",
    "PartitionNodeLimit": "hydra.launcher.nodes",
    "PartitionTimeLimit": "hydra.launcher.timeout_min",
    "QOSMaxWallDurationPerJobLimit": "hydra.launcher.timeout_min",
    "AssocMaxWallDurationPerJobLimit": "hydra.launcher.timeout_min",
    "InvalidQOS": "hydra.launcher.qos",
    "InvalidAccount": "hydra.launcher.account",
}
ENDED = ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED")


def _run(command: list[str], timeout: float = 30) -> str | None:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


@dataclass(frozen=True)
class Partition:
    name: str
    default: bool
    cpus: int  # the most CPUs a node of it has
    mem_mb: int  # the most memory a node of it has
    nodes: int
    gres: str  # e.g. "gpu:4" or "(null)"


def partitions() -> dict[str, Partition]:
    """The cluster's partitions (sinfo), or {} where sinfo does not answer."""
    out = _run(["sinfo", "-h", "-o", "%P|%c|%m|%G|%D"])  # a line per partition and kind of node
    found: dict[str, Partition] = {}
    for line in (out or "").splitlines():
        try:
            label, cpus, mem, gres, nodes = line.split("|")
            name = label.rstrip("*")
            row = Partition(name, label.endswith("*"), int(cpus.rstrip("+")), int(mem.rstrip("+")), int(nodes), gres)
        except ValueError:
            continue
        seen = found.get(name)
        if seen is not None:  # another kind of node of the same partition: the largest node, all nodes, every gres
            row = Partition(
                name,
                seen.default,
                max(seen.cpus, row.cpus),
                max(seen.mem_mb, row.mem_mb),
                seen.nodes + row.nodes,
                f"{seen.gres},{row.gres}",
            )
        found[name] = row
    return found


def check_request(params: Mapping) -> None:
    """A launcher's request (hydra.launcher.*) against the partition it names: one ConfigError
    naming the option to change where no node could ever run the job."""
    parts = partitions()
    if not parts:
        return  # nothing to check against (sinfo missing or silent): sbatch will say
    name = params.get("partition")
    part = parts.get(str(name)) if name else next((p for p in parts.values() if p.default), None)
    if name and part is None:
        raise ConfigError(f"hydra.launcher.partition={name}: no such partition on this cluster (partitions: {', '.join(parts)})")
    if part is None:
        raise ConfigError(f"this cluster has no default partition: set hydra.launcher.partition (partitions: {', '.join(parts)})")
    cpus = int(params.get("cpus_per_task") or 1) * int(params.get("tasks_per_node") or 1)
    if cpus > part.cpus:
        raise ConfigError(
            f"hydra.launcher.cpus_per_task={params.get('cpus_per_task')} (tasks_per_node={params.get('tasks_per_node') or 1}) asks for "
            f"more CPUs than a node of partition {part.name} has ({part.cpus}): lower hydra.launcher.cpus_per_task"
        )
    mem_gb = params.get("mem_gb")
    if mem_gb is not None and float(mem_gb) * 1024 > part.mem_mb:
        raise ConfigError(
            f"hydra.launcher.mem_gb={mem_gb} asks for more memory than a node of partition {part.name} has "
            f"({part.mem_mb} MB): lower hydra.launcher.mem_gb"
        )
    gpus = int(params.get("gpus_per_node") or 0)
    if gpus > 0 and "gpu" not in part.gres:
        raise ConfigError(
            f"hydra.launcher.gpus_per_node={gpus} but partition {part.name} has no GPUs (gres: {part.gres}): "
            "set hydra.launcher.gpus_per_node=0, or name a GPU partition with hydra.launcher.partition"
        )
    nodes = int(params.get("nodes") or 1)
    if nodes > part.nodes:
        raise ConfigError(f"hydra.launcher.nodes={nodes} but partition {part.name} has {part.nodes} node(s): lower hydra.launcher.nodes")


@dataclass(frozen=True)
class JobState:
    state: str  # PENDING, RUNNING, REQUEUED, COMPLETED, CANCELLED, ...
    reason: str  # why it pends, or how it ended ("None" when nothing to say)

    @property
    def hopeless(self) -> bool:
        """Pending for a reason that waiting does not cure."""
        return self.state == "PENDING" and self.reason.split(",")[0] in IMPOSSIBLE

    def advice(self) -> str:
        option = OPTION_FOR.get(self.reason.split(",")[0])
        return f"change {option}" if option else "change the request (hydra.launcher.*)"


def queued(job_ids: Iterable[str]) -> dict[str, JobState] | None:
    """The jobs squeue still lists, by id (array tasks as MAIN_INDEX); None where squeue fails."""
    ids = list(job_ids)
    if not ids:
        return {}
    out = _run(["squeue", "-h", "-r", "-o", "%i|%T|%r", "-j", ",".join(ids)])
    if out is None:
        return None
    states = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            states[parts[0]] = JobState(parts[1], parts[2])
    return states


def final_state(job_id: str) -> JobState | None:
    """How a job that left the queue ended (scontrol, while slurmctld still remembers it)."""
    out = _run(["scontrol", "-o", "show", "job", job_id])
    if not out:
        return None
    fields = dict(item.split("=", 1) for item in out.split() if "=" in item)
    if "JobState" not in fields:
        return None
    return JobState(fields["JobState"], fields.get("Reason", "None"))


def has_accounting() -> bool:
    """Whether sacct can answer (slurmdbd accounting); without it submitit's job states read UNKNOWN."""
    out = _run(["scontrol", "show", "config"])
    for line in (out or "").splitlines():
        if line.strip().startswith("AccountingStorageType"):
            return "none" not in line.split("=", 1)[-1]
    return False


def cancel(job_ids: Iterable[str]) -> None:
    ids = list(job_ids)
    if ids:
        _run(["scancel", *ids])
