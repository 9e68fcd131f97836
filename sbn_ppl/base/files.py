"""Atomic file writes: a temporary file in the same folder, then ``os.replace``.

An interrupted run never leaves a half-written file: either the old one or the new one.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from typing import Any, Mapping


def write_atomic(path: str, data: bytes | str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_npz(path: str, arrays: Mapping[str, Any]) -> None:
    """An uncompressed ``.npz`` archive of ``arrays``, written atomically (:func:`write_atomic`)."""
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(path, buffer.getvalue())


NPZ_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # an .npz is a zip archive (the second: an empty one)


def check_npz(path: str | os.PathLike, what: str = "file") -> None:
    """Raise a ``ValueError`` naming ``path`` unless it starts as an ``.npz`` (a zip archive) does:
    random bytes are a corrupt file, never "pickled data" to be loaded unsafely.

    :param path: the file.
    :param what: what to call it in the message ("parameter file", "method state file").
    """
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith(NPZ_MAGICS):
        raise ValueError(f"{what} {os.fspath(path)} is corrupt (not an .npz archive: "
                         f"{'empty' if not head else 'it does not start as one'})")


def write_json(path: str, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def json_normalised(obj: Any) -> Any:
    """``obj`` as it reads back from :func:`write_json`'s JSON: tuples become lists, NumPy
    values plain ones, NaN and infinities None (which every JSON reader takes)."""
    return json.loads(json.dumps(obj, default=_jsonable), parse_constant=lambda _: None)


def _jsonable(value: Any):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
