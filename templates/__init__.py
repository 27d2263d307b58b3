"""Text templates for the files llm-entry renders (see entrypoint.render)."""
