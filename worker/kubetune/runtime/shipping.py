"""Shipping a trainable by value: a class or function written in a notebook,
`__main__` or a local module reaches a worker pod whose image lacks that code.

The client pickles it here (`pack`) and uploads it into the job's own run
folder at `CODE_DIR<sha256>.pkl`; the TrainableJob names it in `spec.code`
(`{uri, sha256, python}`). Unpickling runs code, so the worker's `load_shipped`
checks everything first, in an order where nothing is read from elsewhere and
nothing is unpickled unless it is byte for byte what was submitted: the spec's
shape, the URI's place (`protocol.is_within_run`, which the operator checks
too), the Python version, the size, the digest; only then `cloudpickle.loads`.
Every refusal is an `InvalidTrainable` (exit code 3: the job ends Failed with
the message).

Code shipped by kubetune 0.1.0 (one flat package) still loads: see
kubetune.runtime.old_payloads.

Third-party packages are never shipped: they are pickled by reference and must
be installed in the worker image.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import sys
import sysconfig
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle

from kubetune.runtime.loader import check_trainable
from kubetune.runtime.old_payloads import OLD_LAYOUT, OLD_MODULES, OLD_SPLITS, load_payload
from kubetune.sdk.errors import InvalidTrainable, describe, one_line
from kubetune.storage import Storage
from kubetune_contract import CODE_DIR, code_key, code_uri, is_sha256_hex, is_within_run

__all__ = [
    "CODE_DIR",
    "MAX_BYTES",
    "OLD_LAYOUT",
    "OLD_MODULES",
    "OLD_SPLITS",
    "WARN_BYTES",
    "code_key",
    "code_uri",
    "digest",
    "is_within_run",
    "load_shipped",
    "pack",
    "python_version",
]

MiB = 1024 * 1024
# A pickled trainable is code plus whatever its closures and class attributes
# hold; past these sizes it almost always carries data that setup() should read.
WARN_BYTES = 10 * MiB
MAX_BYTES = 100 * MiB

# Never shipped by value even when installed from a source tree: the worker
# image has its own copy, and a pickled copy of the framework would shadow it.
_NEVER_BY_VALUE = frozenset({"kubetune", "kubetune_operator"})
_PYTHON = re.compile(r"(\d+)\.(\d+)(?:\.\d+)?")
# register_pickle_by_value changes cloudpickle's process-wide registry.
_REGISTRY_LOCK = threading.Lock()


# --- pure helpers ----------------------------------------------------------------


def digest(data: bytes) -> str:
    """The sha256 of data, as lowercase hex (what spec.code.sha256 holds)."""
    return hashlib.sha256(data).hexdigest()


def python_version() -> str:
    """This interpreter's major.minor ("3.11"): pickled code runs only on the same."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _size(n: int) -> str:
    return f"{n / MiB:.1f} MiB" if n >= MiB // 10 else f"{n} bytes"


# --- the client side: pack --------------------------------------------------------


def _library_paths() -> list[Path]:
    keys = ("stdlib", "platstdlib", "purelib", "platlib")
    return [Path(p).resolve() for k in keys if (p := sysconfig.get_paths().get(k))]


def _is_local(module: ModuleType) -> bool:
    """Whether module's code lives outside the standard library and installed
    packages (so the worker image may lack it)."""
    if module.__name__.partition(".")[0] in _NEVER_BY_VALUE:
        return False
    file = getattr(module, "__file__", None)
    paths = [file] if file else list(getattr(module, "__path__", None) or [])
    if not paths:
        return False  # built in, frozen: the image has it
    libraries = _library_paths()
    for raw in paths:
        path = Path(raw).resolve()
        if {"site-packages", "dist-packages"} & set(path.parts):
            return False
        if any(path.is_relative_to(lib) for lib in libraries):
            return False
    return True


