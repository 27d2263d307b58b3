"""deploy/kubernetes/: every manifest validates (kubernetes-validate --strict,
the newest and an older Kubernetes; the ServiceMonitor and the LeaderWorkerSet
against their CRDs kept in schemas/), the overlays and examples validate as
kustomize renders them, and the figures tied to llm-entry's code agree with it
(the multi-node example's own: test_kubernetes_multi_node.py)."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from entrypoint.config import WORKSPACE_PORT, Options

from repo_paths import REPO

KIT = REPO / "deploy" / "kubernetes"
SCHEMAS = KIT / "schemas"
VERSIONS = ("1.37.0", "1.30.0")   # the newest kubernetes-validate knows, and an older one still run widely
KUSTOMIZE = {"Kustomization", "Component"}
PROBES = ("startup", "readiness", "liveness")


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> list[Path]:
    return sorted(path for path in KIT.rglob("*.yaml")
                  if SCHEMAS not in path.parents and documents(path)[0]["kind"] not in KUSTOMIZE)


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> the openAPIV3Schema of each CRD kept in schemas/
    (read once: the LeaderWorkerSet CRD alone takes seconds to parse; callers
    must not change what it returns)."""
    found = {}
    for path in SCHEMAS.glob("*.yaml"):
        for crd in documents(path):
            for version in crd["spec"]["versions"]:
                api_version = f"{crd['spec']['group']}/{version['name']}"
                found[(api_version, crd["spec"]["names"]["kind"])] = version["schema"]["openAPIV3Schema"]
    return found


def strict(schema: dict) -> dict:
    """The schema with unknown fields refused, as kubernetes-validate --strict
    does and as the API server prunes them."""
    schema = copy.deepcopy(schema)

    def close(node: object) -> None:
        if isinstance(node, dict):
            if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
                node.setdefault("additionalProperties", False)
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


@functools.cache
def crd_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
    """A strict validator of everything but apiVersion, kind and metadata, for
    a resource with a CRD in schemas/ (None without one). Built once: checking
    the LeaderWorkerSet CRD's schema itself takes seconds."""
    custom = crd_schemas().get((api_version, kind))
    if custom is None:
        return None
    closed = strict(custom)
    schema = {**closed, "properties": {k: v for k, v in closed["properties"].items()
                                       if k not in ("apiVersion", "kind", "metadata")}}
    checker = jsonschema.validators.validator_for(schema)
    checker.check_schema(schema)
    return checker(schema)


