"""Where a comparison's cells run: one after the other here (the default), or as Ray tasks.

A comparison is a grid of independent cells, one ``(method, backend, seed, tuning point)``
each (:class:`Cell`). An executor takes the cells and one function ``task(payload, cell)``
that fits and scores a cell and returns what the driver needs to write (a record and
parameter arrays: tasks never write the run folder), and yields ``(cell, result)`` as each
cell ends, in the order they end. A cell whose task raised yields the exception instead of
a result, so the driver records the failure and keeps every finished cell.

* :func:`sequential`: in this process, in order; no Ray import.
* :func:`ray_tasks`: one Ray task per cell (Moritz et al. 2018), local by default
  (``ray.init()`` on this machine's cores) or a running cluster by ``address`` (``ray start
  --head`` on one node, ``ray start --address=...`` on the others; Slurm and Kubernetes
  through Ray's own launchers). Each task declares its resources (``num_cpus``, and
  ``num_gpus`` where one is asked for), so eight GPUs run eight cells at once. A task that
  raises, or whose worker dies, is retried ``retries`` times; then its failure is yielded.
  The payload (the data set and the settings) is put in Ray's object store once.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Iterator, NamedTuple

EXECUTORS = ("sequential", "ray")


class Cell(NamedTuple):
    """One run of a comparison: a method on a backend, a seed, and a tuning point (option
    name/value pairs that override the method's options; ``()`` when not tuning)."""

    method: str
    backend: str
    seed: int
    tuning: tuple = ()

    @property
    def key(self) -> tuple:
        return (self.method, self.backend, self.seed, self.tuning)


class RaySettings(NamedTuple):
    """How cells run on Ray: ``address`` (``None``: a local Ray on this machine, ``"auto"``
    or ``"ray://host:10001"``: a running cluster), each task's ``num_cpus`` and ``num_gpus``,
    ``retries`` after a failure or a dead worker, and ``setup``: a module-level function
    (``"package.module.function"``) every worker runs first, e.g. to register your own
    methods with ``sbn_ppl.inference.add``."""

    address: str | None = None
    num_cpus: float = 1
    num_gpus: float = 0
    retries: int = 2
    setup: str | None = None


def sequential(cells: Iterable[Cell], task: Callable[[Any, Cell], Any], payload: Any) -> Iterator[tuple]:
    """Each cell in this process, in order; an exception is yielded as the cell's result
    (a ``KeyboardInterrupt`` is not: it ends the run)."""
    for cell in cells:
        try:
            yield cell, task(payload, cell)
        except Exception as e:  # noqa: BLE001 - one cell failing must not lose the others
            yield cell, e


def _worker_env(num_cpus: float) -> dict:
    """Threads a task may use: its CPU share, for XLA, BLAS and torch alike (else every task
    of a machine would start a thread per core and they would fight over the cores)."""
    n = str(max(1, int(num_cpus)))
    flags = os.environ.get("XLA_FLAGS", "")
    if int(num_cpus) <= 1 and "xla_cpu_multi_thread_eigen" not in flags:
        flags = (flags + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "XLA_FLAGS": flags}


def check_settings(settings: RaySettings) -> None:
    """A one-line error for resources or retries Ray would refuse (or misread)."""
    if settings.num_cpus <= 0 or settings.num_gpus < 0:
        raise ValueError(f"a Ray task needs num_cpus > 0 and num_gpus >= 0, got {settings.num_cpus} and "
                         f"{settings.num_gpus}")
    if int(settings.retries) != settings.retries or settings.retries < 0:
        raise ValueError(f"ray retries must be a whole number >= 0, got {settings.retries!r}")


def import_ray():
    """Ray, or a one-line error naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise ValueError("the ray executor needs Ray: pip install 'sbn-ppl[ray]'") from None
    return ray


def ray_tasks(cells: Iterable[Cell], task: Callable[[Any, Cell], Any], payload: Any,
              settings: RaySettings = RaySettings()) -> Iterator[tuple]:
    """Every cell as a Ray task; yields ``(cell, result or exception)`` as each ends."""
    check_settings(settings)
    ray = import_ray()
    cells = list(cells)
    started_here = not ray.is_initialized()
    if started_here:
        runtime_env = {"env_vars": _worker_env(settings.num_cpus)}
        if settings.setup:
            runtime_env["worker_process_setup_hook"] = settings.setup
        ray.init(address=settings.address, runtime_env=runtime_env, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    try:
        remote = ray.remote(_run_task).options(num_cpus=settings.num_cpus, num_gpus=settings.num_gpus,
                                               max_retries=int(settings.retries), retry_exceptions=True)
        ref = ray.put(payload)
        pending = {remote.remote(task, ref, cell): cell for cell in cells}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(done[0])
            try:
                yield cell, ray.get(done[0])
            except Exception as e:  # noqa: BLE001 - a task failed for good: the driver records it
                yield cell, _cause(e)
    finally:
        if started_here:
            ray.shutdown()


def _run_task(task, payload, cell):
    return task(payload, cell)


def _cause(error: Exception) -> Exception:
    """The task's own exception where Ray wrapped it (``RayTaskError``), else Ray's."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, Exception) else error