def _by_value_root(obj: Any) -> ModuleType | None:
    """The outermost local package holding obj's module (so sibling local
    modules it uses travel too), or None when cloudpickle needs no help:
    `__main__` is pickled by value already, installed packages by reference."""
    name = getattr(obj, "__module__", None)
    if not isinstance(name, str) or name == "__main__" or name not in sys.modules:
        return None
    parts = name.split(".")
    for depth in range(1, len(parts) + 1):
        module = sys.modules.get(".".join(parts[:depth]))
        if module is not None and _is_local(module):
            return module
    return None


def importable_name(obj: Any) -> str | None:
    """MODULE:ATTR when obj comes from the standard library, kubetune or an
    installed package (an image built from the same packages imports it);
    None when it must be shipped by value (__main__, a notebook, a local
    module, or a name that does not lead back to it)."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", "")
    if not isinstance(module, str) or module == "__main__" or "<" in qualname:
        return None
    if module not in sys.modules or _by_value_root(obj) is not None:
        return None
    return f"{module}:{qualname}"


def _check_packable(obj: Any) -> str:
    """obj's label when it is a Trainable subclass or a function; else InvalidTrainable."""
    if not inspect.isclass(obj) and not callable(obj):
        from kubetune.sdk.trainable import Trainable

        if isinstance(obj, Trainable):
            raise InvalidTrainable(
                f"cannot ship a {describe(obj)} instance: pass the class itself "
                f"({type(obj).__name__}), the worker creates the instance"
            )
    check_trainable(obj)
    return str(getattr(obj, "__qualname__", None) or describe(obj))


def pack(obj: Any) -> bytes:
    """obj (a Trainable subclass or a function) pickled by value with
    cloudpickle: its code travels, also from a local module; installed
    packages do not (the worker image must have them). Warns above WARN_BYTES,
    raises InvalidTrainable above MAX_BYTES or for anything else than a
    trainable."""
    label = _check_packable(obj)
    root = _by_value_root(obj)
    with _REGISTRY_LOCK:
        register = root is not None and root.__name__ not in (
            cloudpickle.list_registry_pickle_by_value()
        )
        if register:
            assert root is not None
            cloudpickle.register_pickle_by_value(root)
        try:
            data = cloudpickle.dumps(obj)
        except Exception as exc:
            raise InvalidTrainable(
                f"{label} cannot be pickled to ship it: {one_line(exc)}; keep open files, "
                "locks and clients out of the class and its module (create them in setup)"
            ) from exc
        finally:
            if register:
                assert root is not None
                cloudpickle.unregister_pickle_by_value(root)
    if len(data) > MAX_BYTES:
        raise InvalidTrainable(
            f"the pickled trainable {label} is {_size(len(data))}, above the "
            f"{_size(MAX_BYTES)} limit; keep data out of the class (read it in setup), "
            "its module and with_parameters, or put the code in the image and name it "
            "as MODULE:ATTR"
        )
    if len(data) > WARN_BYTES:
        warnings.warn(
            f"the pickled trainable {label} is {_size(len(data))} (above "
            f"{_size(WARN_BYTES)}): it likely carries data; keep data out of the class "
            "(read it in setup)",
            stacklevel=2,
        )
    return data


# --- the worker side: load_shipped ------------------------------------------------


def _check_spec(code: Any) -> tuple[str, str, tuple[int, int]]:
    """(uri, sha256, (major, minor)) of a well-formed spec.code."""
    fix = "submit the trainable again with kubetune.submit"
    if not isinstance(code, dict):
        raise InvalidTrainable(
            f"spec.code must be an object {{uri, sha256, python}}, not {describe(code)}: {fix}"
        )
    uri, sha, python = code.get("uri"), code.get("sha256"), code.get("python")
    if not isinstance(uri, str) or not uri:
        raise InvalidTrainable(f"spec.code.uri must be a non-empty string, got {uri!r}: {fix}")
    if not is_sha256_hex(sha):
        raise InvalidTrainable(
            f"spec.code.sha256 must be 64 lowercase hex digits, got {sha!r}: {fix}"
        )
    match = _PYTHON.fullmatch(python) if isinstance(python, str) else None
    if match is None:
        raise InvalidTrainable(
            f'spec.code.python must be a Python version such as "3.11", got {python!r}: {fix}'
        )
    assert isinstance(sha, str)
    return uri, sha, (int(match.group(1)), int(match.group(2)))


