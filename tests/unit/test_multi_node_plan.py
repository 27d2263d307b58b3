"""Unit tests of planning one model across several nodes: the group from the
options and the LeaderWorkerSet variables, every refusal as one sentence, how
the model is split across the nodes, what build_config makes of a leader and
of a worker, and what the engine command, the run folder and --dry-run of
each look like."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from entrypoint import render
from entrypoint.config import Config
from entrypoint.demo.model import demo_model_dir
from entrypoint.engine_options import demo_args
from entrypoint.errors import EXIT_BAD_CONFIG, EntryError
from entrypoint.node_group import DEFAULT_RENDEZVOUS_PORT, NodeGroup, plan_node_group
from entrypoint.parallel import HeadCounts, ParallelPlan, choose_tensor_parallel, spread_over_nodes

from fakes import MASTER_KEY, make_config, model_folder

PYTHON = "/opt/venv/bin/python"
RUN_DIR = Path("/run/llm-entry-abc")
LEADER_ADDRESS = "10.0.0.5"
LWS = {"LWS_GROUP_SIZE": "2", "LWS_WORKER_INDEX": "1", "LWS_LEADER_ADDRESS": "llm-0.llm.default"}
LLAMA_8B = HeadCounts(32, 8)
HEADS_24 = HeadCounts(24, 8)


def plan(nodes: int | None = None, rank: int | None = None, leader: str | None = None,
         port: int = DEFAULT_RENDEZVOUS_PORT, parallelism: str = "pipeline",
         env: dict[str, str] | None = None) -> NodeGroup:
    return plan_node_group(nodes, rank, leader, port, parallelism, env or {})


def plan_refused(**arguments) -> str:
    """The message of the EntryError plan_node_group raises, checked to be one sentence with exit code 2."""
    with pytest.raises(EntryError) as raised:
        plan(**arguments)
    return one_sentence(raised.value)


def refused(model: Path | str, env: dict[str, str] | None = None, **options) -> str:
    """The message of the EntryError build_config raises, checked to be one sentence with exit code 2."""
    with pytest.raises(EntryError) as raised:
        make_config(model, env, **options)
    return one_sentence(raised.value)


def one_sentence(error: EntryError) -> str:
    assert error.exit_code == EXIT_BAD_CONFIG
    assert "\n" not in error.message
    assert error.message[-1] in ".?"
    return error.message


def group_of_two(rank: int, **options) -> dict:
    """The options of node `rank` in a group of two."""
    return dict(nodes=2, node_rank=rank, leader_address=LEADER_ADDRESS, **options)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return model_folder(tmp_path)   # 32 heads, 8 KV heads


# --- the group: options, variables, refusals ---------------------------------------

def test_without_options_or_variables_a_node_is_a_group_of_one() -> None:
    group = plan()
    assert group == NodeGroup(reason="one node")
    assert not group.multi_node and not group.is_worker


def test_a_leader_worker_set_of_one_node_is_the_single_node_too() -> None:
    env = {"LWS_GROUP_SIZE": "1", "LWS_WORKER_INDEX": "0", "LWS_LEADER_ADDRESS": "llm-0.llm.default"}
    assert plan(env=env) == NodeGroup(reason="one node")


def test_the_leader_worker_set_variables_are_the_defaults_and_the_reason_names_them() -> None:
    group = plan(env=LWS)
    assert group == NodeGroup(
        2, 1, "llm-0.llm.default", 29501, "pipeline",
        "node rank 1 of 2 (from LWS_GROUP_SIZE=2, LWS_WORKER_INDEX=1, LWS_LEADER_ADDRESS=llm-0.llm.default), "
        "a worker: its engine runs headless, no proxy; rendezvous at llm-0.llm.default:29501; "
        "pipeline parallel across nodes")
    assert group.multi_node and group.is_worker


def test_spaces_around_the_variables_values_are_ignored() -> None:
    env = {"LWS_GROUP_SIZE": " 3 ", "LWS_WORKER_INDEX": "2\n", "LWS_LEADER_ADDRESS": " llm-0.llm.default "}
    group = plan(env=env)
    assert (group.nodes, group.rank, group.leader_address) == (3, 2, "llm-0.llm.default")


def test_blank_variables_count_as_unset() -> None:
    env = {"LWS_GROUP_SIZE": "  ", "LWS_WORKER_INDEX": "", "LWS_LEADER_ADDRESS": " "}
    assert plan(env=env) == NodeGroup(reason="one node")


def test_the_options_win_over_the_variables_and_the_reason_names_no_variable() -> None:
    group = plan(nodes=4, rank=0, leader=LEADER_ADDRESS, port=29600, parallelism="tensor", env=LWS)
    assert group == NodeGroup(
        4, 0, LEADER_ADDRESS, 29600, "tensor",
        "node rank 0 of 4, the leader: it serves the API; rendezvous at 10.0.0.5:29600; "
        "tensor parallel across nodes")
    assert group.multi_node and not group.is_worker


def test_a_variable_that_is_not_a_number_does_not_matter_when_the_option_is_given() -> None:
    group = plan(nodes=2, rank=1, leader=LEADER_ADDRESS, env={"LWS_GROUP_SIZE": "two", "LWS_WORKER_INDEX": "x"})
    assert (group.nodes, group.rank) == (2, 1)


def test_the_leader_is_named_with_its_rendezvous_address() -> None:
    group = plan(nodes=3, rank=2, leader="llm-0.llm.default")
    assert group.rendezvous_address == "llm-0.llm.default:29501"
    assert group.leader == "the leader (node rank 0 of 3) at llm-0.llm.default:29501"


def test_an_ipv6_leader_is_bracketed_in_its_rendezvous_address() -> None:
    group = plan(nodes=2, rank=1, leader="fd00::5", port=29600)
    assert group.rendezvous_address == "[fd00::5]:29600"
    assert group.leader == "the leader (node rank 0 of 2) at [fd00::5]:29600"


@pytest.mark.parametrize("rank", [4, 7])
def test_a_rank_outside_the_group_is_refused_with_the_ranks_there_are(rank: int) -> None:
    assert plan_refused(nodes=4, rank=rank, leader=LEADER_ADDRESS) == (
        f"--node-rank {rank} is not a node of a group of 4: use 0 for the leader and 1 to 3 for the workers.")


def test_a_rank_outside_a_group_of_two_names_the_one_worker_rank() -> None:
    assert plan_refused(nodes=2, rank=2, leader=LEADER_ADDRESS) == (
        "--node-rank 2 is not a node of a group of 2: use 0 for the leader and 1 for the worker.")


@pytest.mark.parametrize("nodes", [1, 4])
def test_a_negative_rank_is_refused_as_such(nodes: int) -> None:
    assert plan_refused(nodes=nodes, rank=-1, leader=LEADER_ADDRESS) == (
        "--node-rank -1 must be 0 or more: 0 is the leader, 1 and up the workers.")


def test_a_rank_from_the_variable_outside_the_group_names_the_variable() -> None:
    message = plan_refused(env={**LWS, "LWS_WORKER_INDEX": "2"})
    assert message.startswith("LWS_WORKER_INDEX=2 is not a node of a group of 2")


def test_a_node_rank_without_a_group_is_refused() -> None:
    assert plan_refused(rank=1) == (
        "--node-rank 1 needs a group: set --nodes (or LWS_GROUP_SIZE) to the number of nodes.")


@pytest.mark.parametrize("env", [{}, {"LWS_LEADER_ADDRESS": "  "}], ids=["unset", "blank"])
def test_a_group_without_a_leader_address_is_refused(env: dict[str, str]) -> None:
    assert plan_refused(nodes=2, rank=0, env=env) == (
        "--nodes 2 needs --leader-address (LWS_LEADER_ADDRESS in a LeaderWorkerSet): "
        "the address at which every node of the group reaches the leader.")


def test_a_group_size_from_the_variable_without_a_leader_address_is_refused() -> None:
    assert plan_refused(env={"LWS_GROUP_SIZE": "3"}).startswith("--nodes 3 needs --leader-address")


@pytest.mark.parametrize("variable,raw,option", [
    ("LWS_GROUP_SIZE", "two", "--nodes"),
    ("LWS_GROUP_SIZE", "2.0", "--nodes"),
    ("LWS_WORKER_INDEX", "1.5", "--node-rank"),
    ("LWS_WORKER_INDEX", "worker-1", "--node-rank"),
])
def test_a_leader_worker_set_variable_that_is_not_a_whole_number_is_refused(
        variable: str, raw: str, option: str) -> None:
    env = {**LWS, variable: raw}
    assert plan_refused(env=env) == (
        f"{variable}={raw!r} (the default of {option}) is not a whole number: fix the variable or pass {option}.")


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_a_rendezvous_port_outside_the_tcp_range_is_refused(port: int) -> None:
    assert plan_refused(nodes=2, rank=0, leader=LEADER_ADDRESS, port=port) == (
        f"--rendezvous-port {port} is not a TCP port: use a number from 1 to 65535.")


def test_an_unknown_node_parallelism_is_refused_with_the_known_ones() -> None:
    assert plan_refused(nodes=2, rank=0, leader=LEADER_ADDRESS, parallelism="data") == (
        "--node-parallelism data is unknown: use one of pipeline, tensor.")


@pytest.mark.parametrize("nodes", [0, -2])
def test_fewer_than_one_node_is_refused(nodes: int) -> None:
    assert plan_refused(nodes=nodes, rank=0, leader=LEADER_ADDRESS) == f"--nodes {nodes} must be 1 or more."


# --- how the model is split across the nodes ----------------------------------------

def test_spreading_over_nodes_adds_a_pipeline_stage_per_node_by_default() -> None:
    per_node = choose_tensor_parallel(8, LLAMA_8B, None)
    assert spread_over_nodes(per_node, LLAMA_8B, 2, "pipeline") == ParallelPlan(
        8, "8 GPUs, 32 heads (8 KV): tensor parallel 8 (each node); pipeline parallel 2, one stage a node",
        pipeline_parallel_size=2)


def test_spreading_tensor_parallel_over_nodes_multiplies_the_size() -> None:
    per_node = choose_tensor_parallel(8, LLAMA_8B, None)
    assert spread_over_nodes(per_node, LLAMA_8B, 2, "tensor") == ParallelPlan(
        16, "8 GPUs, 32 heads (8 KV): tensor parallel 8; x 2 nodes: tensor parallel 16 across the group (requested)",
        pipeline_parallel_size=1)


def test_tensor_parallel_over_nodes_is_refused_for_heads_that_do_not_split_that_many_ways() -> None:
    per_node = choose_tensor_parallel(8, HEADS_24, None)
    assert per_node.tensor_parallel_size == 8   # 24 heads split 8 ways on one node
    with pytest.raises(EntryError) as raised:
        spread_over_nodes(per_node, HEADS_24, 2, "tensor")
    assert one_sentence(raised.value) == (
        "--node-parallelism tensor splits the model 16 ways (8 a node x 2 nodes), which a model with 24 attention "
        "heads and 8 KV heads does not allow: use --node-parallelism pipeline, or a smaller --tensor-parallel-size.")


def test_the_same_heads_split_across_nodes_as_a_pipeline() -> None:
    plan_ = spread_over_nodes(choose_tensor_parallel(8, HEADS_24, None), HEADS_24, 2, "pipeline")
    assert (plan_.tensor_parallel_size, plan_.pipeline_parallel_size) == (8, 2)


def test_unknown_head_counts_let_tensor_parallel_span_the_nodes() -> None:
    plan_ = spread_over_nodes(choose_tensor_parallel(8, None, None), None, 2, "tensor")
    assert (plan_.tensor_parallel_size, plan_.pipeline_parallel_size) == (16, 1)


# --- build_config -----------------------------------------------------------------------

def test_a_leader_of_two_eight_gpu_nodes_runs_tensor_parallel_8_and_two_pipeline_stages(model_dir: Path) -> None:
    config = make_config(model_dir, node_gpus=8, **group_of_two(0))
    assert (config.parallel.tensor_parallel_size, config.parallel.pipeline_parallel_size) == (8, 2)
    assert config.group == NodeGroup(
        2, 0, LEADER_ADDRESS, 29501, "pipeline",
        "node rank 0 of 2, the leader: it serves the API; rendezvous at 10.0.0.5:29501; pipeline parallel across nodes")


def test_a_single_node_keeps_one_pipeline_stage(model_dir: Path) -> None:
    config = make_config(model_dir, node_gpus=8)
    assert (config.parallel.tensor_parallel_size, config.parallel.pipeline_parallel_size) == (8, 1)
    assert not config.group.multi_node


def test_build_config_takes_the_group_from_the_leader_worker_set_variables(model_dir: Path) -> None:
    config = make_config(model_dir, LWS, node_gpus=8)
    assert (config.group.nodes, config.group.rank, config.group.leader_address) == (2, 1, "llm-0.llm.default")


def test_tensor_parallel_across_nodes_is_refused_at_build_for_24_heads(tmp_path: Path) -> None:
    model = model_folder(tmp_path, heads=24, kv_heads=8)
    message = refused(model, node_gpus=8, node_parallelism="tensor", **group_of_two(0))
    assert message.startswith("--node-parallelism tensor splits the model 16 ways (8 a node x 2 nodes)")


def test_engine_restarts_are_refused_in_a_group(model_dir: Path) -> None:
    assert refused(model_dir, engine_restart="always", **group_of_two(0)) == (
        "--engine-restart always cannot restart one node of a group of 2: the others' engines belong to the "
        "old group. Leave it at never; the node exits and its LeaderWorkerSet (RecreateGroupOnPodRestart) "
        "restarts the group.")
    assert "--engine-restart always" in refused(model_dir, engine_restart="always", **group_of_two(1))


def test_engine_restarts_are_still_allowed_on_a_single_node(model_dir: Path) -> None:
    assert make_config(model_dir, engine_restart="always").engine_restart == "always"


def test_a_worker_needs_no_master_key_and_gets_a_random_stand_in(model_dir: Path) -> None:
    first = make_config(model_dir, master_key=None, **group_of_two(1))
    second = make_config(model_dir, master_key=None, **group_of_two(1))
    assert first.group.is_worker
    assert len(first.master_key.reveal()) >= 16
    assert first.master_key.reveal() != second.master_key.reveal()


def test_a_leader_still_needs_a_master_key(model_dir: Path) -> None:
    assert refused(model_dir, master_key=None, **group_of_two(0)) == (
        "no master key: pass --master-key-file or --master-key, or set LLM_ENTRY_MASTER_KEY or "
        "LITELLM_MASTER_KEY (generate one with: openssl rand -hex 24).")


def test_a_worker_given_a_weak_master_key_is_still_refused(model_dir: Path) -> None:
    message = refused(model_dir, master_key="sk-1234", **group_of_two(1))
    assert message.startswith("the master key from --master-key is a well-known example key")


def test_a_worker_given_a_weak_master_key_by_variable_names_the_variable(model_dir: Path) -> None:
    message = refused(model_dir, {"LLM_ENTRY_MASTER_KEY": "a1B2c3D4"}, master_key="a1B2c3D4", **group_of_two(1))
    assert message.startswith("the master key from LLM_ENTRY_MASTER_KEY is shorter than 16 characters")


def test_a_worker_given_an_empty_master_key_is_refused_like_the_leader(model_dir: Path) -> None:
    assert "is empty" in refused(model_dir, master_key="", **group_of_two(1))


def test_a_worker_given_a_good_master_key_keeps_it(model_dir: Path) -> None:
    assert make_config(model_dir, **group_of_two(1)).master_key.reveal() == MASTER_KEY


def test_the_demo_drops_enforce_eager_only_across_nodes(tmp_path: Path) -> None:
    single = make_config("demo", node_gpus=0, cache_dir=tmp_path)
    assert single.engine_args == ("--dtype", "float32", "--enforce-eager", "--max-model-len", "2048")
    for rank in (0, 1):
        config = make_config("demo", node_gpus=0, cache_dir=tmp_path, **group_of_two(rank))
        assert config.engine_args == ("--dtype", "float32", "--max-model-len", "2048")


def test_the_demos_arguments_across_nodes_still_drop_a_context_length_the_user_set() -> None:
    assert demo_args(1024, multi_node=True) == ("--dtype", "float32")
    assert demo_args(1024) == ("--dtype", "float32", "--enforce-eager")


@pytest.mark.parametrize("args,flag,advice", [
    (("--nnodes", "3"), "--nnodes", "use llm-entry's --nodes."),
    (("--nnodes=3",), "--nnodes", "use llm-entry's --nodes."),
    (("-n", "3"), "--nnodes", "use llm-entry's --nodes."),
    (("--node-rank", "1"), "--node-rank", "use llm-entry's --node-rank."),
    (("--node_rank=1",), "--node-rank", "use llm-entry's --node-rank."),
    (("-r", "1"), "--node-rank", "use llm-entry's --node-rank."),
    (("--master-addr", "10.0.0.9"), "--master-addr", "use llm-entry's --leader-address."),
    (("--master-port=1",), "--master-port", "use llm-entry's --rendezvous-port."),
    (("--master_port", "29600"), "--master-port", "use llm-entry's --rendezvous-port."),
    (("--headless",), "--headless", "llm-entry runs every node of rank 1 and up headless; set --node-rank."),
])
def test_the_group_flags_cannot_be_passed_after_the_double_dash(
        model_dir: Path, args: tuple[str, ...], flag: str, advice: str) -> None:
    message = refused(model_dir, engine_args=("--enable-prefix-caching", *args))
    assert message == f"an argument after -- sets the engine's {flag}, which llm-entry manages: {advice}"


# --- what the engine is started with, and the run folder ------------------------------------

def demo_node(tmp_path: Path, rank: int, **options) -> Config:
    """Node `rank` of a group of two serving the demo model on the CPU."""
    return make_config("demo", node_gpus=0, cache_dir=tmp_path, **group_of_two(rank, **options))


def test_the_leaders_engine_serves_the_api_and_leads_the_group(tmp_path: Path) -> None:
    assert render.engine_command(demo_node(tmp_path, 0)) == [
        sys.executable, "-m", "entrypoint.inside.engine_cli", "serve",
        "--model", str(demo_model_dir(tmp_path)),
        "--served-model-name", "demo",
        "--host", "127.0.0.1",
        "--port", "3000",
        "--tensor-parallel-size", "1",
        "--shutdown-timeout", "5",
        "--disable-uvicorn-access-log",
        "--middleware", "entrypoint.inside.engine_guard.RequireInternalKey",
        "--pipeline-parallel-size", "2",
        "--distributed-executor-backend", "mp",
        "--nnodes", "2",
        "--node-rank", "0",
        "--master-addr", "10.0.0.5",
        "--master-port", "29501",
        "--dtype", "float32",
        "--max-model-len", "2048",
    ]


def test_a_workers_engine_runs_headless_with_no_address_port_or_guard(tmp_path: Path) -> None:
    assert render.engine_command(demo_node(tmp_path, 1, rendezvous_port=29600)) == [
        sys.executable, "-m", "entrypoint.inside.engine_cli", "serve",
        "--model", str(demo_model_dir(tmp_path)),
        "--served-model-name", "demo",
        "--tensor-parallel-size", "1",
        "--shutdown-timeout", "5",
        "--pipeline-parallel-size", "2",
        "--distributed-executor-backend", "mp",
        "--nnodes", "2",
        "--node-rank", "1",
        "--master-addr", "10.0.0.5",
        "--master-port", "29600",
        "--headless",
        "--dtype", "float32",
        "--max-model-len", "2048",
    ]


def test_a_single_node_engine_gets_no_group_flags(tmp_path: Path) -> None:
    command = render.engine_command(make_config("demo", node_gpus=0, cache_dir=tmp_path))
    for flag in ("--pipeline-parallel-size", "--distributed-executor-backend", "--nnodes", "--node-rank",
                 "--master-addr", "--master-port", "--headless"):
        assert flag not in command


def test_a_worker_supervises_its_engine_only(tmp_path: Path) -> None:
    assert render.supervised_programs(demo_node(tmp_path, 1)) == ("engine",)
    assert render.supervised_programs(demo_node(tmp_path, 0)) == ("engine", "proxy")


def test_a_workers_run_folder_holds_the_supervisord_conf_and_the_engine_launch_only(tmp_path: Path) -> None:
    names = [file.name for file in render.render_run_files(demo_node(tmp_path, 1), PYTHON, RUN_DIR)]
    assert names == ["supervisord.conf", "engine.launch.json"]


def test_a_leaders_run_folder_holds_the_proxy_files_too(tmp_path: Path) -> None:
    names = [file.name for file in render.render_run_files(demo_node(tmp_path, 0), PYTHON, RUN_DIR)]
    assert names == ["supervisord.conf", "litellm.yaml", "engine.launch.json", "proxy.launch.json",
                     "proxy-logging.json", "llm_entry_auth.py"]


def test_a_worker_with_a_keys_file_and_two_proxy_workers_runs_no_limiter(model_dir: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("team-a-5d1c9e7b3a8f2c6e4b0d\n")
    leader = make_config(model_dir, api_keys_file=keys, cpus=4, **group_of_two(0))
    assert render.supervised_programs(leader) == ("engine", "proxy", "limiter")
    worker = make_config(model_dir, api_keys_file=keys, cpus=4, **group_of_two(1))
    assert render.supervised_programs(worker) == ("engine",)
    assert [file.name for file in render.render_run_files(worker, PYTHON, RUN_DIR)] == [
        "supervisord.conf", "engine.launch.json"]


def test_a_workers_supervisord_conf_is_the_leaders_without_the_proxy_program(tmp_path: Path) -> None:
    leader = render.render_supervisord_config(demo_node(tmp_path, 0), PYTHON, RUN_DIR)
    worker = render.render_supervisord_config(demo_node(tmp_path, 1), PYTHON, RUN_DIR)
    assert "[program:proxy]" in leader
    assert "[program:proxy]" not in worker
    assert "[program:engine]" in worker
    assert worker == leader[:leader.index("[program:proxy]")]


def test_a_workers_dry_run_names_the_group_and_shows_no_proxy(tmp_path: Path) -> None:
    text = render.dry_run_text(demo_node(tmp_path, 1), PYTHON, Path("<run-dir>"))
    lines = text.splitlines()
    assert lines[1] == "# no GPU visible: the engine runs on the CPU (each node); pipeline parallel 2, one stage a node"
    assert lines[2] == ("# node rank 1 of 2, a worker: its engine runs headless, no proxy; "
                        "rendezvous at 10.0.0.5:29501; pipeline parallel across nodes")
    assert lines[3] == "# engine command:"
    assert lines[4].endswith("--node-rank 1 --master-addr 10.0.0.5 --master-port 29501 --headless "
                             "--dtype float32 --max-model-len 2048")
    assert "# proxy command:" not in lines
    assert "# litellm.yaml:" not in lines
    assert "# supervisord.conf:" in lines
    assert "[program:proxy]" not in text


def test_a_leaders_dry_run_names_the_group_and_shows_the_proxy(tmp_path: Path) -> None:
    lines = render.dry_run_text(demo_node(tmp_path, 0), PYTHON, Path("<run-dir>")).splitlines()
    assert lines[2] == ("# node rank 0 of 2, the leader: it serves the API; "
                        "rendezvous at 10.0.0.5:29501; pipeline parallel across nodes")
    assert "# proxy command:" in lines
    assert "# litellm.yaml:" in lines


def test_a_single_nodes_dry_run_has_no_group_line(tmp_path: Path) -> None:
    lines = render.dry_run_text(make_config("demo", node_gpus=0, cache_dir=tmp_path), PYTHON,
                                Path("<run-dir>")).splitlines()
    assert lines[2] == "# engine command:"
    assert not any(line.startswith("# node rank") or line == "# one node" for line in lines)
