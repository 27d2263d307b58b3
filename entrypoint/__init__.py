"""llm-entry: serve a model with vLLM behind a LiteLLM proxy that requires a key."""

__version__ = "0.1.0"
