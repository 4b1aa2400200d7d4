"""Restricted unpickling for scenario files from untrusted sources.

A pickle is a program: ``pickle.load`` will import and call any global the file names
(``os.system`` included). Scenario files only ever need numpy array reconstruction and plain
builtin containers, so this unpickler resolves exactly those globals and refuses everything else
*before* anything is called. Nothing in a refused file runs.

What is allowed (:data:`ALLOWED_GLOBALS`):
  * numpy array and scalar reconstruction, under the module paths numpy 1.x and 2.x write
    (``numpy.core`` / ``numpy._core``), and ``numpy.dtype``;
  * builtin *types* (``dict``, ``list``, ``tuple``, ``set``, ``frozenset``, ``str``, ``bytes``,
    ``bytearray``, ``int``, ``float``, ``complex``, ``bool``, ``slice``, ``range``);
  * ``collections.OrderedDict`` and ``collections.defaultdict`` whose default factory is ``None``
    or one of those builtin types: current ScenarioNet/MetaDrive releases write
    ``defaultdict(int)`` into ``metadata["number_summary"]`` and ``dataset_summary.pkl``;
  * ``_codecs.encode(text, "latin1")``, which protocol-2 pickles use for raw bytes.

Everything else (functions such as ``eval``, ``getattr``, ``os.system``; any class from any other
module; persistent ids) raises :class:`UnsafePickleError`.

Resource limits, checked *before* memory is allocated: a file larger than :data:`MAX_FILE_BYTES`
(1 GiB) is refused unread, and a numpy array, scalar, ``bytes``/``bytearray`` or ``range`` that
declares more than :data:`MAX_ARRAY_BYTES` (256 MiB; the largest array of a real Waymo or nuScenes
scenario is a few MB) raises :class:`ResourceLimitError`. Every other failure (truncated, not a
pickle, arguments of the wrong kind) raises :class:`CorruptFileError`. These three are the only
errors :func:`safe_load` raises; each message starts with the file's name.
"""

from __future__ import annotations

import _compat_pickle
import builtins
import codecs
import collections
import io
import math
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np
from numpy.core import multiarray, numeric  # numpy 1.x path; numpy 2 keeps a shim

__all__ = ["UnsafePickleError", "ResourceLimitError", "CorruptFileError", "safe_load", "safe_loads",
           "ALLOWED_GLOBALS", "MAX_FILE_BYTES", "MAX_ARRAY_BYTES", "LOAD_ERRORS"]

MAX_FILE_BYTES = 1 << 30
"""Largest pickle file read at all (1 GiB)."""
MAX_ARRAY_BYTES = 256 << 20
"""Largest array (or bytes/range) a pickle may declare (256 MiB)."""


class UnsafePickleError(pickle.UnpicklingError):
    """The file references a global outside the allow-list; nothing from it was executed."""


class ResourceLimitError(UnsafePickleError):
    """The file declares an object larger than the limits; refused before memory was allocated."""


class CorruptFileError(ValueError):
    """The file is truncated, is not a pickle, or holds malformed numpy/builtin data."""


LOAD_ERRORS = (UnsafePickleError, CorruptFileError)
"""Every error :func:`safe_load` raises (``ResourceLimitError`` is an ``UnsafePickleError``)."""


class _LimitExceeded(Exception):
    """Raised inside a constructor wrapper; turned into ResourceLimitError with the file name."""


_BUILTIN_TYPES = ("set", "frozenset", "list", "dict", "tuple", "int", "float", "complex", "bool",
                  "str", "bytes", "bytearray", "slice", "range")
_SAFE_FACTORIES = frozenset(getattr(builtins, n) for n in _BUILTIN_TYPES)
_UNWRAPPED: dict[Callable, type] = {}  # size-checking wrapper -> the builtin type it builds


def _check_bytes(n: int, what: str) -> None:
    if n > MAX_ARRAY_BYTES:
        raise _LimitExceeded(f"declares {what} of {n:,} bytes, above the limit of {MAX_ARRAY_BYTES:,} bytes "
                             "(sim_bridge.safe_pickle.MAX_ARRAY_BYTES)")


def _check_array(shape: Any, dtype: Any) -> None:
    """Refuse an array whose declared size exceeds the limit; O(ndim), allocates nothing."""
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    if not all(isinstance(d, (int, np.integer)) for d in dims):
        raise TypeError(f"array shape must be integers, got {shape!r}")
    itemsize = np.dtype(dtype).itemsize
    _check_bytes(math.prod(int(d) for d in dims) * itemsize, f"an array of shape {tuple(dims)} and dtype {dtype}")


def _numpy_reconstruct() -> Callable:
    def reconstruct(subtype, shape, dtype):
        # _reconstruct allocates np.empty(shape, dtype) before the BUILD step fills it.
        subtype = np.ndarray if subtype is _guarded_ndarray else subtype
        if subtype is not np.ndarray:
            raise TypeError(f"only numpy.ndarray may be reconstructed, got {subtype!r}")
        _check_array(shape, dtype)
        return multiarray._reconstruct(subtype, shape, dtype)

    return reconstruct


def _numpy_frombuffer() -> Callable:
    def frombuffer(buf, dtype, shape, order):
        _check_array(shape, dtype)
        return numeric._frombuffer(buf, dtype, shape, order)

    return frombuffer


