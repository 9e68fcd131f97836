"""One runner per backend: the outer loop, the batch sequence, the random keys.

Every method sees the same batches. The batch index sequence depends only on the seed,
the number of training points and the batch size (:func:`batch_indices`): epoch ``e`` is
a permutation of ``range(N)`` drawn from ``numpy.random.default_rng([seed, e])``, cut
into ``N // B`` batches of ``B`` (the remainder of each epoch is skipped, so every batch
has ``B`` rows). Step ``s`` (0-based) is batch ``s mod (N // B)`` of epoch ``s // (N // B)``,
computable without drawing the steps before it, so a resumed run continues the sequence.

* :class:`JaxRunner` (NumPyro backend): a jitted ``lax.scan`` of ``Kernel.step`` over the
  pre-drawn batch indices; step ``s`` gets the key ``fold_in(step_root, s)``. The scan has
  one fixed length per run; a shorter chunk masks the steps it does not take (``lax.cond``),
  so a run compiles twice at most (a one-step chunk, then the checkpoint chunk).
* :class:`TorchRunner` (Pyro backend): a Python loop inside its own Pyro param-store scope
  and its own torch RNG stream (``fork_rng``), reseeded per step from ``(seed, s)``; it
  chooses torch's intra-op thread count by the size of the work, so a loaded machine does
  not cost a Pyro method more than a JAX one.

Both expose ``run(start, count, progress) -> info`` (each ``info`` field averaged over the
chunk), ``params()`` and ``bound(x)``. ``progress = (f0, rate)``: step ``start + i`` is taken at the
budget fraction ``f0 + i * rate``, which a learning-rate schedule over the budget reads
(:mod:`sbn_ppl.base.schedules`; ``None``: fraction 0, no effect).

Several devices (:class:`JaxRunner` only, ``devices``: ``None`` every device, ``N`` the
first N): the data axis is split over a 1-D mesh (:mod:`sbn_ppl.engine.sharding`). The training
array is split by rows (replicated when N does not divide over the devices), each step's
batch by rows (the batch size must divide over the devices: a one-line error otherwise),
the per-training-case state a method declares (``Kernel.data_axes``) along that axis;
parameters and optimiser state are replicated, and XLA inserts the gradient all-reduce.
The scan is one ``jax.jit`` with those in and out shardings. On one device nothing is
sharded: the code path is the one-device path. The Pyro backend runs on one device.
"""
from __future__ import annotations

import collections
import contextlib
import functools
from typing import Any, NamedTuple

import numpy as np

from sbn_ppl.base.methods import Batch, Method
from sbn_ppl.base.options import copies
from sbn_ppl.base.params import SBNParams

_EPOCH_SALT = 0x5B7  # keeps the batch stream apart from other uses of the same seed


