"""Unpickling code shipped by value, also what kubetune 0.1.0 shipped: that
release was one flat package (kubetune.trainable, kubetune.function ...), and a
payload it pickled names kubetune's classes and functions by those module
paths. The unpickler finds each where it lives now (OLD_MODULES, OLD_SPLITS)
without putting the old names in sys.modules; a name with no home now is
refused in one line that names the release and the fix."""

from __future__ import annotations

import importlib
import io
import pickle
import sys
from types import ModuleType
from typing import Any

import cloudpickle

from kubetune.sdk.errors import InvalidTrainable

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
    "kubetune.checkpoint_dir": "kubetune.sdk.checkpoint_handle",
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
    "kubetune.progress": "kubetune.runtime.progress_builder",
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
# 0.1.0 modules whose names went to more than one home: where the names missing from
# the home above went (kubetune.errors.RunFailed, kubetune.checkpoints.RunStore ...).
OLD_SPLITS: dict[str, tuple[str, ...]] = {
    "kubetune.checkpoints": ("kubetune.storage.runfolder",),
    "kubetune.cli_jobs": ("kubetune.cli.jobs_parser",),
    "kubetune.cli_render": ("kubetune.cli.render_describe", "kubetune.cli.render_results"),
    "kubetune.errors": ("kubetune.runtime.outcome",),
    "kubetune.progress": ("kubetune_contract.progress",),
    "kubetune.trainable": ("kubetune.sdk.with_parameters",),
}


def _find_old(module: str, name: str) -> Any:
    """The 0.1.0 name module.name where it lives now; LookupError when it has no
    home (a module that fails to import for another reason raises its ImportError)."""
    for home in (OLD_MODULES[module], *OLD_SPLITS.get(module, ())):
        try:
            return getattr(importlib.import_module(home), name)
        except ModuleNotFoundError as exc:
            if exc.name != home:
                raise
        except AttributeError:
            pass
    raise LookupError(f"{module}.{name}")


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
        try:
            if hasattr(self._home_module, attr):
                value = getattr(self._home_module, attr)
            elif old in OLD_MODULES:  # a 0.1.0 submodule of the package
                home = importlib.import_module(OLD_MODULES[old])
                value = _OldModule(old, home, self._payload_sha)
            elif self.__name__ in OLD_MODULES:
                value = _find_old(self.__name__, attr)
            else:
                raise LookupError(old)
        except LookupError:
            raise AttributeError(_no_home(self._payload_sha, old)) from None
        setattr(self, attr, value)
        return value


class Unpickler(pickle.Unpickler):
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
            if module not in OLD_MODULES:
                raise
            try:
                found = _find_old(module, name)
            except LookupError:
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
        except ModuleNotFoundError as exc:
            if exc.name != OLD_MODULES[name]:
                raise
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


def load_payload(data: bytes, sha: str) -> Any:
    """cloudpickle.loads(data), also for what 0.1.0 shipped."""
    return Unpickler(data, sha).load_payload()
