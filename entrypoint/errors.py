"""Exit codes and the one error type that reaches the user.

Every user-facing failure is raised as `EntryError(message, exit_code)` and
turned into one line on stderr and an exit code in exactly one place
(`cli.main`), so the codes below are the whole contract.
"""

EXIT_OK = 0                  # requested shutdown (SIGTERM/SIGINT) completed
EXIT_BAD_CONFIG = 2          # bad input: nothing was started
EXIT_ENGINE_FAILED = 3       # the engine exited (vLLM exits 0 even when its core died)
EXIT_PROXY_FAILED = 4        # the proxy kept exiting after restarts
EXIT_STARTUP_TIMEOUT = 5     # not ready within --startup-timeout
EXIT_HUNG = 6                # a process stopped answering its checks for --hang-timeout
EXIT_SUPERVISOR_FAILED = 7   # supervisord itself died or stopped answering
EXIT_INTERNAL_ERROR = 8      # a bug in llm-entry's monitor: everything was stopped all the same


class EntryError(Exception):
    """A failure the user can act on: one sentence, one exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_CONFIG):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
