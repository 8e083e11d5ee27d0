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

Code shipped by kubetune 0.1.0 (one flat package: kubetune.trainable,
kubetune.function ...) still loads: the unpickler finds what it names by an old
module path where it lives now (OLD_MODULES, OLD_NAMES), without putting the old
names in sys.modules; a name with no home now is refused in one line.

Third-party packages are never shipped: they are pickled by reference and must
be installed in the worker image.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import io
import pickle
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
from kubetune.sdk.errors import InvalidTrainable, describe, one_line
from kubetune.storage import Storage
from kubetune_contract import CODE_DIR, code_key, code_uri, is_sha256_hex, is_within_run

__all__ = [
    "CODE_DIR",
    "MAX_BYTES",
    "OLD_LAYOUT",
    "OLD_MODULES",
    "OLD_NAMES",
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


# --- the worker side: what 0.1.0 shipped -------------------------------------------

# kubetune 0.1.0 was one flat package. A payload it pickled names kubetune's classes
# and functions by their module there (a Trainable subclass's base is
# kubetune.trainable.Trainable; `from kubetune.function import report` is
# kubetune.function.report), and modules by cloudpickle's subimport("kubetune.result").
OLD_LAYOUT = (
    "kubetune 0.1.0 as released (the flat package: kubetune.trainable, kubetune.function ...)"
)
# 0.1.0's modules and their homes now.
OLD_MODULES: dict[str, str] = {
    "kubetune.api": "kubetune.runtime.api",
    "kubetune.checkpoint_dir": "kubetune.sdk.checkpoint",
    "kubetune.checkpoints": "kubetune.storage.checkpoints",
    "kubetune.cli": "kubetune.cli.command",  # now a package: its own names first
    "kubetune.cli_args": "kubetune.cli.args",
    "kubetune.cli_jobs": "kubetune.cli.jobs",
    "kubetune.cli_render": "kubetune.cli.render",
    "kubetune.cli_watch": "kubetune.cli.watch",
    "kubetune.display": "kubetune.runtime.display",
    "kubetune.drive_function": "kubetune.runtime.function_driver",
    "kubetune.entry": "kubetune.runtime.exiting",
    "kubetune.errors": "kubetune.sdk.errors",
    "kubetune.function": "kubetune.sdk.function",
    "kubetune.loader": "kubetune.runtime.loader",
    "kubetune.loop": "kubetune.runtime.loop",
    "kubetune.metric_names": "kubetune.sdk.metric_names",
    "kubetune.monitor": "kubetune.sdk.monitor",
    "kubetune.outcome": "kubetune.runtime.outcome",
    "kubetune.persist": "kubetune.runtime.persist",
    "kubetune.policy": "kubetune.sdk.checkpoint_config",
    "kubetune.progress": "kubetune.runtime.progress",
    "kubetune.protocol": "kubetune_contract",
    "kubetune.push": "kubetune.runtime.push",
    "kubetune.result": "kubetune.sdk.result_keys",
    "kubetune.results": "kubetune.storage.results",
    "kubetune.shipping": "kubetune.runtime.shipping",
    "kubetune.signals": "kubetune.runtime.signals",
    "kubetune.stopping": "kubetune.sdk.stopping",
    "kubetune.tracebacks": "kubetune.runtime.tracebacks",
    "kubetune.trainable": "kubetune.sdk.trainable",
}
# Names that went elsewhere than the rest of their 0.1.0 module: (module, name) -> home.
OLD_NAMES: dict[tuple[str, str], str] = {
    ("kubetune.checkpoints", "RunConflictError"): "kubetune.storage.runfolder",
    ("kubetune.checkpoints", "RunStore"): "kubetune.storage.runfolder",
    ("kubetune.errors", "RunFailed"): "kubetune.runtime.outcome",
    **{
        ("kubetune.progress", name): "kubetune_contract.progress"
        for name in ("RUNNING", "COMPLETED", "STOPPED", "FAILED", "MAX_CHECKPOINTS")
    },
}


def _old_home(module: str, name: str) -> str | None:
    """Where the 0.1.0 name module.name lives now, or None when module is not 0.1.0's."""
    return OLD_NAMES.get((module, name)) or OLD_MODULES.get(module)


def _no_home(sha: str, name: str) -> str:
    """The one-line refusal of a payload naming a 0.1.0 name that has no home now.
    spec.code records no kubetune version: the old module path names the release."""
    return (
        f"the shipped trainable (sha256 {sha[:12]}) refers to {name}, which has no home "
        f"in this worker's kubetune: it was likely pickled by {OLD_LAYOUT}; submit it "
        f"again with the current kubetune (kubetune.submit pickles it anew), using the "
        f"current API in place of {name}"
    )


class _OldModule(ModuleType):
    """A 0.1.0 module as a payload holds it (`from kubetune import function`,
    `import kubetune as tune` with `tune.policy...`): each attribute comes from its
    home now. The view is the payload's own: nothing enters sys.modules, so
    `import kubetune.function` still fails after the load."""

    def __init__(self, name: str, home: ModuleType, sha: str) -> None:
        super().__init__(name, home.__doc__)
        self._home_module = home
        self._payload_sha = sha

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        old = f"{self.__name__}.{attr}"
        moved = OLD_NAMES.get((self.__name__, attr))
        try:
            if old in OLD_MODULES and not hasattr(self._home_module, attr):
                value: Any = _OldModule(
                    old, importlib.import_module(OLD_MODULES[old]), self._payload_sha
                )
            elif moved is not None:
                value = getattr(importlib.import_module(moved), attr)
            else:
                value = getattr(self._home_module, attr)
        except (ImportError, AttributeError):
            raise AttributeError(_no_home(self._payload_sha, old)) from None
        setattr(self, attr, value)
        return value


class _Unpickler(pickle.Unpickler):
    """cloudpickle.loads, which also finds what a 0.1.0 payload names by its old
    module path (see OLD_MODULES), and refuses a name that has no home now."""

    def __init__(self, data: bytes, sha: str) -> None:
        super().__init__(io.BytesIO(data))
        self.sha = sha
        self.old_modules: set[str] = set()
        # The globals of every function the payload carries by value.
        self.function_globals: dict[int, dict[str, Any]] = {}

    def find_class(self, module: str, name: str, /) -> Any:
        try:
            found = super().find_class(module, name)
        except (ImportError, AttributeError):
            home = _old_home(module, name)
            if home is None:
                raise
            try:
                found = getattr(importlib.import_module(home), name)
            except (ImportError, AttributeError):
                raise InvalidTrainable(_no_home(self.sha, f"{module}.{name}")) from None
        if found is cloudpickle.cloudpickle.subimport:
            return self._subimport
        if found is cloudpickle.cloudpickle._make_function:
            return self._make_function
        return found

    def _subimport(self, name: str) -> ModuleType:
        try:
            module: ModuleType = cloudpickle.cloudpickle.subimport(name)
            return module
        except ImportError:
            if name not in OLD_MODULES:
                raise
        try:
            home = importlib.import_module(OLD_MODULES[name])
        except ImportError:
            raise InvalidTrainable(_no_home(self.sha, f"the module {name}")) from None
        self.old_modules.add(name)
        return _OldModule(name, home, self.sha)

    def _make_function(self, *args: Any) -> Any:
        function = cloudpickle.cloudpickle._make_function(*args)
        self.function_globals[id(function.__globals__)] = function.__globals__
        return function

    def load_payload(self) -> Any:
        obj = self.load()
        package = sys.modules.get("kubetune")
        if self.old_modules and package is not None:
            # The payload imported 0.1.0 submodules: its functions may reach them
            # through the package (`kubetune.policy.CheckpointConfig`), so their
            # `kubetune` becomes a view that also has the old submodules.
            view = _OldModule(package.__name__, package, self.sha)
            for names in self.function_globals.values():
                for key, value in list(names.items()):
                    if value is package:
                        names[key] = view
        return obj


def _load(data: bytes, sha: str) -> Any:
    """cloudpickle.loads(data), also for what 0.1.0 shipped."""
    return _Unpickler(data, sha).load_payload()


def _unpickle(data: bytes, sha: str) -> Any:
    try:
        return _load(data, sha)
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
