"""Unit tests of the tensor parallel choice: the largest size below the GPU
count that divides the attention heads and, with the KV heads, divides them
or is a multiple of them, as vLLM demands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from entrypoint.errors import EXIT_BAD_CONFIG, EntryError
from entrypoint.parallel import (
    HeadCounts,
    choose_tensor_parallel,
    is_valid_size,
    load_head_counts,
    read_head_counts,
)

LLAMA_8B = HeadCounts(32, 8)      # Llama 3 8B
QWEN_05B = HeadCounts(14, 2)      # Qwen2 0.5B
LLAMA_13B_GQA = HeadCounts(40, 8)


def vllm_accepts(size: int, heads: HeadCounts) -> bool:
    """vLLM's own rule, written out independently: heads split evenly, and KV
    heads are either split (tp < kv) or replicated whole (tp >= kv)."""
    if heads.attention % size != 0:
        return False
    if size >= heads.kv:
        return size % heads.kv == 0
    return heads.kv % size == 0


@pytest.mark.parametrize("gpus,expected", [(1, 1), (2, 2), (3, 2), (4, 4), (6, 4), (8, 8)])
def test_llama_with_32_heads_and_8_kv_heads_uses_the_largest_valid_size(gpus: int, expected: int) -> None:
    assert choose_tensor_parallel(gpus, LLAMA_8B, None).tensor_parallel_size == expected


def test_six_gpus_for_32_heads_use_four_and_say_two_are_idle() -> None:
    plan = choose_tensor_parallel(6, LLAMA_8B, None)
    assert plan.tensor_parallel_size == 4
    assert plan.reason == "6 GPUs, 32 heads (8 KV): tensor parallel 4, 2 GPUs idle"


def test_a_reason_with_every_gpu_used_mentions_no_idle_gpu() -> None:
    assert choose_tensor_parallel(8, LLAMA_8B, None).reason == "8 GPUs, 32 heads (8 KV): tensor parallel 8"


def test_one_idle_gpu_is_named_in_the_singular() -> None:
    assert choose_tensor_parallel(3, LLAMA_8B, None).reason.endswith(", 1 GPU idle")


@pytest.mark.parametrize("gpus,expected", [(1, 1), (2, 2), (3, 2), (4, 2), (6, 2), (7, 2), (8, 2)])
def test_14_heads_with_2_kv_heads_use_two_gpus(gpus: int, expected: int) -> None:
    # 7 divides 14 heads, but 7 KV-head replicas do not divide evenly from 2.
    assert choose_tensor_parallel(gpus, QWEN_05B, None).tensor_parallel_size == expected


def test_14_heads_with_2_kv_heads_use_all_fourteen_gpus_when_there_are_fourteen() -> None:
    assert choose_tensor_parallel(14, QWEN_05B, None).tensor_parallel_size == 14


def test_more_gpus_than_kv_heads_is_valid_when_the_size_is_a_multiple_of_them() -> None:
    # The example in docs/options.md: 4 GPUs for 2 KV heads copies each KV head to two GPUs.
    assert choose_tensor_parallel(4, HeadCounts(32, 2), None).tensor_parallel_size == 4
    assert choose_tensor_parallel(4, HeadCounts(32, 2), 4).tensor_parallel_size == 4
    assert choose_tensor_parallel(6, HeadCounts(32, 8), None).tensor_parallel_size == 4


@pytest.mark.parametrize("gpus,expected", [(1, 1), (2, 2), (3, 2), (4, 4), (5, 4), (6, 4), (7, 4), (8, 8)])
def test_40_heads_with_8_kv_heads_skip_five(gpus: int, expected: int) -> None:
    # 5 divides 40 heads but not 8 KV heads.
    assert choose_tensor_parallel(gpus, LLAMA_13B_GQA, None).tensor_parallel_size == expected


@pytest.mark.parametrize("heads", [LLAMA_8B, QWEN_05B, LLAMA_13B_GQA, HeadCounts(64, 8), HeadCounts(28, 4),
                                   HeadCounts(12, 12), HeadCounts(96, 96), HeadCounts(7, 1)])
@pytest.mark.parametrize("gpus", range(1, 17))
def test_the_chosen_size_is_the_largest_vllm_accepts(heads: HeadCounts, gpus: int) -> None:
    expected = max(s for s in range(1, gpus + 1) if vllm_accepts(s, heads))
    assert choose_tensor_parallel(gpus, heads, None).tensor_parallel_size == expected


@pytest.mark.parametrize("size", range(0, 20))
def test_is_valid_size_agrees_with_vllm(size: int) -> None:
    for heads in (LLAMA_8B, QWEN_05B, LLAMA_13B_GQA):
        assert is_valid_size(size, heads) == (size >= 1 and vllm_accepts(size, heads))


def test_no_gpu_runs_on_the_cpu_with_size_one() -> None:
    plan = choose_tensor_parallel(0, LLAMA_8B, None)
    assert plan.tensor_parallel_size == 1
    assert "CPU" in plan.reason


def test_no_gpu_and_unknown_heads_still_runs_on_the_cpu_with_size_one() -> None:
    assert choose_tensor_parallel(0, None, None).tensor_parallel_size == 1


@pytest.mark.parametrize("gpus, size", [(1, 1), (2, 2), (3, 2), (4, 4), (6, 4), (7, 4), (8, 8), (12, 8)])
def test_unknown_head_counts_take_the_largest_power_of_two_that_fits(gpus: int, size: int) -> None:
    assert choose_tensor_parallel(gpus, None, None).tensor_parallel_size == size


def test_unknown_head_counts_say_which_gpus_stay_idle_and_how_to_use_them() -> None:
    plan = choose_tensor_parallel(6, None, None)
    assert plan.reason == (
        "6 GPUs, head counts unknown (no local config.json): tensor parallel 4, the largest power "
        "of two that fits, 2 GPUs idle; set --tensor-parallel-size if the model splits 6 ways")
    assert choose_tensor_parallel(8, None, None).reason.endswith("the largest power of two that fits")


# --- sizes the user asked for ------------------------------------------------

def test_a_valid_requested_size_is_used_as_is() -> None:
    plan = choose_tensor_parallel(8, LLAMA_8B, 2)
    assert plan.tensor_parallel_size == 2
    assert plan.reason.endswith("tensor parallel 2 (requested)")


def test_a_requested_size_that_does_not_split_the_heads_lists_the_valid_sizes() -> None:
    with pytest.raises(EntryError) as raised:
        choose_tensor_parallel(8, LLAMA_8B, 6)
    assert raised.value.exit_code == EXIT_BAD_CONFIG
    assert raised.value.message == (
        "--tensor-parallel-size 6 does not split a model with 32 attention heads and 8 KV heads: "
        "use one of [1, 2, 4, 8] or leave it out."
    )


def test_a_requested_size_that_does_not_fit_the_kv_heads_is_refused() -> None:
    with pytest.raises(EntryError, match=r"use one of \[1, 2, 4, 8\]"):
        choose_tensor_parallel(8, LLAMA_13B_GQA, 5)


def test_a_requested_size_above_the_gpu_count_is_refused() -> None:
    with pytest.raises(EntryError) as raised:
        choose_tensor_parallel(4, LLAMA_8B, 8)
    assert raised.value.exit_code == EXIT_BAD_CONFIG
    assert "needs 8 GPUs but 4 GPUs are visible" in raised.value.message


def test_a_requested_size_above_one_without_gpus_is_refused() -> None:
    with pytest.raises(EntryError, match="needs 2 GPUs but 0 GPUs are visible"):
        choose_tensor_parallel(0, LLAMA_8B, 2)


def test_requesting_size_one_without_gpus_is_accepted() -> None:
    assert choose_tensor_parallel(0, LLAMA_8B, 1).tensor_parallel_size == 1


@pytest.mark.parametrize("size", [0, -2])
def test_a_requested_size_below_one_is_refused(size: int) -> None:
    with pytest.raises(EntryError, match="must be 1 or more"):
        choose_tensor_parallel(8, LLAMA_8B, size)


def test_a_requested_size_with_unknown_heads_is_trusted() -> None:
    assert choose_tensor_parallel(8, None, 3).tensor_parallel_size == 3


# --- head counts from config.json --------------------------------------------

def test_head_counts_come_from_the_top_level() -> None:
    assert read_head_counts({"num_attention_heads": 32, "num_key_value_heads": 8}) == LLAMA_8B


def test_multimodal_models_nest_head_counts_in_text_config() -> None:
    config = {"model_type": "llava", "vision_config": {"num_attention_heads": 16},
              "text_config": {"num_attention_heads": 32, "num_key_value_heads": 8}}
    assert read_head_counts(config) == LLAMA_8B


def test_internvl_style_models_nest_head_counts_in_llm_config() -> None:
    assert read_head_counts({"llm_config": {"num_attention_heads": 14, "num_key_value_heads": 2}}) == QWEN_05B


def test_missing_kv_heads_mean_one_kv_head_per_attention_head() -> None:
    assert read_head_counts({"num_attention_heads": 12}) == HeadCounts(12, 12)
    assert read_head_counts({"num_attention_heads": 12, "num_key_value_heads": None}) == HeadCounts(12, 12)


@pytest.mark.parametrize("config", [{}, {"num_attention_heads": "32"}, {"num_attention_heads": 0},
                                    {"text_config": None}, {"hidden_size": 4096}])
def test_head_counts_are_unknown_without_a_positive_integer(config: dict) -> None:
    assert read_head_counts(config) is None


def test_head_counts_load_from_the_model_folder(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"num_attention_heads": 40, "num_key_value_heads": 8}))
    assert load_head_counts(tmp_path) == LLAMA_13B_GQA


def test_an_unreadable_config_json_means_unknown_head_counts(tmp_path: Path) -> None:
    assert load_head_counts(tmp_path) is None
    (tmp_path / "config.json").write_text("{not json")
    assert load_head_counts(tmp_path) is None


@pytest.mark.parametrize("text", ["[]", "null", '{"text_config": "llama"}'])
def test_a_config_json_that_is_not_an_object_means_unknown_head_counts(tmp_path: Path, text: str) -> None:
    (tmp_path / "config.json").write_text(text)
    assert load_head_counts(tmp_path) is None