def validate(resource: dict, version: str) -> None:
    custom = crd_validator(resource["apiVersion"], resource["kind"])
    if custom is not None:
        error = jsonschema.exceptions.best_match(
            custom.iter_errors({k: v for k, v in resource.items() if k not in ("apiVersion", "kind", "metadata")}))
        if error is not None:
            raise error
        return
    try:
        kubernetes_validate.validate(resource, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        raise AssertionError(f"{resource['kind']}/{resource['metadata']['name']} against {version}: "
                             f"{'.'.join(map(str, exc.path))}: {exc.message}") from exc


# --- kustomize, as far as the kit uses it -------------------------------------

def render(folder: Path) -> list[dict]:
    """The resources `kubectl kustomize folder` prints, for the features the
    kit uses: resources (files and folders), components, images, replicas and
    JSON 6902 patches with a kind/name target."""
    (kustomization,) = documents(folder / "kustomization.yaml")
    resources: list[dict] = []
    for entry in kustomization.get("resources", []) + kustomization.get("components", []):
        path = (folder / entry).resolve()
        resources += render(path) if path.is_dir() else documents(path)
    known = {"apiVersion", "kind", "resources", "components", "images", "replicas", "patches"}
    assert set(kustomization) <= known, f"{folder}: render() does not know {set(kustomization) - known}"
    for image in kustomization.get("images", []):
        for container in containers(resources):
            name, _, _ = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    for replicas in kustomization.get("replicas", []):
        target(resources, "Deployment", replicas["name"])["spec"]["replicas"] = replicas["count"]
    for patch in kustomization.get("patches", []):
        resource = target(resources, patch["target"]["kind"], patch["target"]["name"])
        for op in yaml.safe_load(patch["patch"]):
            apply_json_patch(resource, op)
    return resources


def pod_templates(resource: dict) -> list[dict]:
    """The pod templates a resource creates pods from: a Deployment's, a
    LeaderWorkerSet's leader and worker templates."""
    if resource["kind"] == "Deployment":
        return [resource["spec"]["template"]]
    if resource["kind"] == "LeaderWorkerSet":
        group = resource["spec"]["leaderWorkerTemplate"]
        return [group["leaderTemplate"], group["workerTemplate"]]
    return []


def containers(resources: list[dict]) -> list[dict]:
    return [c for r in resources if r["kind"] == "Deployment" for c in r["spec"]["template"]["spec"]["containers"]]


def target(resources: list[dict], kind: str, name: str) -> dict:
    (found,) = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def apply_json_patch(resource: dict, op: dict) -> None:
    *parents, last = op["path"].lstrip("/").split("/")
    node: dict | list = resource
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        {"add": lambda: node.insert(index, op["value"]), "remove": lambda: node.pop(index),
         "replace": lambda: node.__setitem__(index, op["value"])}[op["op"]]()
    else:
        assert op["op"] == "remove" or op["op"] == "add" or last in node, op
        node.pop(last) if op["op"] == "remove" else node.__setitem__(last, op["value"])


# --- validation ---------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", manifests(), ids=lambda p: str(p.relative_to(KIT)))
def test_every_manifest_validates_strictly(path, version):
    for resource in documents(path):
        validate(resource, version)


RENDERED = [KIT, KIT / "overlays" / "cpu", KIT / "examples" / "shared-redis", KIT / "examples" / "multi-node"]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("folder", RENDERED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_kustomization_renders_to_valid_manifests(folder, version):
    for resource in render(folder):
        validate(resource, version)


def test_the_monitoring_component_renders_a_valid_servicemonitor():
    (monitor,) = render(KIT / "components" / "monitoring")
    validate(monitor, VERSIONS[0])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["authorization"]["credentials"] == {"name": secret_name(), "key": "master-key"}


def test_the_strict_crd_check_refuses_an_unknown_field():
    (monitor,) = documents(KIT / "components" / "monitoring" / "servicemonitor.yaml")
    monitor["spec"]["endpoints"][0]["bearerTokenFiel"] = "/x"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor, VERSIONS[0])


# --- what the kit must agree with ---------------------------------------------

def deployment(folder: Path = KIT) -> dict:
    return target(render(folder), "Deployment", "llm-entry")


def server(folder: Path = KIT) -> dict:
    return deployment(folder)["spec"]["template"]["spec"]["containers"][0]


def secret_name() -> str:
    volumes = deployment()["spec"]["template"]["spec"]["volumes"]
    return next(v["secret"]["secretName"] for v in volumes if "secret" in v)


def test_the_probes_are_the_images_own_scripts():
    for name in PROBES:
        probe = server()[f"{name}Probe"]
        assert probe["exec"]["command"] == [f"/opt/llm-entry/probes/{name}"]
        assert (REPO / "probes" / name).is_file()
    assert "WORKDIR /opt/llm-entry" in (REPO / "Dockerfile").read_text()


def test_the_startup_budget_is_llm_entrys_startup_timeout():
    startup = server()["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == Options.startup_timeout


def test_kubernetes_waits_longer_than_llm_entrys_grace_period():
    assert deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > Options.grace_period


def test_the_port_is_llm_entrys_default():
    (port,) = server()["ports"]
    assert port["containerPort"] == WORKSPACE_PORT
    (service,) = [r for r in render(KIT) if r["kind"] == "Service"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]


@pytest.mark.parametrize("folder", RENDERED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_pod_is_restricted(folder):
    pods = [template["spec"] for resource in render(folder) for template in pod_templates(resource)]
    assert pods, f"{folder}: no pod templates"
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["enableServiceLinks"] is False and pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}


def test_the_writable_places_are_volumes():
    pod = deployment()["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in server()["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert "emptyDir" in volumes[mounts["/etc/probe"]]
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert "ENV LLM_ENTRY_PROBE_DIR=/etc/probe" in (REPO / "Dockerfile").read_text()


def test_the_keys_come_from_a_secret_mounted_as_files():
    mounts = {m["name"]: m for m in server()["volumeMounts"]}
    keys = next(v for v in deployment()["spec"]["template"]["spec"]["volumes"] if "secret" in v)
    mount = mounts[keys["name"]]
    # No subPath: only a whole mounted Secret follows its updates (key rotation).
    assert mount["readOnly"] is True and "subPath" not in mount
    args = server()["args"]
    for option, key in (("--master-key-file", "master-key"), ("--api-keys-file", "api-keys")):
        assert args[args.index(option) + 1] == f"{mount['mountPath']}/{key}"
    assert not any(e["name"] in ("LLM_ENTRY_MASTER_KEY", "LITELLM_MASTER_KEY") for e in server().get("env", []))


def test_the_example_secret_holds_no_usable_key():
    from entrypoint.inside.weak_keys import weakness

    (secret,) = documents(KIT / "secret.example.yaml")
    assert secret["metadata"]["name"] == secret_name()
    assert weakness(secret["stringData"]["master-key"]) is not None
    assert "secret.example.yaml" not in (KIT / "kustomization.yaml").read_text().split("resources:")[1]


def test_a_mounted_model_is_served_offline_and_a_gpu_is_asked_for():
    env = {e["name"]: e.get("value") for e in server()["env"]}
    assert env["HF_HUB_OFFLINE"] == "1"
    assert server()["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_the_cpu_overlay_serves_the_demo_from_the_cpu_image_without_a_gpu():
    container = server(KIT / "overlays" / "cpu")
    assert container["image"] == "llm-entry:cpu"
    assert container["args"][:2] == ["--model", "demo"]
    assert "nvidia.com/gpu" not in str(container["resources"])
    assert all(m["mountPath"] != "/models/model" for m in container["volumeMounts"])


def test_the_shared_redis_example_runs_replicas_on_one_redis():
    folder = KIT / "examples" / "shared-redis"
    assert deployment(folder)["spec"]["replicas"] > 1
    args = server(folder)["args"]
    url = args[args.index("--redis-url") + 1]
    (redis_service,) = [r for r in render(folder) if r["kind"] == "Service" and "redis" in r["metadata"]["name"]]
    assert url == f"redis://{redis_service['metadata']['name']}:{redis_service['spec']['ports'][0]['port']}/0"
