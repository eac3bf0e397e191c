"""Collects run_diff.py (its name does not match pytest's test_*.py pattern)."""
import pytest


def pytest_collect_file(file_path, parent):
    if file_path.name == "run_diff.py" and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
