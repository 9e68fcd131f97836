"""Data parallelism with JAX's own sharding: a 1-D device mesh over the data axis.

* :func:`data_mesh`: the mesh of ``devices`` (``None``: every device; an int ``N``: the
  first ``N``), with one axis, :data:`DATA`; ``None`` when that is one device, so a
  one-device run takes exactly the code path (and the cost) it had before sharding.
* :func:`along` / :func:`replicated`: ``NamedSharding``\\ s that split one axis of an
  array over the mesh, or keep a whole copy on every device.
* :func:`put`: a host array onto the mesh with a sharding (``jax.make_array_from_callback``:
  each process fills only the shards of its own devices, so it works across hosts).
* :func:`to_host`: a (possibly multi-process) ``jax.Array`` back as NumPy.
* :func:`initialize_distributed`: ``jax.distributed.initialize()`` when the environment says
  there are several processes; :func:`is_writer`: only process 0 writes files.

Parameters and optimiser state are replicated; the batch (and the per-training-case state
a method declares with ``Kernel.data_axes``) is split along :data:`DATA`, and XLA inserts
the gradient all-reduce. Results do not depend on the number of devices beyond float32
rounding (the order of the batch sums changes): see ``docs/multi_device.md``.
"""
from __future__ import annotations

import os

import numpy as np

DATA = "data"  # the mesh's one axis name

# The environment of a multi-process launch of our own (any launcher):
COORDINATOR_ENV = "SBN_PPL_COORDINATOR"  # host:port of process 0
NUM_PROCESSES_ENV = "SBN_PPL_NUM_PROCESSES"
PROCESS_ID_ENV = "SBN_PPL_PROCESS_ID"
LOCAL_DEVICES_ENV = "SBN_PPL_LOCAL_DEVICE_IDS"  # optional: comma-separated local device ids of this process

_initialized = False


def check_devices(devices) -> None:
    """``devices`` is ``None`` or a positive integer, else a one-line ``ValueError``."""
    if devices is None:
        return
    if isinstance(devices, bool) or not isinstance(devices, (int, np.integer)) or devices < 1:
        raise ValueError(f"devices must be a positive integer (or None: every device), got {devices!r}")


def several_processes() -> bool:
    """Whether the environment describes a launch of several processes: ours
    (``SBN_PPL_NUM_PROCESSES`` > 1), an ``srun`` step of several tasks (``SLURM_STEP_NUM_TASKS``
    > 1; a batch script itself is one process, whatever ``SLURM_NTASKS`` says), or Open MPI's
    ``mpirun`` (``OMPI_COMM_WORLD_SIZE`` > 1)."""
    for name in (NUM_PROCESSES_ENV, "SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE"):
        value = os.environ.get(name)
        if value and value.strip().isdigit() and int(value) > 1:
            return True
    return False


def initialize_distributed() -> bool:
    """``jax.distributed.initialize`` once, when the environment says there are several
    processes (see :func:`several_processes`); ``True`` when this is a multi-process run.

    With ``SBN_PPL_COORDINATOR``, ``SBN_PPL_NUM_PROCESSES`` and ``SBN_PPL_PROCESS_ID`` set,
    those are passed on; otherwise JAX detects the cluster itself (Slurm, Open MPI, ...).
    Must run before JAX's first computation in the process (the runner and the scorers
    call it first).
    """
    global _initialized
    if _initialized:
        return True
    if not several_processes():
        return False
    import jax

    if jax.distributed.is_initialized():
        _initialized = True
        return True
    if os.environ.get(NUM_PROCESSES_ENV):
        coordinator = os.environ.get(COORDINATOR_ENV)
        process_id = os.environ.get(PROCESS_ID_ENV)
        if not coordinator or process_id is None:
            raise ValueError(f"{NUM_PROCESSES_ENV} is set: also set {COORDINATOR_ENV} (host:port of process 0) "
                             f"and {PROCESS_ID_ENV} (0 .. {NUM_PROCESSES_ENV} - 1)")
        local = os.environ.get(LOCAL_DEVICES_ENV)
        jax.distributed.initialize(coordinator, int(os.environ[NUM_PROCESSES_ENV]), int(process_id),
                                   local_device_ids=[int(i) for i in local.split(",")] if local else None)
    else:
        jax.distributed.initialize()  # Slurm, Open MPI, ...: JAX reads the cluster's own environment
    _initialized = True
    return True


