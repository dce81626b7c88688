"""The suite's own scheduling (conftest.py): files sharing a session fixture on one worker, the slow files first."""

from collections import OrderedDict
from pathlib import Path

from tests import conftest

TESTS = Path(__file__).parent


def test_the_listed_files_exist():
    """A renamed test file would silently lose its place."""
    for name in [*conftest.SLOW_FILES, *conftest.SAME_WORKER, *conftest.SAME_WORKER.values()]:
        assert (TESTS / name).is_file(), name


def test_files_sharing_a_fixture_are_one_unit_and_slow_files_go_first():
    cls = conftest.slow_files_first()
    scheduler = cls.__new__(cls)  # the methods under test use no state but the queue
    assert scheduler._split_scope("tests/test_backbone_exports.py::test_a[x]") == "tests/test_deploy.py"
    assert scheduler._split_scope("tests/test_cli.py::test_b") == "tests/test_cli.py"
    scheduler.workqueue = OrderedDict((f"tests/{name}", {}) for name in
                                      ("test_api.py", "test_demo.py", "test_cli.py", "test_deploy.py"))
    scheduler.sort_queue()
    assert list(scheduler.workqueue) == ["tests/test_deploy.py", "tests/test_demo.py", "tests/test_api.py",
                                         "tests/test_cli.py"]
