"""Tensor parallel size: which split of the model across GPUs vLLM accepts.

vLLM needs the tensor parallel size to divide the attention heads, and the KV
heads either to divide by it (tp < kv) or to divide it (tp >= kv). Picking the
largest valid size below the GPU count spares users the ValueError at start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import EntryError


@dataclass(frozen=True)
class HeadCounts:
    attention: int
    kv: int


@dataclass(frozen=True)
class ParallelPlan:
    tensor_parallel_size: int
    reason: str   # one line for the log: how the size was chosen
    pipeline_parallel_size: int = 1   # more than 1 only across nodes (entrypoint.node_group)


def read_head_counts(config: dict) -> HeadCounts | None:
    """Head counts from a model's config.json (multimodal models nest them)."""
    if not isinstance(config, dict):
        return None
    for section in (config, config.get("text_config"), config.get("llm_config")):
        if not isinstance(section, dict):
            continue
        heads = section.get("num_attention_heads")
        if isinstance(heads, int) and heads > 0:
            kv = section.get("num_key_value_heads")
            return HeadCounts(heads, kv if isinstance(kv, int) and kv > 0 else heads)
    return None


def load_head_counts(model_dir: Path) -> HeadCounts | None:
    try:
        return read_head_counts(json.loads((model_dir / "config.json").read_text()))
    except (OSError, ValueError):
        return None


def is_valid_size(size: int, heads: HeadCounts) -> bool:
    if size < 1 or heads.attention % size:
        return False
    if size >= heads.kv:
        return size % heads.kv == 0
    return heads.kv % size == 0


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _describe(gpus: int, heads: HeadCounts | None) -> str:
    text = _plural(gpus, "GPU")
    if heads is not None:
        text += f", {heads.attention} heads ({heads.kv} KV)"
    return text


def choose_tensor_parallel(gpus: int, heads: HeadCounts | None, requested: int | None) -> ParallelPlan:
    """The size to start vLLM with, or an EntryError that says why not."""
    if requested is not None:
        return _check_requested(gpus, heads, requested)
    if gpus == 0:
        return ParallelPlan(1, "no GPU visible: the engine runs on the CPU")
    if heads is None:
        # Head counts of real models are multiples of a power of two far more
        # often than of 3, 5 or 6: 6 GPUs at size 6 would fail on most models.
        size = 1 << (gpus.bit_length() - 1)
        reason = (f"{_plural(gpus, 'GPU')}, head counts unknown (no local config.json): "
                  f"tensor parallel {size}, the largest power of two that fits")
        if size < gpus:
            reason += (f", {_plural(gpus - size, 'GPU')} idle; "
                       f"set --tensor-parallel-size if the model splits {gpus} ways")
        return ParallelPlan(size, reason)
    size = max(s for s in range(1, gpus + 1) if is_valid_size(s, heads))
    reason = f"{_describe(gpus, heads)}: tensor parallel {size}"
    if size < gpus:
        reason += f", {_plural(gpus - size, 'GPU')} idle"
    return ParallelPlan(size, reason)


def _check_requested(gpus: int, heads: HeadCounts | None, size: int) -> ParallelPlan:
    if size < 1:
        raise EntryError(f"--tensor-parallel-size {size} must be 1 or more.")
    if size > max(gpus, 1):
        raise EntryError(
            f"--tensor-parallel-size {size} needs {size} GPUs but {_plural(gpus, 'GPU')} "
            f"{'is' if gpus == 1 else 'are'} visible: lower it or leave it out to choose automatically."
        )
    if heads is not None and not is_valid_size(size, heads):
        valid = [s for s in range(1, max(gpus, 1) + 1) if is_valid_size(s, heads)]
        raise EntryError(
            f"--tensor-parallel-size {size} does not split a model with {heads.attention} "
            f"attention heads and {heads.kv} KV heads: use one of {valid} or leave it out."
        )
    return ParallelPlan(size, f"{_describe(gpus, heads)}: tensor parallel {size} (requested)")


def spread_over_nodes(per_node: ParallelPlan, heads: HeadCounts | None, nodes: int, parallelism: str) -> ParallelPlan:
    """The group's plan from one node's: a pipeline stage per node, or tensor
    parallelism over every GPU of the group, which the heads must allow."""
    tensor = per_node.tensor_parallel_size
    if parallelism == "tensor":
        tensor *= nodes
        if heads is not None and not is_valid_size(tensor, heads):
            raise EntryError(
                f"--node-parallelism tensor splits the model {tensor} ways ({per_node.tensor_parallel_size} "
                f"a node x {nodes} nodes), which a model with {heads.attention} attention heads and {heads.kv} "
                "KV heads does not allow: use --node-parallelism pipeline, or a smaller --tensor-parallel-size."
            )
        return ParallelPlan(tensor, f"{per_node.reason}; x {nodes} nodes: tensor parallel {tensor} "
                                    "across the group (requested)")
    return ParallelPlan(tensor, f"{per_node.reason} (each node); pipeline parallel {nodes}, one stage a node",
                        pipeline_parallel_size=nodes)
