"""The demo model builder: files, recipe, determinism, tokenizer, atomic build, cache."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from entrypoint.demo import model as demo_model
from entrypoint.demo import recipe as demo_recipe
from entrypoint.demo.model import (
    DEMO_ENGINE_ARGS,
    DEMO_ENGINE_ENV,
    DEMO_MODEL_NAME,
    DemoModelError,
    build_demo_model,
    demo_model_dir,
    ensure_demo_model,
)
from entrypoint.errors import EntryError

from repo_paths import REPO

FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
}
# head sizes the CPU attention of vLLM serves (others die on the first request)
CPU_HEAD_DIMS = {32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512}


def folder_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("demo") / "model")


@pytest.fixture(scope="module")
def tokenizer(model):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(model))


def test_build_writes_every_file_a_model_folder_needs(model):
    assert {p.name for p in model.iterdir()} == FILES


def test_model_is_a_few_megabytes(model):
    size = sum(p.stat().st_size for p in model.iterdir())
    assert 1_000_000 < size < 10_000_000


def test_config_is_a_small_llama_the_cpu_engine_serves(model):
    config = json.loads((model / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["model_type"] == "llama"
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    assert config["head_dim"] == head_dim
    assert head_dim in CPU_HEAD_DIMS
    assert config["num_attention_heads"] % config["num_key_value_heads"] == 0
    assert config["max_position_embeddings"] == 2048
    assert 256 < config["vocab_size"] <= 1000


def test_head_counts_constants_match_the_written_config(model):
    config = json.loads((model / "config.json").read_text())
    assert config["num_attention_heads"] == demo_recipe.NUM_HEADS
    assert config["num_key_value_heads"] == demo_recipe.NUM_KV_HEADS


def test_vocab_size_matches_the_tokenizer_and_the_embeddings(model, tokenizer):
    from safetensors import safe_open

    config = json.loads((model / "config.json").read_text())
    assert len(tokenizer) == config["vocab_size"]
    with safe_open(str(model / "model.safetensors"), framework="numpy") as weights:
        assert weights.get_slice("model.embed_tokens.weight").get_shape() == [
            config["vocab_size"],
            config["hidden_size"],
        ]
        assert weights.get_slice("lm_head.weight").get_shape()[0] == config["vocab_size"]


def test_special_token_ids_agree_across_files(model, tokenizer):
    config = json.loads((model / "config.json").read_text())
    generation = json.loads((model / "generation_config.json").read_text())
    assert tokenizer.bos_token_id == config["bos_token_id"] == generation["bos_token_id"]
    assert tokenizer.eos_token_id == config["eos_token_id"] == generation["eos_token_id"]


def test_same_seed_gives_the_same_bytes(model, tmp_path):
    again = build_demo_model(tmp_path / "again")
    assert folder_digest(again) == folder_digest(model)


def test_another_seed_changes_only_the_weights(model, tmp_path):
    other = folder_digest(build_demo_model(tmp_path / "other", seed=1))
    same = folder_digest(model)
    assert other["model.safetensors"] != same["model.safetensors"]
    assert {k: v for k, v in other.items() if k != "model.safetensors"} == {
        k: v for k, v in same.items() if k != "model.safetensors"
    }


def test_command_line_build_in_another_process_gives_the_same_bytes(model, tmp_path):
    target = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, "-m", "entrypoint.demo.model", str(target)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(target)
    assert folder_digest(target) == folder_digest(model)


def test_tokenizer_round_trips_any_text(tokenizer):
    text = "Hello, wörld! 🙂 llm-entry\tserves\n  vLLM 0.32 — ok?"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_chat_template_renders_messages_and_generation_prompt(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<s><|system|>\nBe brief.</s>\n<|user|>\nHi there</s>\n<|assistant|>\n"
    )
    without = tokenizer.apply_chat_template(messages, tokenize=False)
    assert without == "<s><|system|>\nBe brief.</s>\n<|user|>\nHi there</s>\n"


def test_role_markers_are_single_tokens(tokenizer):
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_tokens_to_ids("<|assistant|>") in ids
    assert ids[0] == tokenizer.bos_token_id


def test_weights_load_into_transformers_llama_with_no_missing_keys(model):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    loaded, info = transformers.AutoModelForCausalLM.from_pretrained(
        str(model), output_loading_info=True
    )
    assert type(loaded).__name__ == "LlamaForCausalLM"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]


def test_build_refuses_a_folder_that_holds_something(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(DemoModelError, match="already exists"):
        build_demo_model(target)
    assert [p.name for p in target.iterdir()] == ["notes.txt"]


def test_build_fills_an_empty_folder(tmp_path):
    target = tmp_path / "empty"
    target.mkdir()
    assert {p.name for p in build_demo_model(target).iterdir()} == FILES


def test_build_leaves_no_staging_folder_behind(tmp_path):
    build_demo_model(tmp_path / "model")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_demo_model_error_is_the_entry_error_users_see(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(EntryError):
        build_demo_model(tmp_path / "file")


def test_ensure_builds_once_then_reuses(tmp_path):
    first = ensure_demo_model(tmp_path)
    assert first == demo_model_dir(tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert ensure_demo_model(tmp_path) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]


def test_cache_folder_name_carries_the_recipe_version(tmp_path):
    assert demo_model_dir(tmp_path).parent == tmp_path
    assert f"v{demo_model.RECIPE_VERSION}" in demo_model_dir(tmp_path).name


def test_command_line_reports_an_occupied_folder_and_exits_1(tmp_path, capsys):
    (tmp_path / "x").write_text("x")
    assert demo_model.main([str(tmp_path)]) == 1
    assert "already exists" in capsys.readouterr().err


def test_module_imports_without_the_model_libraries():
    code = (
        "import sys, entrypoint.demo.model, entrypoint.demo.recipe; "
        "print(sorted(m for m in ('numpy', 'tokenizers', 'safetensors', 'torch', 'transformers') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_engine_settings_are_plain_data():
    assert DEMO_MODEL_NAME == "demo"
    assert all(isinstance(a, str) for a in DEMO_ENGINE_ARGS)
    assert "--dtype" in DEMO_ENGINE_ARGS
    assert DEMO_ENGINE_ARGS[DEMO_ENGINE_ARGS.index("--dtype") + 1] == "float32"
    assert DEMO_ENGINE_ENV == {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}


def test_vllm_parser_accepts_the_demo_engine_args(model):
    pytest.importorskip("vllm")
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm-check"))
    args = parser.parse_args(
        ["--model", str(model), "--served-model-name", DEMO_MODEL_NAME, *DEMO_ENGINE_ARGS]
    )
    validate_parsed_serve_args(args)
    assert args.dtype == "float32"


def test_unwritable_parent_is_reported_as_a_demo_model_error(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(DemoModelError, match="cannot write the demo model"):
        build_demo_model(blocker / "model")
