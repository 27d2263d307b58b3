"""Where things are, for tests in any tier folder: the repository, the test
support beside this file, and the recorded data the unit tests read."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
DATA = TESTS / "data"
ENGINE_DOUBLE = TESTS / "engine_double.py"
