"""Starts one container's process the way a container runtime would, but
without an image: inside a private mount and UTS namespace (the node agent
runs this under `unshare --mount --uts --propagation private`), it
bind-mounts the pod's volumes, service-account token and termination-message
file at their container paths, sets the hostname to the pod's name, then
execs the command with exactly the pod's environment.

Run as `python -I -S launcher.py SPEC.json` (containers.py starts it); stdlib
only, so it starts fast. Exit code 127 with a message on stderr when the
command cannot be started.
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


def bind(source: str, target: str, read_only: bool, via: str | None = None) -> None:
    """Bind `source` (reached through `via`, an open descriptor's path, when
    given) over `target`, creating the mount point if it is missing."""
    reach = via or source
    if os.path.isdir(reach):
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target) or "/", exist_ok=True)
        open(target, "ab").close()
    _check(
        _libc.mount(reach.encode(), target.encode(), None, MS_BIND | MS_REC, None),
        f"bind-mount {source} on {target}",
    )
    if read_only:
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY
        _check(
            _libc.mount(None, target.encode(), None, flags, None),
            f"remount {target} read-only",
        )


def _same_file(path: str, fd: int) -> bool:
    try:
        a, b = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def main(spec_path: str) -> int:
    with open(spec_path) as fh:
        spec = json.load(fh)
    try:
        hostname = spec["hostname"].encode()
        _check(_libc.sethostname(hostname, len(hostname)), "sethostname")
        # Hold every source open first: a volume mounted over a parent of
        # another source (an emptyDir on /tmp, with the pod folders under /tmp)
        # would otherwise hide it before its turn comes.
        mounts = [
            dict(m, held=os.open(m["source"], os.O_PATH | os.O_CLOEXEC)) for m in spec["mounts"]
        ]
        image = spec.get("image")
        image_fd = os.open(image, os.O_PATH | os.O_CLOEXEC) if image else None
        # Parents before children, so a volume under another volume stays visible.
        for mount in sorted(mounts, key=lambda m: m["target"].count("/")):
            bind(
                mount["source"],
                mount["target"],
                mount.get("readOnly", False),
                via=f"/proc/self/fd/{mount['held']}",
            )
        if image and image_fd is not None and not _same_file(image, image_fd):
            # A volume hid the "image" (the project folder, say under an emptyDir
            # on /tmp); in a real container the image's files stay visible.
            bind(image, image, False, via=f"/proc/self/fd/{image_fd}")
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
