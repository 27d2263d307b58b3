import pytest

from harness import Entry


@pytest.fixture
def entry_factory(tmp_path):
    """Make llm-entry runs that are always cleaned up, whatever the test did."""
    made: list[Entry] = []

    def make(**kwargs) -> Entry:
        folder = tmp_path / f"run{len(made)}"
        folder.mkdir()
        entry = Entry(folder, **kwargs)
        made.append(entry)
        return entry

    yield make
    for entry in made:
        entry.kill_everything()
