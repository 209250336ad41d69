"""Test-wide setup: 8 fake CPU devices and a persistent XLA compilation cache.

Both must be configured before JAX initialises its backends, which is why they live here.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402

_CACHE_DIR = os.environ.get(
    "ADAFOCUS_JAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "adafocus_jax", "xla"))
jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
