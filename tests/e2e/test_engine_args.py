"""The arguments llm-entry gives vLLM are ones vLLM accepts: parsed by the
installed vLLM's own argument parser (the same parser in the CUDA and the CPU
build), so a removed or renamed flag fails here, not in a deployment."""

import pytest

from entrypoint import render
from entrypoint.demo import model as demo_model
from entrypoint.gpus import NodeGpus
from entrypoint.shutdown_plan import shutdown_plan

from fakes import make_config, model_folder

KEY = "sk-test-" + "a1b2c3d4e5f60718293a4b5c"


@pytest.fixture(scope="module")
def vllm_parser():
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm-check"))

    def parse(argv):
        args = parser.parse_args(argv)
        validate_parsed_serve_args(args)
        return args

    return parse


def engine_args(config) -> list[str]:
    command = render.engine_command(config)
    return command[len(config.engine_cmd):]


def test_gpu_engine_arguments_parse(vllm_parser, tmp_path):
    config = make_config(model_folder(tmp_path, "Llama-3-70B", heads=64), node_gpus=8, master_key=KEY,
                         max_model_len=8192, gpu_memory_utilization=0.9, engine_args=("--enable-prefix-caching",))
    args = vllm_parser(engine_args(config))
    assert args.tensor_parallel_size == 8
    assert args.port == config.engine_port and args.host == "127.0.0.1"
    assert args.served_model_name == ["Llama-3-70B"]
    assert args.max_model_len == 8192 and args.gpu_memory_utilization == 0.9
    assert args.shutdown_timeout == shutdown_plan(config.timing).engine_drain
    assert args.disable_uvicorn_access_log is True
    assert args.middleware == ["entrypoint.inside.engine_guard.RequireInternalKey"]


def test_demo_engine_arguments_parse_and_make_a_cpu_engine_config(vllm_parser, tmp_path):
    config = make_config("demo", node_gpus=NodeGpus(0, "none"), master_key=KEY, cache_dir=tmp_path)
    demo_model.ensure_demo_model(tmp_path)
    args = vllm_parser(engine_args(config))
    assert args.dtype == "float32" and args.enforce_eager
    # One step deeper, still starting nothing: vLLM reads the model's config
    # and checks the parallel layout against its heads.
    from vllm.engine.arg_utils import AsyncEngineArgs
    engine_config = AsyncEngineArgs.from_cli_args(args).create_engine_config()
    assert engine_config.parallel_config.tensor_parallel_size == 1


def test_a_removed_flag_would_be_caught(vllm_parser):
    with pytest.raises(SystemExit):
        vllm_parser(["--model", "x", "--disable-log-requests"])
