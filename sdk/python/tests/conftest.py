"""The SDK's tests run against a real warren: WARREN_URL and
WARREN_API_KEY name it (the e2e suite starts one and runs these), and
WARREN_TEST_RUNTIMES the runtimes to cover (default gvisor,runc)."""

import os

import pytest

from warren import Warren


def pytest_generate_tests(metafunc):
    if "runtime" in metafunc.fixturenames:
        runtimes = os.environ.get("WARREN_TEST_RUNTIMES", "gvisor,runc").split(",")
        metafunc.parametrize("runtime", runtimes)


@pytest.fixture(scope="session")
def warren():
    if not os.environ.get("WARREN_URL"):
        pytest.fail("WARREN_URL is not set: these tests need a running warren (make test runs them)")
    with Warren() as w:
        yield w


@pytest.fixture
def sandbox(warren, runtime):
    with warren.create_sandbox(image="busybox", runtime=runtime, metadata={"suite": "sdk-python"}) as sb:
        yield sb
