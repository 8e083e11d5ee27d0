"""Turns `MODULE:ATTR` into a trainable (a Trainable subclass or a function),
with one line naming the problem and the fix when it cannot."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from typing import Any

from kubetune.sdk.errors import InvalidTrainable, describe, one_line
from kubetune.sdk.trainable import Trainable


def add_cwd_to_path() -> None:
    """Make the working directory importable, as `python -m` does, so that
    `examples.foo:Bar` works from a project's root."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _where(exc: BaseException) -> str:
    """` (at file.py:12)` for the innermost frame of the user's module."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f" (at {os.path.basename(exc.filename)}:{exc.lineno})"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "importlib" not in f.filename]
    if frames:
        return f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})"
    return ""


def _candidates(module: Any) -> list[str]:
    names = []
    for name, value in vars(module).items():
        if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
            continue
        if (inspect.isclass(value) and issubclass(value, Trainable)) or inspect.isfunction(value):
            names.append(name)
    return sorted(names)


def load_trainable(ref: str) -> Any:
    """The object `MODULE:ATTR` names, checked to be a usable trainable."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidTrainable(
            f"trainable {ref!r} must be MODULE:ATTR, e.g. examples.ray_class_trainable:MyTrainable"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise InvalidTrainable(
                f"cannot import module {module_name!r} (no module named {exc.name!r}): check the "
                "name, and run from the folder that holds it or add that folder to PYTHONPATH"
            ) from None
        raise InvalidTrainable(
            f"importing {module_name!r} failed: {one_line(exc)}{_where(exc)}: install the "
            "missing package in the environment that runs the trainable"
        ) from None
    except BaseException as exc:  # the user's module raised while importing
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise InvalidTrainable(
            f"importing {module_name!r} failed: {one_line(exc)}{_where(exc)}"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            found = _candidates(module)
            hint = f"it defines {', '.join(found)}" if found else "it defines no trainable"
            raise InvalidTrainable(f"module {module_name!r} has no attribute {attr!r}: {hint}")
        obj = getattr(obj, part)
    return check_trainable(obj, ref)


def _is_ray_trainable(cls: type) -> bool:
    return any(
        base.__name__ == "Trainable" and base.__module__.startswith("ray.") for base in cls.__mro__
    )


def check_trainable(obj: Any, ref: str | None = None) -> Any:
    """obj itself when it is a Trainable subclass or a function taking one config."""
    label = ref or getattr(obj, "__qualname__", repr(obj))
    if inspect.isclass(obj):
        if issubclass(obj, Trainable):
            return obj
        if _is_ray_trainable(obj):
            raise InvalidTrainable(
                f"{label} subclasses ray.tune.Trainable: change `from ray import tune` to "
                "`import kubetune as tune` in its module"
            )
        raise InvalidTrainable(
            f"{label} is a class but not a kubetune.Trainable subclass: subclass "
            "kubetune.Trainable, or point to a function taking a config dict"
        )
    if callable(obj):
        try:
            inspect.signature(obj).bind({})
        except TypeError:
            raise InvalidTrainable(
                f"{label} must take exactly one positional argument (the config dict): "
                "use kubetune.with_parameters for more"
            ) from None
        except ValueError:  # a builtin without a signature: let it run
            pass
        return obj
    raise InvalidTrainable(
        f"{label} is a {describe(obj)}, neither a kubetune.Trainable subclass nor a function"
    )
