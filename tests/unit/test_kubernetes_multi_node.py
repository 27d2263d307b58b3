"""deploy/kubernetes/examples/multi-node: the LeaderWorkerSet validates against
the LWS CRD kept in schemas/ with unknown fields refused, its leader and worker
pod templates each validate as a core/v1 PodTemplate, and the figures tied to
llm-entry's code agree with it (ports, probes, startup budget, grace period,
who the Service reaches, how a failure is handled)."""

from __future__ import annotations

import jsonschema
import pytest
from test_kubernetes_kit import KIT, PROBES, VERSIONS, crd_validator, documents, pod_templates, render, target, validate

from entrypoint.config import WORKSPACE_PORT, Options

EXAMPLE = KIT / "examples" / "multi-node"
ROLES = ("leader", "worker")
# Labels the LWS controller puts on every pod it creates (v0.10.0,
# api/leaderworkerset/v1/leaderworkerset_types.go).
SET_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
WORKER_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"
NODE_OPTIONS = ("--nodes", "--node-rank", "--leader-address", "--rendezvous-port")


def leaderworkerset() -> dict:
    return target(render(EXAMPLE), "LeaderWorkerSet", "llm-entry")


def template(role: str) -> dict:
    leader, worker = pod_templates(leaderworkerset())
    return {"leader": leader, "worker": worker}[role]


def container(role: str) -> dict:
    (found,) = template(role)["spec"]["containers"]
    return found


def pod_labels(role: str) -> dict[str, str]:
    """The labels a pod of this template carries once LWS has created it."""
    injected = {SET_NAME_LABEL: leaderworkerset()["metadata"]["name"],
                WORKER_INDEX_LABEL: "0" if role == "leader" else "1"}
    return {**template(role)["metadata"]["labels"], **injected}


def ports(role: str) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container(role).get("ports", [])}


# --- validation ---------------------------------------------------------------

def test_the_leaderworkerset_is_checked_against_its_crd():
    assert crd_validator(leaderworkerset()["apiVersion"], "LeaderWorkerSet") is not None
    (source,) = [line for line in (KIT / "schemas" / "leaderworkerset.x-k8s.io_leaderworkersets.yaml")
                 .read_text().splitlines()[:6] if "tag v" in line]
    assert "kubernetes-sigs/lws" in source
    assert "v0.10.0" in (EXAMPLE / "kustomization.yaml").read_text()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("role", ROLES)
def test_each_pod_template_validates_as_a_core_pod_template(role, version):
    validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"llm-entry-{role}"},
              "template": template(role)}, version)


MISTAKES = {
    "a misspelled group field": (("spec", "leaderWorkerTemplate", "restartPolicyy"), "RecreateGroupOnPodRestart"),
    "a restart policy LWS does not know": (("spec", "leaderWorkerTemplate", "restartPolicy"), "RecreateGroup"),
    "a startup policy LWS does not know": (("spec", "startupPolicy"), "LeaderStarted"),
    "a misspelled probe in a pod template": (
        ("spec", "leaderWorkerTemplate", "workerTemplate", "spec", "containers", 0, "readinessProb"), {}),
    "a misspelled volume field": (
        ("spec", "leaderWorkerTemplate", "leaderTemplate", "spec", "volumes", 0, "emptyDir", "medum"), "Memory"),
}


@pytest.mark.parametrize("path, value", MISTAKES.values(), ids=MISTAKES.keys())
def test_the_crd_check_refuses_a_mistake(path, value):
    resource = leaderworkerset()
    node = resource
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        validate(resource, VERSIONS[0])


def test_the_pod_template_check_refuses_a_misspelled_field():
    broken = template("worker")
    broken["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(AssertionError, match="readOnlyRootFileSystem"):
        validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "llm-entry-worker"},
                  "template": broken}, VERSIONS[0])


# --- what the example must agree with -----------------------------------------

def test_a_failure_recreates_the_whole_group_of_two_nodes():
    spec = leaderworkerset()["spec"]
    assert spec["leaderWorkerTemplate"]["restartPolicy"] == "RecreateGroupOnPodRestart"
    assert spec["leaderWorkerTemplate"]["size"] == 2
    # LeaderReady would deadlock: the leader is ready only once its workers
    # have joined.
    assert spec["startupPolicy"] == "LeaderCreated"


def test_the_leader_serves_on_llm_entrys_port_and_the_worker_on_none():
    assert ports("leader")["http"] == WORKSPACE_PORT
    assert "http" not in ports("worker")


def test_the_rendezvous_port_is_llm_entrys_default():
    from entrypoint.config import DEFAULT_RENDEZVOUS_PORT

    assert ports("leader")["rendezvous"] == DEFAULT_RENDEZVOUS_PORT


def test_the_service_reaches_the_leader_only():
    (service,) = [r for r in render(EXAMPLE) if r["kind"] == "Service"]
    selector = service["spec"]["selector"].items()
    assert selector <= pod_labels("leader").items()
    assert not selector <= pod_labels("worker").items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"


@pytest.mark.parametrize("role", ROLES)
def test_the_probes_are_the_images_own_scripts(role):
    for name in PROBES:
        assert container(role)[f"{name}Probe"]["exec"]["command"] == [f"/opt/llm-entry/probes/{name}"]


