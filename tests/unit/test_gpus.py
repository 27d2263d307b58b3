"""Unit tests of the GPU count: CUDA_VISIBLE_DEVICES narrowing, `nvidia-smi -L`
parsing, and asking the node through a fake `nvidia-smi` first on PATH."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

from entrypoint.gpus import NodeGpus, parse_nvidia_smi_list, query_node_gpus, visible_gpu_count

SIX_GPUS_LIST = "".join(
    f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-5d1c0b6e-7a4b-9f7c-1e2d-0000000000{i:02d})\n" for i in range(6)
)

MIG_LIST = """\
GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-4b2c1d7e-2f6a-11ee-be56-0242ac120002)
  MIG 3g.40gb     Device  0: (UUID: MIG-8d2a3f7c-0c1e-5b8e-9f1a-3c2d1e0f9a8b)
  MIG 3g.40gb     Device  1: (UUID: MIG-1a2b3c4d-5e6f-5a7b-8c9d-0e1f2a3b4c5d)
GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-9c8b7a6d-2f6a-11ee-be56-0242ac120002)
  MIG 7g.80gb     Device  0: (UUID: MIG-2b3c4d5e-6f7a-5b8c-9d0e-1f2a3b4c5d6e)
"""

DRIVER_FAILURE = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running.\n"
)


def write_fake_nvidia_smi(folder: Path, script_body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / "nvidia-smi"
    tool.write_text("#!/bin/sh\n" + script_body)
    tool.chmod(0o755)
    return tool


def only_on_path(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """PATH holds the fake tool's folder and the shell tools, nothing that could be a real nvidia-smi."""
    monkeypatch.setenv("PATH", os.pathsep.join([str(folder), "/usr/bin", "/bin"]))


@pytest.fixture(autouse=True)
def no_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry makes `import pynvml` raise ImportError, whether or not it is installed.
    monkeypatch.setitem(sys.modules, "pynvml", None)


# --- visible_gpu_count -------------------------------------------------------

@pytest.mark.parametrize("node_count", [0, 1, 3, 6, 8])
def test_without_cuda_visible_devices_every_node_gpu_is_visible(node_count: int) -> None:
    assert visible_gpu_count({}, node_count) == node_count


@pytest.mark.parametrize("value", ["", "-1", "  ", " -1 "])
@pytest.mark.parametrize("node_count", [0, 1, 3, 6, 8])
def test_empty_or_minus_one_cuda_visible_devices_hides_every_gpu(value: str, node_count: int) -> None:
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": value}, node_count) == 0


@pytest.mark.parametrize("node_count,expected", [(0, 0), (1, 1), (3, 2), (6, 2), (8, 2)])
def test_two_listed_gpus_are_visible_when_the_node_has_them(node_count: int, expected: int) -> None:
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": "0,1"}, node_count) == expected


@pytest.mark.parametrize("node_count,expected", [(0, 0), (1, 0), (3, 2), (6, 2), (8, 2)])
def test_order_of_listed_gpus_does_not_matter_but_a_missing_first_index_hides_all(
        node_count: int, expected: int) -> None:
    # "2,0" on a 1-GPU node: index 2 does not exist, and CUDA stops there.
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": "2,0"}, node_count) == expected


def test_cuda_stops_at_the_first_index_the_node_does_not_have() -> None:
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": "0,7"}, 6) == 1
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": "0,7,1"}, 6) == 1
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": "7,0"}, 6) == 0


def test_cuda_stops_at_the_first_entry_that_is_not_a_gpu() -> None:
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": "0,1,-1,2"}, 8) == 2
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": "0,abc,1"}, 8) == 1
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": "0,,1"}, 8) == 1


def test_spaces_around_indices_are_ignored() -> None:
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": " 0 , 1 ,2 "}, 8) == 3


@pytest.mark.parametrize("node_count,expected", [(0, 0), (1, 1), (3, 2), (8, 2)])
def test_gpu_uuids_count_one_each_up_to_the_node_count(node_count: int, expected: int) -> None:
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": "GPU-abc,GPU-def"}, node_count) == expected


def test_mig_uuids_count_one_each() -> None:
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": "MIG-8d2a3f7c"}, 2) == 1