def steps_per_epoch(num_data: int, batch_size: int) -> int:
    return max(1, num_data // batch_size)


def effective_batch_size(num_data: int, batch_size: int) -> int:
    """The batch size a run uses: ``batch_size``, or all ``num_data`` points if fewer."""
    return int(min(batch_size, num_data))


def batch_indices(seed: int, num_data: int, batch_size: int, start: int, count: int) -> np.ndarray:
    """The training indices of steps ``start .. start + count - 1``: ``(count, B)`` int32."""
    b = effective_batch_size(num_data, batch_size)
    per_epoch = steps_per_epoch(num_data, b)
    out = np.empty((count, b), dtype=np.int32)
    epoch, perm = None, None
    for i, s in enumerate(range(start, start + count)):
        e, j = divmod(s, per_epoch)
        if e != epoch:
            epoch, perm = e, np.random.default_rng([int(seed), _EPOCH_SALT, e]).permutation(num_data)
        out[i] = perm[j * b:(j + 1) * b]
    return out


def step_seed(seed: int, step: int) -> int:
    """The integer seed of step ``step`` on the torch backend (and of ``init`` at ``step=-1``)."""
    return int(np.random.SeedSequence([int(seed), int(step) + 1]).generate_state(1)[0])


def runner_for(method: Method, params: SBNParams, options: dict, train: np.ndarray, seed: int,
               batch_size: int, devices: int | None = None):
    """The backend's runner, with the method built for ``params``' architecture and
    ``options`` and its ``init`` already called. ``devices``: the JAX
    runner's device count (``None``: every device); the Pyro backend runs on one device
    and refuses more."""
    from sbn_ppl.engine.sharding import check_devices

    check_devices(devices)
    if method.backend == "numpyro":
        return JaxRunner(method, params, options, train, seed, batch_size, devices=devices)
    if devices is not None and devices > 1:
        raise ValueError(f"{method.label} runs on one device (the Pyro backend is not sharded); "
                         f"devices={devices} needs a NumPyro method")
    return TorchRunner(method, params, options, train, seed, batch_size)


# -- JAX ---------------------------------------------------------------------------------------

class JaxRunner:
    def __init__(self, method: Method, params: SBNParams, options: dict, train: np.ndarray, seed: int,
                 batch_size: int, devices: int | None = None):
        import sbn_ppl.base.pytrees as pytrees
        import sbn_ppl.engine.sharding as sharding

        self.mesh = sharding.data_mesh(devices)  # None: one device (first: may start jax.distributed)
        import jax

        pytrees.register()
        self.method, self.seed = method, int(seed)
        self.kernel = _built(method, params.architecture, options, len(train))
        self.num_data = len(train)
        self.batch_size = effective_batch_size(self.num_data, batch_size)
        if self.mesh is not None and not method.jit:
            if devices is not None:
                raise ValueError(f"{method.label} is not jitted and runs on one device; use devices=1")
            self.mesh = None  # every device by default: a Python-looped method takes one
        sharding.check_divides(self.batch_size, self.mesh, "the batch size")
        host = np.asarray(train, dtype=np.float32)
        self.train = jax.numpy.asarray(host)
        key_init, self.step_root = jax.random.split(jax.random.PRNGKey(self.seed))
        self.state = self.kernel.init(key_init, params, self.train)
        self.length = None  # the scan length, fixed after the first chunks
        self._shardings = None
        if self.mesh is not None:
            rep = sharding.replicated(self.mesh)
            rows = sharding.along(self.mesh, 0, 2) if sharding.splits(self.mesh, host.shape, 0) else rep
            self._shardings = _Shardings(
                state=sharding.state_shardings(self.mesh, self.state, self.kernel.data_axes, self.num_data),
                train=rows, replicated=rep, idx=sharding.along(self.mesh, 1, 2),
                batch_index=sharding.along(self.mesh, 0, 1), batch_x=sharding.along(self.mesh, 0, 2))
            self.train = sharding.put(host, rows)
            self.step_root = sharding.put(np.asarray(self.step_root), rep)
            self.state = self._put_state(self.state)

    @property
    def num_devices(self) -> int:
        from sbn_ppl.engine.sharding import mesh_size

        return mesh_size(self.mesh)

    def _put_state(self, state):
        import jax

        from sbn_ppl.engine.sharding import put

        leaves, treedef = jax.tree_util.tree_flatten(state)
        shards = treedef.flatten_up_to(self._shardings.state)
        return jax.tree_util.tree_unflatten(treedef, [put(v, s) for v, s in zip(leaves, shards)])

    def _host_state(self, replicated_only: bool = False):
        """The state with its leaves as NumPy (only the replicated ones: no gather), for
        functions run outside the sharded scan."""
        import jax

        from sbn_ppl.engine.sharding import to_host

        if self.mesh is None:
            return self.state
        leaves, treedef = jax.tree_util.tree_flatten(self.state)
        shards = treedef.flatten_up_to(self._shardings.state)
        return jax.tree_util.tree_unflatten(treedef, [
            to_host(v) if not replicated_only or s.is_fully_replicated else v for v, s in zip(leaves, shards)])

    def run(self, start: int, count: int, progress: tuple[float, float] | None = None) -> dict:
        import jax.numpy as jnp

        idx = batch_indices(self.seed, self.num_data, self.batch_size, start, count)
        steps = np.arange(start, start + count, dtype=np.uint32)
        progress = np.asarray(progress if progress is not None else (0.0, 0.0), dtype=np.float32)
        if not self.method.jit:
            return self._run_python(idx, steps, progress)
        length = self.length if self.length is not None and count <= self.length else count
        pad = length - count
        active = np.concatenate([np.ones(count, bool), np.zeros(pad, bool)])
        idx = np.concatenate([idx, np.repeat(idx[-1:], pad, 0)])
        steps = np.concatenate([steps, np.repeat(steps[-1:], pad)])
        if self.mesh is not None:
            from sbn_ppl.engine.sharding import put, to_host

            sh = self._shardings
            self.state, infos = _sharded_scan(self.kernel.step, sh)(
                self.state, self.train, self.step_root, put(steps, sh.replicated), put(idx, sh.idx),
                put(active, sh.replicated), put(progress, sh.replicated))
            return _mean_info({k: to_host(v) for k, v in _as_dict(infos).items()}, count)
        self.state, infos = _scan(self.kernel.step, self.state, self.train, self.step_root, jnp.asarray(steps),
                                  jnp.asarray(idx), jnp.asarray(active), jnp.asarray(progress))
        return _mean_info(infos, count)

    def fix_length(self, length: int) -> None:
        """Every later chunk runs one scan of this length (masked where shorter)."""
        self.length = int(length)

    def _run_python(self, idx, steps, progress) -> dict:
        import jax

        from sbn_ppl.base.optimizers import at_budget_fraction, holds_budget_fraction

        scheduled = holds_budget_fraction(self.state)  # once a chunk: no per-step pytree walk without a schedule
        infos = []
        for n, (s, i) in enumerate(zip(steps, idx)):
            if scheduled:
                self.state = at_budget_fraction(self.state, progress[0] + n * progress[1])
            batch = Batch(jax.numpy.asarray(i), self.train[i])
            self.state, info = self.kernel.step(jax.random.fold_in(self.step_root, int(s)), self.state, batch)
            infos.append(_as_dict(info))
        return {k: float(np.mean([float(d[k]) for d in infos])) for k in infos[0]}

    def params(self) -> SBNParams:
        return self.kernel.get_params(self._host_state(replicated_only=True))

    def bound(self, x):
        return None if self.kernel.bound is None else self.kernel.bound(self._host_state(), x)

    def state_arrays(self) -> dict[str, np.ndarray] | None:
        """The state's leaves (optimiser moments, chains, keys, ...) for an exact resume."""
        import jax

        from sbn_ppl.engine.sharding import to_host

        leaves = jax.tree_util.tree_leaves(self.state)
        return {f"leaf_{i}": to_host(v) for i, v in enumerate(leaves)}

    def load_state_arrays(self, arrays: dict) -> bool:
        """Put saved leaves back into a fresh state of the same method and options; ``False``
        (state untouched) if they do not fit it."""
        import jax

        leaves, treedef = jax.tree_util.tree_flatten(self.state)
        saved = [arrays.get(f"leaf_{i}") for i in range(len(leaves))]
        if len(arrays) != len(leaves) or any(a is None or np.shape(a) != np.shape(v) for a, v in zip(saved, leaves)):
            return False
        restored = [jax.numpy.asarray(a, dtype=getattr(v, "dtype", None)) for a, v in zip(saved, leaves)]
        self.state = jax.tree_util.tree_unflatten(treedef, restored)
        if self.mesh is not None:
            self.state = self._put_state(self.state)
        return True


def _built(method: Method, arch, options: dict, num_data: int):
    """``method.build(arch, options)``, the same kernel again for the same method, architecture,
    options and training-set size, so that its jitted scan is compiled once across runs (seeds,
    a second fit): a kernel's step is a closure, and ``jax.jit`` caches by the function."""
    try:
        key = (method, arch, tuple(sorted(options.items())), int(num_data))
        hash(key)
    except TypeError:  # an option value that cannot be hashed: build afresh
        return method.build(arch, options)
    return _cached_build(*key)


@functools.lru_cache(maxsize=16)
def _cached_build(method: Method, arch, options: tuple, num_data: int):
    return method.build(arch, dict(options))


def _as_dict(info) -> dict:
    return info._asdict() if hasattr(info, "_asdict") else dict(info)


def _mean_info(infos, count: int) -> dict:
    return {k: float(np.mean(np.asarray(v)[:count], dtype=np.float64)) for k, v in _as_dict(infos).items()}


@functools.lru_cache(maxsize=16)  # a step is a kernel's closure: one entry per run (and its compiled scan)
def _jitted_scan(step):
    import jax
    from jax import lax

    def scan(state, train, root, steps, idx, active, progress):
        def body(state, xs):
            s, i, on = xs
            key = jax.random.fold_in(root, s)
            state = _at_fraction(state, steps, s, progress)
            batch = Batch(i, train[i])
            _, info_shape = jax.eval_shape(step, key, state, batch)
            zero = jax.tree_util.tree_map(lambda a: jax.numpy.zeros(a.shape, a.dtype), info_shape)
            return lax.cond(on, lambda st: step(key, st, batch), lambda st: (st, zero), state)

        return lax.scan(body, state, (steps, idx, active))

    return jax.jit(scan)


def _scan(step, state, train, root, steps, idx, active, progress):
    return _jitted_scan(step)(state, train, root, steps, idx, active, progress)


def _at_fraction(state, steps, s, progress):
    """The state with its budget fraction (if it holds one) set for step ``s``: ``f0 + (s - start) rate``."""
    import jax.numpy as jnp

    from sbn_ppl.base.optimizers import at_budget_fraction

    return at_budget_fraction(state, progress[0] + (s - steps[0]).astype(jnp.float32) * progress[1])


class _Shardings(NamedTuple):
    """The shardings of a sharded run: ``state`` (a pytree like the state), the training
    array, replicated values, the ``(steps, B)`` batch indices, a batch's indices and rows."""

    state: Any
    train: Any
    replicated: Any
    idx: Any
    batch_index: Any
    batch_x: Any


_SHARDED: collections.OrderedDict = collections.OrderedDict()  # the last _SHARDED_KEEP programs, newest last
_SHARDED_KEEP = 8  # a grid of cells in one process makes a step function per cell: keep only the recent ones


def _sharded_scan(step, sh: _Shardings):
    """The scan of :func:`_jitted_scan` as one ``jax.jit`` with in and out shardings: the
    state keeps its shardings from chunk to chunk, and each step's batch is pinned to the
    data axis (``with_sharding_constraint``), so XLA splits the step's work over the devices
    and reduces the gradient with an all-reduce."""
    import jax
    from jax import lax

    leaves, treedef = jax.tree_util.tree_flatten(sh.state)
    key = (step, treedef, tuple(leaves), sh.train, sh.idx)
    fn = _SHARDED.get(key)
    if fn is not None:
        _SHARDED.move_to_end(key)
        return fn

    def scan(state, train, root, steps, idx, active, progress):
        def body(state, xs):
            s, i, on = xs
            key = jax.random.fold_in(root, s)
            state = _at_fraction(state, steps, s, progress)
            i = lax.with_sharding_constraint(i, sh.batch_index)
            batch = Batch(i, lax.with_sharding_constraint(train[i], sh.batch_x))
            _, info_shape = jax.eval_shape(step, key, state, batch)
            zero = jax.tree_util.tree_map(lambda a: jax.numpy.zeros(a.shape, a.dtype), info_shape)
            return lax.cond(on, lambda st: step(key, st, batch), lambda st: (st, zero), state)

        return lax.scan(body, state, (steps, idx, active))

    rep = sh.replicated
    fn = jax.jit(scan, in_shardings=(sh.state, sh.train, rep, rep, sh.idx, rep, rep), out_shardings=(sh.state, rep))
    _SHARDED[key] = fn
    while len(_SHARDED) > _SHARDED_KEEP:
        _SHARDED.popitem(last=False)
    return fn


# -- torch -------------------------------------------------------------------------------------

_PARALLEL_ELEMENTS = 1 << 22  # below this many elements in the largest array of a step, one thread is faster
# (measured: at 784-200-200, batch 100, two threads were 5-13x slower than one on a loaded 2-core CPU)


class TorchRunner:
    def __init__(self, method: Method, params: SBNParams, options: dict, train: np.ndarray, seed: int,
                 batch_size: int):
        import torch

        self.method, self.seed = method, int(seed)
        self.kernel = method.build(params.architecture, options)
        self.num_data = len(train)
        self.batch_size = effective_batch_size(self.num_data, batch_size)
        self.train = torch.as_tensor(np.asarray(train, dtype=np.float32))
        self.store = {"params": {}, "constraints": {}}
        self.threads = threads_for(self.batch_size * max(params.architecture.sizes) * copies(options))
        with self.scope():
            torch.manual_seed(step_seed(self.seed, -1))
            self.state = self.kernel.init(step_seed(self.seed, -1), params, self.train)

    @contextlib.contextmanager
    def scope(self):
        """This run's own Pyro param store, torch RNG stream and thread count."""
        import torch

        with contextlib.ExitStack() as stack:
            try:
                import pyro

                self.store = stack.enter_context(pyro.get_param_store().scope(self.store))
            except ImportError:  # pragma: no cover - pyro is a dependency
                pass
            stack.enter_context(torch.random.fork_rng(devices=[]))
            before = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            stack.callback(torch.set_num_threads, before)
            yield

    def run(self, start: int, count: int, progress: tuple[float, float] | None = None) -> dict:
        import torch

        from sbn_ppl.base.optimizers import set_torch_budget_fraction

        idx = torch.as_tensor(batch_indices(self.seed, self.num_data, self.batch_size, start, count), dtype=torch.long)
        f0, rate = progress if progress is not None else (0.0, 0.0)
        sums: dict[str, float] = {}
        with self.scope():
            for i, s in enumerate(range(start, start + count)):
                set_torch_budget_fraction(f0 + i * rate)
                seed = step_seed(self.seed, s)
                torch.default_generator.manual_seed(seed)  # CPU stream only: 1.7 us, not torch.manual_seed's ~1 ms
                self.state, info = self.kernel.step(seed, self.state, Batch(idx[i], self.train[idx[i]]))
                for k, v in _as_dict(info).items():
                    sums[k] = sums.get(k, 0.0) + float(v)
        return {k: v / count for k, v in sums.items()}

    def fix_length(self, length: int) -> None:
        pass

    def state_arrays(self) -> None:
        return None  # torch states hold optimiser objects: a resume restarts them from the saved parameters

    def load_state_arrays(self, arrays: dict) -> bool:
        return False

    def params(self) -> SBNParams:
        with self.scope():
            return self.kernel.get_params(self.state)

    def bound(self, x):
        if self.kernel.bound is None:
            return None
        with self.scope():
            return self.kernel.bound(self.state, x)


def threads_for(elements: int) -> int:
    """torch's intra-op threads for work whose largest array has ``elements`` entries: one
    while the arrays are small (a step is a long chain of small ops, and a thread pool woken
    for each, and left spinning, costs more than it saves; on a loaded machine it collapses),
    else every core torch would use."""
    import torch

    if elements < _PARALLEL_ELEMENTS:
        return 1
    return max(1, torch.get_num_threads())