def _unpickle(data: bytes, sha: str) -> Any:
    try:
        return load_payload(data, sha)
    except InvalidTrainable:
        raise
    except ImportError as exc:  # ModuleNotFoundError included
        missing = getattr(exc, "name", None)
        what = f"module {missing!r}" if missing else f"an import ({one_line(exc)})"
        raise InvalidTrainable(
            f"the shipped trainable (sha256 {sha[:12]}) needs {what}, which this worker "
            "image lacks: third-party packages are not shipped with the code, they must "
            "be installed in the worker image (spec.image)"
        ) from None
    except Exception as exc:
        raise InvalidTrainable(
            f"the shipped trainable (sha256 {sha[:12]}) does not unpickle: {one_line(exc)}; "
            "use a worker image with the same kubetune and packages as where it was submitted"
        ) from None


def load_shipped(code: Any, run_uri: str, storage_opener: Callable[[str], Storage]) -> Any:
    """The trainable that spec.code names, after checking, in this order: the
    spec's shape, that the URI is the run folder's own code object, the Python
    version, the size, and the digest of the bytes; only then is it
    unpickled, and the result checked to be a trainable. storage_opener(uri)
    opens a Storage (kubetune.storage.open_storage with the job's endpoint);
    its StorageError passes through. Every refusal is InvalidTrainable."""
    uri, sha, (major, minor) = _check_spec(code)
    if not is_within_run(run_uri, uri):
        raise InvalidTrainable(
            f"code URI {uri} is outside the job's run folder {run_uri}: nothing is "
            f"unpickled from elsewhere; kubetune.submit uploads it to "
            f"{code_uri(run_uri, '<sha256>')}"
        )
    if uri != code_uri(run_uri, sha):
        raise InvalidTrainable(
            f"code URI {uri} does not name spec.code.sha256 {sha}: nothing is unpickled; "
            "submit the trainable again with kubetune.submit"
        )
    here = (sys.version_info.major, sys.version_info.minor)
    if (major, minor) != here:
        theirs, ours = f"{major}.{minor}", python_version()
        raise InvalidTrainable(
            f"shipped from Python {theirs}, this worker runs {ours}: use an image with "
            f"Python {theirs}, or submit from {ours}"
        )
    store = storage_opener(run_uri)
    key = code_key(sha)
    size = store.size(key)
    if size is None:
        raise InvalidTrainable(
            f"shipped code {uri} does not exist: its upload never finished or the run "
            "folder was cleaned; submit the trainable again"
        )
    if size > MAX_BYTES:
        raise InvalidTrainable(
            f"shipped code {uri} is {_size(size)}, above the {_size(MAX_BYTES)} limit: "
            "nothing is unpickled"
        )
    data = store.read_bytes(key)
    if data is None:
        raise InvalidTrainable(
            f"shipped code {uri} vanished while it was read: submit the trainable again"
        )
    if len(data) > MAX_BYTES:
        raise InvalidTrainable(
            f"shipped code {uri} is {_size(len(data))}, above the {_size(MAX_BYTES)} "
            "limit: nothing is unpickled"
        )
    actual = digest(data)
    if actual != sha:
        raise InvalidTrainable(
            f"shipped code {uri} has sha256 {actual}, not {sha} as spec.code says: the "
            "shipped code was changed after submit; nothing is unpickled, submit again"
        )
    obj = _unpickle(data, sha)
    label = f"{getattr(obj, '__qualname__', describe(obj))} (shipped code {sha[:12]})"
    return check_trainable(obj, label)