@pytest.mark.parametrize("role", ROLES)
def test_the_startup_budget_is_llm_entrys_startup_timeout(role):
    startup = container(role)["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == Options.startup_timeout


@pytest.mark.parametrize("role", ROLES)
def test_kubernetes_waits_longer_than_llm_entrys_grace_period(role):
    assert template(role)["spec"]["terminationGracePeriodSeconds"] > Options.grace_period


@pytest.mark.parametrize("role", ROLES)
def test_the_writable_places_are_volumes(role):
    mounts = {m["mountPath"]: m["name"] for m in container(role)["volumeMounts"]}
    volumes = {v["name"]: v for v in template(role)["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert "emptyDir" in volumes[mounts["/etc/probe"]]
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"


@pytest.mark.parametrize("role", ROLES)
def test_the_node_figures_come_from_lws_not_from_the_template(role):
    # A rank written into the worker template would give every worker the
    # same one: llm-entry reads LWS_WORKER_INDEX and the rest instead.
    args = container(role)["args"]
    env = {e["name"] for e in container(role)["env"]}
    assert not set(NODE_OPTIONS) & set(args)
    assert not {"LLM_ENTRY_NODES", "LLM_ENTRY_NODE_RANK", "LLM_ENTRY_LEADER_ADDRESS"} & env


@pytest.mark.parametrize("role", ROLES)
def test_no_node_restarts_its_engine_alone(role):
    # A restarted engine cannot rejoin the old group: the node exits, and LWS
    # recreates the group (llm-entry refuses any other --engine-restart there).
    assert Options.engine_restart == "never"
    assert "--engine-restart" not in container(role)["args"]
    assert "LLM_ENTRY_ENGINE_RESTART" not in {e["name"] for e in container(role)["env"]}


@pytest.mark.parametrize("role", ROLES)
def test_each_node_advertises_its_pod_ip(role):
    env = {e["name"]: e for e in container(role)["env"]}
    assert env["VLLM_HOST_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}


def test_every_node_runs_the_same_image_on_as_many_gpus_from_the_same_model():
    leader, worker = container("leader"), container("worker")
    assert leader["image"] == worker["image"]
    assert leader["resources"] == worker["resources"]
    assert leader["resources"]["limits"]["nvidia.com/gpu"] == leader["resources"]["requests"]["nvidia.com/gpu"]
    assert leader["args"][:2] == worker["args"][:2] == ["--model", "/models/model"]
    claims = [[v for v in template(role)["spec"]["volumes"] if "persistentVolumeClaim" in v] for role in ROLES]
    assert claims[0] == claims[1]
    for role in ROLES:
        assert {"name": "HF_HUB_OFFLINE", "value": "1"} in container(role)["env"]


def test_the_keys_reach_the_leader_only():
    (secret,) = documents(KIT / "secret.example.yaml")
    (keys,) = [v for v in template("leader")["spec"]["volumes"] if "secret" in v]
    assert keys["secret"]["secretName"] == secret["metadata"]["name"]
    (mount,) = [m for m in container("leader")["volumeMounts"] if m["name"] == keys["name"]]
    args = container("leader")["args"]
    assert args[args.index("--master-key-file") + 1] == f"{mount['mountPath']}/master-key"
    assert not [v for v in template("worker")["spec"]["volumes"] if "secret" in v]
    assert "--master-key-file" not in container("worker")["args"]


# --- the templates' command lines, as llm-entry reads them in the pods ----------------------------

def dry_run_in_pod(role: str, tmp_path) -> str:
    """What `llm-entry ARGS --dry-run` prints in a pod of the template: its
    args (the mounted paths moved under tmp_path) and literal variables, what
    LWS injects, and 8 GPUs a node."""
    from entrypoint import cli
    from entrypoint.config import Options, build_config
    from entrypoint.gpus import NodeGpus
    from entrypoint.render import dry_run_text

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"num_attention_heads": 128, "num_key_value_heads": 128}')
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "master-key").write_text("sk-" + "5f0c2b9e7a4d1c8f3e6b0a9d2c7f4e1b")
    (keys / "api-keys").write_text("")
    moved = {"/models/model": str(model), "/etc/llm-entry/keys/master-key": str(keys / "master-key"),
             "/etc/llm-entry/keys/api-keys": str(keys / "api-keys")}
    args = [moved.get(arg, arg) for arg in container(role)["args"]]
    env = {item["name"]: item["value"] for item in container(role).get("env", []) if "value" in item}
    env |= {"LWS_GROUP_SIZE": "2", "LWS_WORKER_INDEX": "0" if role == "leader" else "1",
            "LWS_LEADER_ADDRESS": "llm-entry-0.llm-entry.default"}
    params = cli.command.make_context("llm-entry", [*args, "--dry-run"]).params
    options = Options(**{name: value for name, value in params.items() if name != "engine_args"})
    return dry_run_text(build_config(options, env, lambda: NodeGpus(8, "nvidia-smi")), "python", tmp_path / "run")


def test_the_leader_template_starts_the_leader_of_a_pipeline_over_two_nodes(tmp_path):
    text = dry_run_in_pod("leader", tmp_path)
    assert "node rank 0 of 2 (from LWS_GROUP_SIZE=2, LWS_WORKER_INDEX=0, LWS_LEADER_ADDRESS=" in text
    assert ("--tensor-parallel-size 8 --shutdown-timeout" in text and "--pipeline-parallel-size 2" in text
            and "--master-addr llm-entry-0.llm-entry.default --master-port 29501" in text)
    assert "--headless" not in text and "# proxy command:" in text


def test_the_worker_template_starts_a_headless_worker_without_keys(tmp_path):
    text = dry_run_in_pod("worker", tmp_path)
    assert "node rank 1 of 2 (from LWS_GROUP_SIZE=2, LWS_WORKER_INDEX=1, LWS_LEADER_ADDRESS=" in text
    assert "--node-rank 1 --master-addr llm-entry-0.llm-entry.default --master-port 29501 --headless" in text
    assert "# proxy command:" not in text