def _numpy_scalar() -> Callable:
    def scalar(dtype, *args):
        _check_bytes(np.dtype(dtype).itemsize, f"a numpy scalar of dtype {dtype}")
        return multiarray.scalar(dtype, *args)

    return scalar


def _guarded_ndarray(shape, dtype=float, *args, **kwargs):
    """``numpy.ndarray`` as a pickle names it: calling it allocates, so the size is checked first;
    passed to ``_reconstruct`` as the array type, it stands for ``numpy.ndarray`` itself."""
    _check_array(shape, dtype)
    return np.ndarray(shape, dtype, *args, **kwargs)


def _sized(kind: type) -> Callable:
    """bytes/bytearray: ``bytes(n)`` allocates n zero bytes, so an integer argument is bounded."""

    def make(*args):
        if args and isinstance(args[0], int):
            _check_bytes(args[0], f"a {kind.__name__}")
        if args and isinstance(args[0], range):
            _check_bytes(len(args[0]), f"a {kind.__name__}")
        return kind(*args)

    _UNWRAPPED[make] = kind
    return make


def _range(*args):
    r = range(*args)
    _check_bytes(8 * len(r), f"a range of {len(r):,} items")  # list(range) costs >= 8 bytes an item
    return r


_UNWRAPPED[_range] = range


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """Protocol 2 writes ``bytes`` as ``_codecs.encode(str, "latin1")``; no other codec is allowed
    (a codec name is a module lookup)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise _Refused(f"_codecs.encode with encoding {encoding!r} (only encode(str, 'latin1') is data)")
    return codecs.encode(text, "latin1")


def _defaultdict(default_factory=None, *args):
    """``collections.defaultdict`` whose factory is None or an allow-listed builtin type.

    The factory is called later, on every missing key: a factory such as ``os.system`` would run
    long after loading, so it is checked here, at construction.
    """
    default_factory = _UNWRAPPED.get(default_factory, default_factory)
    if default_factory is not None and default_factory not in _SAFE_FACTORIES:
        raise _Refused(f"collections.defaultdict with default factory {default_factory!r}")
    return collections.defaultdict(default_factory, *args)


class _Refused(Exception):
    """Raised inside a constructor wrapper for a refused argument; becomes UnsafePickleError."""


# (module, name) -> zero-argument factory returning the object to hand to the unpickler.
ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    # protocol 5 rebuilds arrays from a buffer: _frombuffer(bytes, dtype, shape, order)
    ("numpy.core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy", "ndarray"): lambda: _guarded_ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: _latin1_encode,
    ("collections", "OrderedDict"): lambda: collections.OrderedDict,
    ("collections", "defaultdict"): lambda: _defaultdict,
}
# Builtin *types* only: constructing them has no side effects. Functions such as eval, exec,
# getattr, open or __import__ are deliberately absent.
for _name in _BUILTIN_TYPES:
    _obj = {"bytes": _sized(bytes), "bytearray": _sized(bytearray),
            "range": _range}.get(_name, getattr(builtins, _name))
    ALLOWED_GLOBALS[("builtins", _name)] = (lambda o=_obj: o)
    ALLOWED_GLOBALS[("__builtin__", _name)] = ALLOWED_GLOBALS[("builtins", _name)]


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle hook
        # Protocols 0-2 write Python 2 names (__builtin__.long, copy_reg, ...): map them as pickle does.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
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
        ResourceLimitError: an object larger than the limits is declared (before allocation).
        CorruptFileError: the data is truncated, not a pickle, or malformed.
    """
    if len(data) > MAX_FILE_BYTES:
        raise ResourceLimitError(f"{source}: refused to load: {len(data):,} bytes, above the limit of "
                                 f"{MAX_FILE_BYTES:,} bytes (sim_bridge.safe_pickle.MAX_FILE_BYTES)")
    try:
        return _RestrictedUnpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except _LimitExceeded as e:
        raise ResourceLimitError(f"{source}: refused to load: the pickle {e}; nothing was allocated") from None
    except _Refused as e:
        raise UnsafePickleError(f"{source}: refused to load: the pickle builds {e}, which is not plain data; "
                                "nothing from this file was executed") from None
    except RecursionError:
        raise CorruptFileError(f"{source}: file is not a valid pickle (nested too deeply)") from None
    except Exception as e:  # noqa: BLE001 - any other failure of restricted data is a malformed file
        kind = "truncated" if isinstance(e, EOFError) or "truncated" in str(e) else "not a valid pickle"
        raise CorruptFileError(f"{source}: file is {kind} ({type(e).__name__}: {e})") from None


def safe_load(path: str | Path) -> Any:
    """Read ``path`` and unpickle it with :func:`safe_loads`; a file over the size limit is not read."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ResourceLimitError(f"{path}: refused to load: {size:,} bytes, above the limit of "
                                     f"{MAX_FILE_BYTES:,} bytes (sim_bridge.safe_pickle.MAX_FILE_BYTES)")
        data = path.read_bytes()
    except OSError as e:
        raise CorruptFileError(f"{path}: cannot read file ({e.strerror or e})") from None
    if not data:
        raise CorruptFileError(f"{path}: file is empty")
    return safe_loads(data, str(path))
