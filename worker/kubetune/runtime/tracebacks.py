"""A user's traceback without kubetune's own frames: when a step fails, the
frames worth reading are the trainable's, not the loop's."""

from __future__ import annotations

import os
import traceback

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def format_user_traceback(exc: BaseException, keep_all: bool = False) -> str:
    """The traceback of exc (and its causes), minus frames inside the kubetune
    package unless keep_all (for kubetune's own bugs)."""
    lines: list[str] = []
    frames = 0
    for part in traceback.TracebackException.from_exception(exc).format():
        if part.lstrip().startswith('File "'):
            path = part.split('"', 2)[1]
            if not keep_all and os.path.abspath(path).startswith(_PACKAGE_DIR):
                continue
            frames += 1
        lines.append(part)
    # Without a frame of the user's left, the exit line already says it all.
    return "".join(lines) if frames else ""
