"""Data parallelism with `jax.jit` over a one-axis device mesh (no pmap, no shard_map).

    mesh = make_mesh()                                  # every device of every process
    state = replicate(state, mesh)                      # P(): one full copy per device
    batch = shard_batch(host_batch, mesh)               # P("data"): rows split over devices
    for batch in prefetch_to_mesh(loader, mesh): ...    # the same, copies issued a step ahead
    state, metrics = jax.jit(step, out_shardings=replicated(mesh),
                             compiler_options=compiler_options(mesh))(state, batch, rng)

The step is written for the GLOBAL batch; XLA partitions it and inserts the gradient all-reduce.
The same code runs on 1 device, on N fake CPU devices and on a multi-host TPU pod.

BatchNorm statistics (train-mode layers) are computed over the **global** batch: under SPMD `jit` a
mean over the batch axis is a mean over every device's rows (synchronised BN). The official PyTorch
code trains with DistributedDataParallel without SyncBN, i.e. per-GPU statistics over 16 videos
(Sth-Sth stage 1); with 64 videos on 4 GPUs the two differ slightly. We keep the global statistics:
they do not depend on the device count, so runs are reproducible across topologies.

Multi-host: call `jax.distributed.initialize` before anything touches a device (main.py does), let
each process load only its slice of every global batch (`process_index`/`process_count` of the
loader) and assemble global arrays with `jax.make_array_from_process_local_data`.

XLA options: every computation the library jits passes `compiler_options(mesh)`. On CPU that turns
off XLA:CPU's YNNPACK library fusions: at these
networks' shapes YNNPACK's convolution weight gradients are 2-3x slower than XLA's own
convolution code (CPU time, 3x3 / 7x7 ResNet-50 layers), and measured on the full Sth-Sth model in
one process (benchmarks/xla_cpu_options.py, benchmarks/inference.py, README "Speed") the
inference forward pass runs 1.5-2.4x and the fused stage-2 step 2x faster without it, the stage-1
step the same within noise; same values to float rounding. Other backends get no option.
"""

import collections
import math
from typing import Any, Iterable, Iterator, Mapping

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
# Host-only batch entries (int64 row ids for logs); never sent to the devices.
HOST_ONLY_KEYS = ("index",)


CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}   # "": no YNNPACK fusions


def compiler_options(mesh: jax.sharding.Mesh | None = None) -> dict[str, str] | None:
    """The XLA compiler options of the library's jitted computations on `mesh` (default: the
    default backend): `CPU_COMPILER_OPTIONS` on CPU, None elsewhere (see the module docstring)."""
    platform = mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()
    return dict(CPU_COMPILER_OPTIONS) if platform == "cpu" else None


def make_mesh(devices: list | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh named "data" over `devices` (default: all global devices).

    The axis type is Auto (not the jax>=0.9 default Explicit) so jitted steps partition by
    propagation and eager host-side ops on replicated arrays keep working.
    """
    devices = list(jax.devices() if devices is None else devices)
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                         devices=devices)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Sharding of the train state: a full copy on every device."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Sharding of batch arrays: the leading (batch) axis split over the "data" axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: jax.sharding.Mesh, what: str) -> None:
    """Raises a clear error when the global batch does not split evenly over devices and hosts."""
    devices = mesh.devices.size
    if global_batch_size % devices:
        raise ValueError(f"{what}: global batch size {global_batch_size} is not divisible by the "
                         f"{devices} devices of the mesh")
    if global_batch_size % jax.process_count():
        raise ValueError(f"{what}: global batch size {global_batch_size} is not divisible by the "
                         f"{jax.process_count()} processes")


def round_batch_size(batch_size: int, mesh: jax.sharding.Mesh) -> int:
    """`batch_size` rounded down to a multiple of the device and process counts (at least one
    such multiple): the size of evaluation batches, which may be chosen freely."""
    unit = math.lcm(int(mesh.devices.size), jax.process_count())
    return max(unit, int(batch_size) // unit * unit)


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Places a pytree (numpy or jax arrays, identical on every process) replicated on `mesh`.

    Values are fetched to the host first and every device gets its own fresh buffer, so donating the
    result never deletes arrays the caller still holds (an aliasing trap of `jax.device_put`).
    """
    sharding = replicated(mesh)

    def put(x):
        host = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def is_replicated(tree: Any, mesh: jax.sharding.Mesh) -> bool:
    """True when every leaf is a jax.Array already replicated over `mesh`."""
    want = replicated(mesh)
    return all(isinstance(x, jax.Array) and x.sharding.is_equivalent_to(want, x.ndim)
               for x in jax.tree.leaves(tree))


def shard_batch(batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """This process's rows of a global batch → global arrays sharded `P("data")`.

    Args:
      batch: `{key: [B_local, ...]}` numpy arrays (B_local = global batch / process count).
      mesh: the data mesh.

    Returns:
      `{key: [B_global, ...]}` jax arrays; host-only keys (`index`) are dropped.
    """
    sharding = batch_sharding(mesh)
    out = {}
    for key, value in batch.items():
        if key in HOST_ONLY_KEYS:
            continue
        value = np.asarray(value)
        if value.dtype == np.int64:
            value = value.astype(np.int32)   # x64 is off; make the narrowing explicit
        out[key] = jax.make_array_from_process_local_data(sharding, value)
    return out


def prefetch_to_mesh(batches: Iterable[Mapping[str, np.ndarray]], mesh: jax.sharding.Mesh,
                     size: int = 2) -> Iterator[dict[str, jax.Array]]:
    """Yields `shard_batch(b, mesh)` for each host batch, keeping `size` batches in flight.

    The host → device copies (asynchronous in JAX) of the next `size - 1` batches are issued
    before the current one is handed out, so they overlap the step running on the device and the
    loader's work on the next batch, instead of sitting between two steps. Same batches in the
    same order as without prefetching; `size=1` is no look-ahead.
    """
    if size < 1:
        raise ValueError(f"prefetch size must be >= 1, got {size}")
    queue = collections.deque()
    iterator = iter(batches)
    for host_batch in iterator:
        queue.append(shard_batch(host_batch, mesh))
        if len(queue) >= size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def host_gather(x: jax.Array) -> np.ndarray:
    """A global (possibly multi-host) array → the full numpy array on every process."""
    if jax.process_count() == 1:
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def wait_for_all_processes(name: str, timeout_s: float = 1800.0) -> None:
    """Blocks until every process reaches the barrier `name` (no-op with one process).

    Uses the `jax.distributed` coordination service, not a device collective: processes can reach
    it minutes apart (one still compiling or restoring) without tripping the CPU collectives'
    30-second connection timeout that the first cross-process collective (e.g. orbax's directory
    sync) would otherwise hit.
    """
    if jax.process_count() == 1:
        return
    from jax._src import distributed   # the coordination client has no public accessor
    client = distributed.global_state.client
    if client is None:
        return
    client.wait_at_barrier(f"adafocus_jax:{name}", int(timeout_s * 1000))