def process_index() -> int:
    """This process's index: 0 in a single-process run; in a multi-process one (the
    environment says so) JAX's, after :func:`initialize_distributed`."""
    if not initialize_distributed():
        return 0
    import jax

    return int(jax.process_index())


def is_writer() -> bool:
    """Only process 0 writes files (run folders, results)."""
    return process_index() == 0


def device_list(devices=None) -> list:
    """The devices of a run: every device (``None``) or the first ``devices`` of them."""
    check_devices(devices)
    initialize_distributed()
    import jax

    available = jax.devices()
    if devices is None:
        return list(available)
    if devices > len(available):
        raise ValueError(f"asked for {devices} devices but JAX sees {len(available)} ({available[0].platform})")
    chosen = list(available[:devices])
    if jax.process_count() > 1 and devices != len(available):
        raise ValueError(f"a multi-process run uses every process's devices: devices must be None or "
                         f"{len(available)}, got {devices}")
    return chosen


def data_mesh(devices=None):
    """A 1-D ``jax.sharding.Mesh`` with axis :data:`DATA` over the chosen devices, or
    ``None`` for a single device (then nothing is sharded: the code path of one device)."""
    chosen = device_list(devices)
    if len(chosen) == 1:
        return None
    from jax.sharding import Mesh

    return Mesh(np.array(chosen), (DATA,))


def mesh_size(mesh) -> int:
    return 1 if mesh is None else int(mesh.devices.size)


def check_divides(size: int, mesh, what: str = "the batch size") -> None:
    """A one-line error when ``size`` rows cannot be split evenly over the mesh's devices."""
    n = mesh_size(mesh)
    if size % n:
        raise ValueError(f"{what} {size} does not divide over {n} devices; choose a multiple of {n} "
                         f"(or fewer devices)")


def replicated(mesh):
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(mesh, PartitionSpec())


def along(mesh, axis: int, ndim: int):
    """Split axis ``axis`` of an ``ndim``-dimensional array over the mesh."""
    from jax.sharding import NamedSharding, PartitionSpec

    spec = [None] * ndim
    spec[axis] = DATA
    return NamedSharding(mesh, PartitionSpec(*spec))


def splits(mesh, shape, axis: int) -> bool:
    """Whether axis ``axis`` of ``shape`` can be split evenly over the mesh."""
    return len(shape) > axis and shape[axis] % mesh_size(mesh) == 0


def put(value, sharding):
    """``value`` (host or device array, the same on every process) as a global ``jax.Array``
    with ``sharding``: each process builds only its own devices' shards."""
    import jax

    host = value if isinstance(value, np.ndarray) else np.asarray(jax.device_get(value))
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def to_host(value) -> np.ndarray:
    """A ``jax.Array`` (possibly spread over several processes) as one NumPy array."""
    import jax

    if not isinstance(value, jax.Array):
        return np.asarray(value)
    if value.is_fully_addressable:
        return np.asarray(jax.device_get(value))
    if value.sharding.is_fully_replicated:
        return np.asarray(value.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(value, tiled=True))


def state_shardings(mesh, state, data_axes, num_data: int):
    """One sharding per leaf of ``state``: the per-training-case axis that ``data_axes(state)``
    names (a pytree over ``state`` with an ``int`` axis or ``None`` at each node) split over
    the mesh when the number of training cases divides over it; everything else replicated."""
    import jax

    rep = replicated(mesh)
    if data_axes is None:
        return jax.tree_util.tree_map(lambda _: rep, state)
    axes = data_axes(state)

    def one(axis, sub):
        def leaf(v):
            shape = np.shape(v)
            if axis is None or not splits(mesh, shape, axis) or shape[axis] != num_data:
                return rep
            return along(mesh, axis, len(shape))

        return jax.tree_util.tree_map(leaf, sub)

    return jax.tree_util.tree_map(one, axes, state, is_leaf=lambda a: a is None)
