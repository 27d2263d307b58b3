"""The recipe of the demo model: what its files hold, byte for byte.

This module owns the architecture sizes, the special tokens and the chat
template, the corpus the byte-level BPE tokenizer is trained on, the seeded
random weights, the config files, and writing all of them into a folder.
Where that folder lives, how it is published atomically and cached is
demo_model's business.

Any change to the bytes written here needs a bump of
demo_model.RECIPE_VERSION, or caches keep serving the old model.

numpy, safetensors and tokenizers are imported inside the functions: the rest
of the package must import without them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def import_builders() -> tuple[Any, Any, Any]:
    """numpy, safetensors' save_file and tokenizers, for write_model_files.

    A missing library raises ImportError as it is: the caller owns the
    message users see.
    """
    import numpy as np
    import tokenizers
    from safetensors.numpy import save_file

    return np, save_file, tokenizers


def write_model_files(folder: Path, seed: int, builders: tuple[Any, Any, Any]) -> None:
    """Write tokenizer, weights and configs into folder; the bytes depend only on seed."""
    np, save_file, tokenizers = builders
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
