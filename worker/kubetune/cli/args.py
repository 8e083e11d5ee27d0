"""The command line's value syntaxes, parsed into what the SDK takes: a config
as JSON, @FILE or KEY=VALUE pairs, labels, resources. Pure; each bad value is
one InvalidSettings naming the flag and an example. Also the flags `run` and
`submit` both take, declared once so the two commands spell them alike."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from typing import Any

from kubetune.sdk.errors import InvalidSettings

GPU_RESOURCE = "nvidia.com/gpu"
_TRAINABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def add_repeatable(parser: argparse.ArgumentParser, flag: str, metavar: str, help: str) -> None:
    """A flag taking one or more values, given once or several times."""
    parser.add_argument(
        flag, nargs="+", action="extend", default=[], metavar=metavar, help=help + "; repeatable"
    )


def add_checkpoint_options(parser: argparse.ArgumentParser, *, local: bool) -> None:
    """The checkpoint flags of `run` and `submit`. A local run (`local`) fills in
    the SDK's defaults here; submit leaves them unset, so the job's spec omits
    them and the CRD's defaults apply."""
    parser.add_argument(
        "--checkpoint-frequency",
        type=int,
        default=0 if local else None,
        metavar="N",
        help="save every N iterations",
    )
    parser.add_argument(
        "--checkpoint-at-end",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="save when the run completes"
        + (" (default: on for class trainables)" if local else ""),
    )
    parser.add_argument(
        "--num-to-keep", type=int, metavar="N", help="keep N checkpoints (and latest, best)"
    )
    parser.add_argument("--score-attribute", metavar="KEY", help="rank checkpoints by this metric")
    parser.add_argument(
        "--score-order",
        choices=["max", "min"],
        default="max" if local else None,
        help="with --score-attribute",
    )


def parse_config(raw: str) -> dict[str, Any]:
    """A JSON object, or @FILE holding one."""
    text = raw
    if raw.startswith("@"):
        try:
            with open(raw[1:], encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise InvalidSettings(f"--config {raw}: cannot read it ({exc.strerror})") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidSettings(
            f"--config is not valid JSON ({exc}): pass e.g. '{{\"lr\": 0.01}}'"
        ) from None
    if not isinstance(value, dict):
        raise InvalidSettings("--config must be a JSON object, e.g. '{\"lr\": 0.01}'")
    return value


def parse_value(raw: str) -> Any:
    """A command-line value as JSON when it parses (0.01, 3, true, [1,2],
    {"a":1}, null), else the string itself (adam, /data/x)."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_config_args(items: Sequence[str]) -> dict[str, Any]:
    """`--config` given any number of times, merged left to right: KEY=VALUE
    (VALUE as JSON when it parses, else a string), a JSON object, or @FILE."""
    config: dict[str, Any] = {}
    for item in items:
        text = item.strip()
        if text.startswith(("@", "{")) or "=" not in text:
            config.update(parse_config(text))
            continue
        key, _, raw = text.partition("=")
        if not key.strip():
            raise InvalidSettings(f"--config {item!r}: KEY=VALUE needs a key, e.g. lr=0.01")
        config[key.strip()] = parse_value(raw.strip())
    return config


def parse_pairs(items: Sequence[str], flag: str, example: str) -> dict[str, str]:
    """KEY=VALUE strings (labels, resources) as a dict; a repeated key: the last wins."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise InvalidSettings(f"{flag} {item!r} must be KEY=VALUE, e.g. {example}")
        out[key] = value
    return out


def parse_resources(gpus: int | None, items: Sequence[str]) -> dict[str, str] | None:
    """The worker container's limits: --resources KEY=QUANTITY ... and --gpus N
    (nvidia.com/gpu). None when neither is given (the operator's defaults)."""
    limits = parse_pairs(items, "--resources", "cpu=4 memory=16Gi nvidia.com/gpu=1")
    if gpus is not None:
        if gpus < 0:
            raise InvalidSettings(f"--gpus {gpus}: give a count of 0 or more")
        given = limits.get(GPU_RESOURCE)
        if given is not None and given != str(gpus):
            raise InvalidSettings(
                f"--gpus {gpus} and --resources {GPU_RESOURCE}={given} disagree: give one"
            )
        if gpus:
            limits[GPU_RESOURCE] = str(gpus)
    return limits or None


def check_trainable(reference: str) -> str:
    """MODULE:ATTR as written (imported in the worker image, not here)."""
    if not _TRAINABLE.match(reference):
        raise InvalidSettings(
            f"{reference!r} is not MODULE:ATTR: name the trainable as the image imports it, "
            "e.g. examples.mnist:MNISTTrainable"
        )
    return reference
