"""Ray's `tune.with_parameters`, apart from the Trainable it wraps
(kubetune.sdk.trainable): large objects reach setup() or the training function
as keyword arguments, never through the (logged, stored) config."""

from __future__ import annotations

import functools
from typing import Any

from kubetune.sdk.errors import describe
from kubetune.sdk.trainable import Trainable


def with_parameters(trainable: Any, **kwargs: Any) -> Any:
    """Ray's `tune.with_parameters`: pass large objects to setup(config, **kwargs) or
    to the function as keyword arguments, outside the (logged) config."""
    if isinstance(trainable, type) and issubclass(trainable, Trainable):
        base: type[Trainable] = trainable
        user_setup: Any = base.setup

        class _WithParameters(base):  # type: ignore[valid-type,misc]
            def setup(self, config: dict[str, Any]) -> None:
                user_setup(self, config, **kwargs)

        _WithParameters.__name__ = base.__name__
        _WithParameters.__qualname__ = base.__qualname__
        return _WithParameters
    if callable(trainable):

        @functools.wraps(trainable)
        def _inner(config: dict[str, Any]) -> Any:
            return trainable(config, **kwargs)

        del _inner.__wrapped__  # its signature is (config), whatever the function takes
        return _inner
    raise TypeError(
        f"with_parameters() takes a Trainable subclass or a function, not {describe(trainable)}"
    )
