"""Restricted unpickling for scenario files from untrusted sources.

A pickle is a program: ``pickle.load`` will import and call any global the file names
(``os.system`` included). Scenario files only ever need numpy array reconstruction and plain
builtin containers, so this unpickler resolves exactly those globals and refuses everything else
*before* anything is called. Nothing in a refused file runs.

The allow-list covers the module paths numpy 1.x and 2.x write (``numpy.core`` / ``numpy._core``).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["UnsafePickleError", "CorruptFileError", "safe_load", "safe_loads", "ALLOWED_GLOBALS"]


def _numpy_reconstruct():
    from numpy.core import multiarray  # numpy 1.x path; numpy 2 keeps a shim

    return multiarray._reconstruct


def _numpy_frombuffer():
    from numpy.core import numeric

    return numeric._frombuffer


def _numpy_scalar():
    from numpy.core import multiarray

    return multiarray.scalar


# (module, name) -> zero-argument factory returning the object to hand to the unpickler.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    # protocol 5 rebuilds arrays from a buffer: _frombuffer(bytes, dtype, shape, order)
    ("numpy.core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    # Protocol-2 pickles encode raw bytes through _codecs.encode(str, "latin1"): pure data.
    ("_codecs", "encode"): lambda: __import__("codecs").encode,
}
# Builtin *types* only: constructing them has no side effects. Functions such as eval, exec,
# getattr, open or __import__ are deliberately absent.
for _name in ("set", "frozenset", "list", "dict", "tuple", "int", "float", "complex", "bool",
              "str", "bytes", "bytearray", "slice", "range"):
    ALLOWED_GLOBALS[("builtins", _name)] = (lambda n=_name: getattr(__import__("builtins"), n))
    ALLOWED_GLOBALS[("__builtin__", _name)] = ALLOWED_GLOBALS[("builtins", _name)]


class UnsafePickleError(pickle.UnpicklingError):
    """The file references a global outside the allow-list; nothing from it was executed."""


class CorruptFileError(ValueError):
    """The file is truncated or is not a pickle at all."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle hook
        factory = ALLOWED_GLOBALS.get((module, name))
        if factory is None:
            raise UnsafePickleError(
                f"{self._source}: refused to load: the pickle references the global "
                f"'{module}.{name}', which is not numpy array data or a builtin type. "
                "Scenario files must hold only dicts, lists, strings, numbers and numpy arrays; "
                "nothing from this file was executed."
            )
        return factory()

    def persistent_load(self, pid):  # noqa: D102 - pickle hook
        raise UnsafePickleError(f"{self._source}: refused to load: persistent ids are not allowed")


def safe_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` allowing only numpy arrays and builtin containers.

    Args:
        data: the pickle bytes.
        source: name used in error messages (usually the file path).

    Returns:
        The unpickled object (dicts, lists, numbers, strings, numpy arrays).

    Raises:
        UnsafePickleError: a foreign global is referenced (checked before it could be called).
        CorruptFileError: the data is truncated or not a pickle.
    """
    try:
        return _RestrictedUnpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError,
            AttributeError, KeyError, MemoryError, OverflowError) as e:
        kind = "truncated" if isinstance(e, EOFError) or "truncated" in str(e) else "not a valid pickle"
        raise CorruptFileError(f"{source}: file is {kind} ({type(e).__name__}: {e})") from None


def safe_load(path: str | Path) -> Any:
    """Read ``path`` and unpickle it with :func:`safe_loads`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CorruptFileError(f"{path}: cannot read file ({e.strerror or e})") from None
    if not data:
        raise CorruptFileError(f"{path}: file is empty")
    return safe_loads(data, str(path))
