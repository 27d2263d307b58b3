"""One model across several nodes: which node this is, where its leader is,
and how the model is split, decided from the options and the environment.

vLLM's native multi-node mode (no Ray): every node runs one engine with
`--nnodes N --node-rank R --master-addr LEADER --master-port P`; rank 0, the
leader, serves the API, every other rank runs `--headless`. A LeaderWorkerSet
injects LWS_GROUP_SIZE, LWS_WORKER_INDEX and LWS_LEADER_ADDRESS into every pod
of a group, so one pod template serves both roles. Pure functions: config
calls them while it validates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .errors import EntryError

# vLLM's own default for --master-port (ParallelConfig.master_port in 0.32):
# the leader's torch.distributed store, which every worker's engine joins.
DEFAULT_RENDEZVOUS_PORT = 29501
NODE_PARALLELISMS = ("pipeline", "tensor")

# What a worker watches besides its engine: its leader, on the board and in
# the lines, like a program of its own that no supervisord runs.
LEADER = "leader"

LWS_GROUP_SIZE = "LWS_GROUP_SIZE"
LWS_WORKER_INDEX = "LWS_WORKER_INDEX"
LWS_LEADER_ADDRESS = "LWS_LEADER_ADDRESS"


@dataclass(frozen=True)
class NodeGroup:
    """This node's place in its group; nodes == 1 is the single-node llm-entry."""

    nodes: int = 1
    rank: int = 0
    leader_address: str | None = None
    rendezvous_port: int = DEFAULT_RENDEZVOUS_PORT
    parallelism: str = "pipeline"   # how the model is split across nodes
    reason: str = ""                # one line for the log: how the group was found

    @property
    def multi_node(self) -> bool:
        return self.nodes > 1

    @property
    def is_worker(self) -> bool:
        """A headless node: engine only, no proxy, no public port."""
        return self.rank > 0

    @property
    def leader(self) -> str:
        """Whom a worker waits for, as its lines name it."""
        return f"the leader (node rank 0 of {self.nodes}) at {self.rendezvous_address}"

    @property
    def rendezvous_address(self) -> str:
        host = self.leader_address or ""
        return f"[{host}]:{self.rendezvous_port}" if ":" in host else f"{host}:{self.rendezvous_port}"


def _whole_number(name: str, raw: str, variable: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise EntryError(f"{variable}={raw!r} (the default of {name}) is not a whole number: "
                         f"fix the variable or pass {name}.") from None


def plan_node_group(nodes: int | None, rank: int | None, leader_address: str | None, rendezvous_port: int,
                    parallelism: str, env: Mapping[str, str]) -> NodeGroup:
    """The group from the options, else from LeaderWorkerSet's variables, checked."""
    said: list[str] = []   # the variables that decided, for the log line and the messages
    nodes = _from_variable(nodes, "--nodes", LWS_GROUP_SIZE, 1, env, said)
    rank = _from_variable(rank, "--node-rank", LWS_WORKER_INDEX, 0, env, said)
    if leader_address is None and env.get(LWS_LEADER_ADDRESS, "").strip():
        leader_address = env[LWS_LEADER_ADDRESS].strip()
        said.append(f"{LWS_LEADER_ADDRESS}={leader_address}")
    _check_size_and_rank(nodes, rank, said)
    if not 1 <= rendezvous_port <= 65535:
        raise EntryError(f"--rendezvous-port {rendezvous_port} is not a TCP port: use a number from 1 to 65535.")
    if parallelism not in NODE_PARALLELISMS:
        raise EntryError(f"--node-parallelism {parallelism} is unknown: use one of {', '.join(NODE_PARALLELISMS)}.")
    if nodes == 1:
        return NodeGroup(reason="one node")
    if not leader_address:
        raise EntryError(f"--nodes {nodes} needs --leader-address (LWS_LEADER_ADDRESS in a LeaderWorkerSet): "
                         "the address at which every node of the group reaches the leader.")
    group = NodeGroup(nodes, rank, leader_address, rendezvous_port, parallelism)
    role = "the leader: it serves the API" if rank == 0 else "a worker: its engine runs headless, no proxy"
    source = f" (from {', '.join(said)})" if said else ""
    reason = (f"node rank {rank} of {nodes}{source}, {role}; rendezvous at {group.rendezvous_address}; "
              f"{parallelism} parallel across nodes")
    return NodeGroup(nodes, rank, leader_address, rendezvous_port, parallelism, reason)


def _from_variable(value: int | None, option: str, variable: str, default: int, env: Mapping[str, str],
                   said: list[str]) -> int:
    if value is not None:
        return value
    raw = env.get(variable, "").strip()
    if not raw:
        return default
    value = _whole_number(option, raw, variable)
    said.append(f"{variable}={value}")
    return value


def _check_size_and_rank(nodes: int, rank: int, said: list[str]) -> None:
    if nodes < 1:
        raise EntryError(f"--nodes {nodes} must be 1 or more.")
    rank_option = f"{LWS_WORKER_INDEX}={rank}" if f"{LWS_WORKER_INDEX}={rank}" in said else f"--node-rank {rank}"
    if rank < 0:
        raise EntryError(f"{rank_option} must be 0 or more: 0 is the leader, 1 and up the workers.")
    if rank >= nodes and nodes == 1:
        raise EntryError(f"{rank_option} needs a group: set --nodes (or LWS_GROUP_SIZE) to the number of nodes.")
    if rank >= nodes:
        workers = "1 for the worker" if nodes == 2 else f"1 to {nodes - 1} for the workers"
        raise EntryError(f"{rank_option} is not a node of a group of {nodes}: use 0 for the leader and {workers}.")
