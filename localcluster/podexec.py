"""Starts one container's process the way a container runtime would, but
without an image: inside a private mount and UTS namespace (the node agent
runs this under `unshare --mount --uts --propagation private`), it
bind-mounts the pod's volumes, service-account token and termination-message
file at their container paths, sets the hostname to the pod's name, then
execs the command with exactly the pod's environment.

Run as `python -I -S podexec.py SPEC.json`; stdlib only, so it starts fast.
Exit code 127 with a message on stderr when the command cannot be started.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def bind(source: str, target: str, read_only: bool) -> None:
    """Bind `source` over `target`, creating the mount point if it is missing."""
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target) or "/", exist_ok=True)
        open(target, "ab").close()
    _check(
        _libc.mount(source.encode(), target.encode(), None, MS_BIND | MS_REC, None),
        f"bind-mount {source} on {target}",
    )
    if read_only:
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY
        _check(
            _libc.mount(None, target.encode(), None, flags, None),
            f"remount {target} read-only",
        )


def main(spec_path: str) -> int:
    with open(spec_path) as fh:
        spec = json.load(fh)
    try:
        hostname = spec["hostname"].encode()
        _check(_libc.sethostname(hostname, len(hostname)), "sethostname")
        # Parents before children, so a volume under another volume stays visible.
        for mount in sorted(spec["mounts"], key=lambda m: m["target"].count("/")):
            bind(mount["source"], mount["target"], mount.get("readOnly", False))
        os.chdir(spec["cwd"])
        os.execvpe(spec["argv"][0], spec["argv"], spec["env"])
    except OSError as err:
        print(f"kubetune node agent: cannot start container: {err}", file=sys.stderr)
        try:
            with open(spec["terminationFile"], "w") as fh:
                fh.write(f"cannot start container: {err}")
        except OSError:
            pass
        return 127
    return 127  # not reached: execvpe replaced this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
