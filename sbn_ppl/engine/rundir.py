"""A run's output folder: what it holds (``manifest.json``), locked while in use, written as
whole checkpoints, read back only after every file has been checked.

Layout of ``out/``::

    .lock                 held (fcntl) by the process writing the folder; it names that process
    manifest.json         what the folder holds (see below), written when a run starts
    checkpoints/<step>/   params.npz + metrics.json (+ state.npz) of one checkpoint, written in full first
    latest -> checkpoints/<step>      swapped atomically (os.replace of a symlink)
    params.npz -> latest/params.npz   so the parameters and the learning curve that a
    metrics.json -> latest/metrics.json  reader opens always belong to one checkpoint

The **manifest** records the settings, the data (its name and the content hash of each split,
:func:`~sbn_ppl.base.datasets.content_sha256`), the architecture and connectivity, the code
(package version, git revision where there is one) and the process that owns the folder. A
resume compares every field but the owner with the run asking to continue, and names the
first that differs (:func:`check_manifest`).

A checkpoint records its step (``metrics.json``: ``step``; ``params.npz`` is that step's
parameters). ``metrics.json`` has ``"finished": true`` once the run ended normally; a folder
that holds a run is not overwritten without ``overwrite=True``, and continued only with
``resume=True``. A run deletes and replaces files only inside its own folder, and never
through a symbolic link.
"""
from __future__ import annotations

import errno
import functools
import json
import math
import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any, Mapping, NamedTuple

import numpy as np

from sbn_ppl.base.files import _umask, check_npz, write_json
from sbn_ppl.base.params import SBNParams

MANIFEST = "manifest.json"
NOT_COMPARED = ("owner",)  # a manifest's fields that a resume does not check


# -- what a folder holds ------------------------------------------------------------------------
def owner() -> dict:
    """The process that owns a folder: host, process id and start time."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def code_version() -> dict:
    """The code that wrote a folder: ``sbn_ppl``'s version and the git revision of its source
    tree (``None`` for an installed copy)."""
    from sbn_ppl.base.version import __version__

    return {"sbn_ppl": __version__, "git": git_revision()}


@functools.lru_cache(maxsize=1)
def git_revision() -> str | None:
    """``git rev-parse HEAD`` of the tree this package is imported from, or ``None``."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.exists(os.path.join(here, ".git")):
        return None
    try:
        done = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def write_manifest(out: str, manifest: Mapping[str, Any]) -> None:
    """``out/manifest.json``: ``manifest`` with this process as its owner."""
    write_json(own_path(out, MANIFEST), {**manifest, "owner": owner()})


def read_manifest(out: str) -> dict | None:
    """``out/manifest.json``, or ``None`` if there is none; a ``ValueError`` if it is not a manifest."""
    path = os.path.join(out, MANIFEST)
    if not os.path.lexists(path):
        return None
    saved = _read_json(path, "use --overwrite to start afresh")
    if not isinstance(saved, dict) or not isinstance(saved.get("settings"), dict):
        raise ValueError(f"{path}: not a run manifest (expected an object with 'settings'); "
                         "use --overwrite to start afresh")
    return saved


def check_manifest(out: str, saved: Mapping[str, Any], now: Mapping[str, Any], ignore: tuple = ()) -> None:
    """Refuse to continue ``out`` unless every field of its manifest ``saved`` equals ``now``'s
    (but the owner, and the dotted names in ``ignore``); the error names the first that differs."""
    old, new = _flat(saved), _flat(now)
    skip = NOT_COMPARED + tuple(ignore)
    if old.get("code.git") and old.get("code.git") == new.get("code.git"):
        skip += ("code.sbn_ppl",)  # the same source revision: the version an editable install reports can be stale
    for key in list(new) + [k for k in old if k not in new]:
        if any(key == s or key.startswith(s + ".") for s in skip):
            continue
        if old.get(key, _MISSING) != new.get(key, _MISSING):
            raise ValueError(f"cannot resume {out!r}: its {key} was {_shown(old.get(key, _MISSING))}, now "
                             f"{_shown(new.get(key, _MISSING))} (see its {MANIFEST}); continue it as it was "
                             "started, or start afresh with --overwrite (or choose another --out)")


