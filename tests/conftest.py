"""Test-wide setup: 8 fake CPU devices and a persistent XLA compilation cache.

Both must be configured before JAX initialises its backends, which is why they live here.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_CACHE_DIR = os.environ.get(
    "ADAFOCUS_JAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "adafocus_jax", "xla"))
# Through the environment, so that the processes the tests start (main.py runs, killed and resumed
# children, the notebooks' Jupyter kernels) share the cache: a resumed run then reuses what the
# killed one compiled instead of compiling the same step again.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE_DIR)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)



def _under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _fail_skip(report, what: str) -> None:
    """Under CI (`CI=true`) a skip is a failure: the parity, converter and GRU tests skip without
    torch (`pytest.importorskip`), which must never pass silently there."""
    if _under_ci() and report.outcome == "skipped" and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = (f"{what} was skipped under CI=true ({report.longrepr}); install the "
                           "test extra: pip install -e '.[test]' (it includes torch)")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_skip(outcome.get_result(), collector.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skip(outcome.get_result(), item.nodeid)
