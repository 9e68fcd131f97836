"""A training run's output folder: locked while in use, written as whole checkpoints.

Layout of ``out/``::

    .lock                 held (fcntl) by the run writing the folder
    checkpoints/<step>/   params.npz + metrics.json of one checkpoint, written in full first
    latest -> checkpoints/<step>      swapped atomically (os.replace of a symlink)
    params.npz -> latest/params.npz   so the parameters and the learning curve that a
    metrics.json -> latest/metrics.json  reader opens always belong to one checkpoint

A checkpoint records its step (``metrics.json``: ``step``; ``params.npz`` is that step's
parameters). ``metrics.json`` has ``"finished": true`` once the run ended normally; a
finished folder is not overwritten without ``overwrite=True``, and an unfinished one is
continued only with ``resume=True``.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile

from sbn_ppl.base.files import _umask, write_json
from sbn_ppl.base.params import SBNParams


class RunDir:
    def __init__(self, out: str | os.PathLike, *, overwrite: bool = False, resume: bool = False):
        self.out = os.fspath(out)
        self._lock_file = None
        _check_writable(self.out)
        self._lock()
        try:
            previous = read_metrics(self.out)
            if previous is not None and not (overwrite or resume):
                state = "a finished run" if previous.get("finished") else f"an unfinished run (step {previous.get('step')})"
                raise ValueError(f"{self.out!r} holds {state}; use --resume to continue it or --overwrite to "
                                 "replace it (or choose another --out)")
            if previous is not None and overwrite and not resume:
                self.clear()
        except BaseException:
            self.close()
            raise

    def _lock(self) -> None:
        import fcntl

        self._lock_file = open(os.path.join(self.out, ".lock"), "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            self._lock_file.close()
            self._lock_file = None
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise ValueError(f"{self.out!r} is in use by another run (its .lock is held); "
                                 "wait for it or choose another --out") from None
            raise

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def clear(self) -> None:
        for name in ("params.npz", "metrics.json", "latest"):
            path = os.path.join(self.out, name)
            if os.path.lexists(path):
                os.unlink(path)
        shutil.rmtree(os.path.join(self.out, "checkpoints"), ignore_errors=True)

    def write(self, params: SBNParams, metrics: dict, state: dict | None = None) -> None:
        """One checkpoint, as a unit: its folder in full (``state.npz``: the method's state
        arrays, when the backend can give them), then the ``latest`` link swapped."""
        step = int(metrics["step"])
        root = os.path.join(self.out, "checkpoints")
        os.makedirs(root, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{step}.", dir=root)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the usual mode
        params.save(os.path.join(tmp, "params.npz"))
        write_json(os.path.join(tmp, "metrics.json"), metrics)
        if state is not None:
            import numpy as np

            np.savez(os.path.join(tmp, "state.npz"), **state)
        final = os.path.join(root, str(step))
        old = None
        if os.path.exists(final):  # the same step written again (an interrupt right after a checkpoint)
            old = final + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        link_tmp = os.path.join(self.out, f".latest.{os.getpid()}")
        if os.path.lexists(link_tmp):
            os.unlink(link_tmp)
        os.symlink(os.path.join("checkpoints", str(step)), link_tmp)
        os.replace(link_tmp, os.path.join(self.out, "latest"))
        for name in ("params.npz", "metrics.json"):
            path = os.path.join(self.out, name)
            if not os.path.islink(path):
                if os.path.lexists(path):
                    os.unlink(path)
                os.symlink(os.path.join("latest", name), path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self._prune(keep={str(step)})

    def _prune(self, keep: set[str]) -> None:
        """Keep the newest two checkpoints (a reader may still be opening the previous one)."""
        root = os.path.join(self.out, "checkpoints")
        steps = sorted((int(n) for n in os.listdir(root) if n.isdigit()), reverse=True)
        for s in steps[2:]:
            if str(s) not in keep:
                shutil.rmtree(os.path.join(root, str(s)), ignore_errors=True)


def read_state(out: str) -> dict | None:
    """The newest checkpoint's method state arrays, if it has them."""
    import numpy as np

    path = os.path.join(out, "latest", "state.npz")
    if not os.path.exists(path):
        return None
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def read_metrics(out: str) -> dict | None:
    """The newest checkpoint's ``metrics.json`` in ``out``, or ``None`` if there is none."""
    path = os.path.join(out, "metrics.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path!r}: {e}") from None


def _check_writable(out: str) -> None:
    """Fail now, not at the first checkpoint, if ``out`` cannot be written."""
    try:
        os.makedirs(out, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"cannot write to output folder {out!r}: {e.strerror or e}") from None