_MISSING = object()


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict:
    """A nested mapping as ``{"data.sha256.train": value, ...}``, in order (as JSON reads it back)."""
    tree = json.loads(json.dumps(tree, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _shown(value) -> str:
    return "absent" if value is _MISSING else repr(value)


# -- the folder -----------------------------------------------------------------------------
class FolderLock:
    """An exclusive lock (``fcntl.flock``) on ``folder/.lock``, held until :meth:`close`; the
    lock file names the owning process, so a refusal can say who holds it."""

    def __init__(self, folder: str, what: str = "run"):
        import fcntl

        self.folder = os.fspath(folder)
        path = own_path(self.folder, ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666 & ~_umask())
        self._file = os.fdopen(fd, "r+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = self._file.read().strip()
            self._file.close()
            self._file = None
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                held = f" (held by {holder})" if holder else " (its .lock is held)"
                raise ValueError(f"{self.folder!r} is in use by another {what}{held}; wait for it or choose "
                                 "another --out") from None
            raise
        me = owner()
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"process {me['pid']} on {me['host']} since {me['started']}\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()  # releases the flock
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RunDir:
    """A training run's folder, locked for as long as this object is open.

    :param out: the folder (created if missing).
    :param overwrite: replace a run the folder holds.
    :param resume: continue the run the folder holds; its manifest must equal ``manifest``.
    :param manifest: what this run is (settings, data, architecture, code; see the module).
    """

    def __init__(self, out: str | os.PathLike, *, overwrite: bool = False, resume: bool = False,
                 manifest: Mapping[str, Any] | None = None):
        self.out = os.fspath(out)
        _check_writable(self.out)
        self._lock = FolderLock(self.out)
        try:
            own_path(self.out, "checkpoints")
            if holds_run(self.out) and not (overwrite or resume):
                raise ValueError(f"{self.out!r} holds {_describe(self.out)}; use --resume to continue it or "
                                 "--overwrite to replace it (or choose another --out)")
            if overwrite and not resume:
                self.clear()
            if resume and manifest is not None:
                check_resumable(self.out, manifest)
            if manifest is not None:
                write_manifest(self.out, manifest)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._lock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def clear(self) -> None:
        """Remove the run the folder holds (its links and files; never what a link points to)."""
        for name in ("params.npz", "metrics.json", "latest", MANIFEST):
            remove_inside(self.out, name)
        remove_inside(self.out, "checkpoints")

    def write(self, params: SBNParams, metrics: dict, state: dict | None = None) -> None:
        """One checkpoint, as a unit: its folder in full (``state.npz``: the method's state
        arrays, when the backend can give them), then the ``latest`` link swapped."""
        step = int(metrics["step"])
        root = own_path(self.out, "checkpoints")
        os.makedirs(root, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{step}.", dir=root)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the usual mode
        params.save(os.path.join(tmp, "params.npz"))
        write_json(os.path.join(tmp, "metrics.json"), metrics)
        if state is not None:
            np.savez(os.path.join(tmp, "state.npz"), **state)
        final = os.path.join(root, str(step))
        old = None
        if os.path.lexists(final):  # the same step written again (an interrupt right after a checkpoint)
            old = final + ".old"
            remove_inside(root, str(step) + ".old")
            os.replace(final, old)
        os.replace(tmp, final)
        link_tmp = own_path(self.out, f".latest.{os.getpid()}")
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
            remove_inside(root, str(step) + ".old")
        self._prune(keep={str(step)})

    def _prune(self, keep: set[str]) -> None:
        """Keep the newest two checkpoints (a reader may still be opening the previous one)."""
        root = own_path(self.out, "checkpoints")
        for s in _checkpoint_steps(self.out)[2:]:
            if str(s) not in keep:
                remove_inside(root, str(s))


def holds_run(out: str) -> bool:
    """Whether ``out`` holds (part of) a run: a manifest, a checkpoint or a learning curve."""
    return any(os.path.lexists(os.path.join(out, n)) for n in (MANIFEST, "metrics.json", "latest")) or bool(
        _checkpoint_steps(out))


def check_resumable(out: str, manifest: Mapping[str, Any], ignore: tuple = ()) -> None:
    """Refuse to resume ``out`` if what it holds is not ``manifest``'s run (see :func:`check_manifest`)."""
    saved = read_manifest(out)
    if saved is None:
        if holds_run(out):
            raise ValueError(f"{out!r} holds a run but no {MANIFEST} (written by an older sbn-ppl, or removed), so "
                             "what it holds cannot be checked; start afresh with --overwrite (or choose another --out)")
        return
    check_manifest(out, saved, manifest, ignore)


def _describe(out: str) -> str:
    try:
        found = read_checkpoint(out, state=False, params=False)
    except ValueError:
        return "a run whose last checkpoint cannot be read"
    if found is None:
        return "an unfinished run (no checkpoint yet)"
    return "a finished run" if found.metrics.get("finished") else f"an unfinished run (step {found.step})"


# -- only inside the folder -------------------------------------------------------------------
def own_path(folder: str, *names: str) -> str:
    """``folder/names...``, refused (``ValueError``) if a part of it below ``folder`` is a symbolic
    link: a run writes and deletes only inside its own folder."""
    path = folder
    for name in names:
        path = os.path.join(path, name)
        if os.path.islink(path) and not (name in ("latest", "params.npz", "metrics.json") and path.count(os.sep)
                                         == folder.count(os.sep) + 1):
            raise ValueError(f"{path} is a symbolic link (to {os.readlink(path)}); a run writes only inside its own "
                             "folder: remove the link (or choose another --out)")
    return path


def remove_inside(folder: str, name: str) -> None:
    """Remove ``folder/name``: a link is unlinked (what it points to is kept), a folder removed
    with its contents (``shutil.rmtree`` never follows links inside it), a file unlinked."""
    path = os.path.join(folder, name)
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)


# -- reading a checkpoint back, every file checked ---------------------------------------------
class Checkpoint(NamedTuple):
    """The newest readable checkpoint of a run: its step, folder, learning curve (``metrics.json``),
    parameters and the method's state arrays (``None`` when not read or not saved)."""

    step: int
    folder: str
    metrics: dict
    params: SBNParams | None
    state: dict | None


def read_checkpoint(out: str, *, state: bool = True, params: bool = True) -> Checkpoint | None:
    """The checkpoint ``latest`` points to (or, if that link is gone, the newest in
    ``checkpoints/``), each file checked; ``None`` if the folder has none. A file that cannot be
    read is a ``ValueError`` naming it, what is wrong, and the intact earlier checkpoint if any."""
    steps = _checkpoint_steps(out)
    latest = os.path.join(out, "latest")
    target = os.path.realpath(latest) if os.path.islink(latest) else None
    root = os.path.realpath(os.path.join(out, "checkpoints"))
    if target is not None and os.path.dirname(target) == root and os.path.basename(target).isdigit() \
            and os.path.isdir(target):
        step = int(os.path.basename(target))
    elif steps:
        step = steps[0]
    else:
        return None
    folder = os.path.join(out, "checkpoints", str(step))
    advice = _advice(out, step, steps)
    metrics = _check_metrics(os.path.join(folder, "metrics.json"), advice)
    if metrics["step"] != step:
        raise ValueError(f"{os.path.join(folder, 'metrics.json')}: records step {metrics['step']} in the folder of "
                         f"step {step}; {advice}")
    loaded = _read_params(os.path.join(folder, "params.npz"), advice) if params else None
    arrays = _read_state(os.path.join(folder, "state.npz"), advice) if state else None
    return Checkpoint(step, folder, metrics, loaded, arrays)


def read_metrics(out: str) -> dict | None:
    """The newest checkpoint's ``metrics.json`` in ``out`` (checked), or ``None`` if there is none."""
    found = read_checkpoint(out, state=False, params=False)
    return None if found is None else found.metrics


def _checkpoint_steps(out: str) -> list[int]:
    """The steps of the checkpoint folders in ``out/checkpoints``, newest first."""
    root = os.path.join(out, "checkpoints")
    if not os.path.isdir(root) or os.path.islink(root):
        return []
    return sorted((int(n) for n in os.listdir(root) if n.isdigit() and os.path.isdir(os.path.join(root, n))
                   and not os.path.islink(os.path.join(root, n))), reverse=True)


def _advice(out: str, step: int, steps: list[int]) -> str:
    earlier = [s for s in steps if s < step]
    if earlier:
        return (f"the checkpoint of step {earlier[0]} is intact: remove {os.path.join(out, 'checkpoints', str(step))} "
                "to resume from it, or start afresh with --overwrite")
    return "start afresh with --overwrite"


def _check_metrics(path: str, advice: str) -> dict:
    metrics = _read_json(path, advice)
    problem = _metrics_problem(metrics)
    if problem:
        raise ValueError(f"{path}: {problem}, not a learning curve of sbn-ppl fit; {advice}")
    return metrics


def _metrics_problem(m) -> str | None:
    if not isinstance(m, dict):
        return f"holds a JSON {type(m).__name__}"
    if not _count(m.get("step")):
        return f"its 'step' is {m.get('step')!r}, not a non-negative integer"
    if not _number(m.get("seconds", 0.0)) or m.get("seconds", 0.0) < 0:
        return f"its 'seconds' is {m.get('seconds')!r}, not a non-negative number"
    curve = m.get("curve")
    if not isinstance(curve, list) or not all(isinstance(r, dict) for r in curve):
        return "its 'curve' is not a list of records"
    for i, r in enumerate(curve):
        if not _count(r.get("step")) or not _number(r.get("seconds", 0.0)):
            return f"curve record {i} has step {r.get('step')!r}, seconds {r.get('seconds')!r}"
    return None


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _read_json(path: str, advice: str):
    if not os.path.exists(path):
        raise ValueError(f"{path} is missing; {advice}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is corrupt (not readable JSON: {e}); {advice}") from None


def _read_params(path: str, advice: str) -> SBNParams:
    if not os.path.exists(path):
        raise ValueError(f"{path} is missing; {advice}")
    try:
        return SBNParams.load(path)
    except ValueError as e:
        raise ValueError(f"{str(e).rstrip('.')}; {advice}") from None


def _read_state(path: str, advice: str) -> dict | None:
    if not os.path.exists(path):
        return None  # a backend that saves no state (Pyro): the resume restarts the optimiser
    try:
        check_npz(path, "method state file")
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as e:  # noqa: BLE001 - any unreadable file gets one line
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if str(path) not in text:
            text = f"method state file {path} is corrupt ({text})"
        raise ValueError(f"{text}; {advice}") from None


def _check_writable(out: str) -> None:
    """Fail now, not at the first checkpoint, if ``out`` cannot be written."""
    try:
        os.makedirs(out, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"cannot write to output folder {out!r}: {e.strerror or e}") from None