def test_a_duplicate_index_is_not_counted_twice() -> None:
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": "0,1,1"}, 8) <= 2
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": "GPU-abc,GPU-abc"}, 8) <= 1


def test_a_repeated_index_hides_every_gpu_like_cuda_does() -> None:
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": "0,1,0"}, 8) == 0


@pytest.mark.parametrize("value", ["0", "all", "none", "void", ""])
def test_nvidia_visible_devices_is_ignored(value: str) -> None:
    assert visible_gpu_count({"NVIDIA_VISIBLE_DEVICES": value}, 6) == 6


# --- parse_nvidia_smi_list ---------------------------------------------------

def test_nvidia_smi_list_counts_each_gpu_line() -> None:
    assert parse_nvidia_smi_list(SIX_GPUS_LIST) == 6


def test_mig_instances_are_not_counted_as_gpus() -> None:
    assert parse_nvidia_smi_list(MIG_LIST) == 2


def test_empty_nvidia_smi_output_counts_no_gpu() -> None:
    assert parse_nvidia_smi_list("") == 0
    assert parse_nvidia_smi_list("No devices found.\n") == 0


# --- query_node_gpus ---------------------------------------------------------

def test_node_gpus_come_from_a_working_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_nvidia_smi(tmp_path / "bin", f'[ "$1" = "-L" ] || exit 64\ncat <<"EOF"\n{SIX_GPUS_LIST}EOF\n')
    only_on_path(monkeypatch, tmp_path / "bin")
    assert query_node_gpus() == NodeGpus(6, "nvidia-smi")


def test_a_failing_nvidia_smi_means_no_gpu_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real tool prints this on stdout and exits 9 when the driver is missing.
    write_fake_nvidia_smi(tmp_path / "bin", f"cat <<'EOF'\n{DRIVER_FAILURE}EOF\nexit 9\n")
    only_on_path(monkeypatch, tmp_path / "bin")
    node = query_node_gpus()
    assert (node.count, node.source) == (0, "nvidia-smi")
    assert "NVIDIA-SMI has failed" in node.warning
    assert "assuming no GPU" in node.warning


def test_a_failing_nvidia_smi_without_output_reports_its_exit_status(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_nvidia_smi(tmp_path / "bin", "exit 9\n")
    only_on_path(monkeypatch, tmp_path / "bin")
    node = query_node_gpus()
    assert node.count == 0
    assert "exit status 9" in node.warning


def test_an_nvidia_smi_that_cannot_start_means_no_gpu_with_a_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = tmp_path / "bin" / "nvidia-smi"
    tool.parent.mkdir()
    tool.write_text("#!/nonexistent/interpreter\n")
    tool.chmod(0o755)
    only_on_path(monkeypatch, tmp_path / "bin")
    node = query_node_gpus()
    assert (node.count, node.source) == (0, "nvidia-smi")
    assert "nvidia-smi failed" in node.warning


def test_an_nvidia_smi_that_hangs_is_given_up_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_nvidia_smi(tmp_path / "bin", "exec sleep 30\n")
    only_on_path(monkeypatch, tmp_path / "bin")
    node = query_node_gpus(timeout=0.3)
    assert node.count == 0
    assert "timed out" in node.warning


def test_no_nvidia_smi_on_path_means_no_gpu_without_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert query_node_gpus() == NodeGpus(0, "none")


def test_nvml_is_asked_before_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    nvml = types.SimpleNamespace(
        nvmlInit=lambda: calls.append("init"),
        nvmlDeviceGetCount=lambda: 4,
        nvmlShutdown=lambda: calls.append("shutdown"),
    )
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    write_fake_nvidia_smi(tmp_path / "bin", f"cat <<'EOF'\n{SIX_GPUS_LIST}EOF\n")
    only_on_path(monkeypatch, tmp_path / "bin")
    assert query_node_gpus() == NodeGpus(4, "nvml")
    assert calls == ["init", "shutdown"]


def test_nvml_without_a_driver_falls_back_to_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_driver() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=no_driver))
    write_fake_nvidia_smi(tmp_path / "bin", f"cat <<'EOF'\n{SIX_GPUS_LIST}EOF\n")
    only_on_path(monkeypatch, tmp_path / "bin")
    assert query_node_gpus() == NodeGpus(6, "nvidia-smi")
