"""Runs as root inside fresh PID, network and mount namespaces (started by ``unshare``), makes the
world-writable directories unwritable, limits resources, drops to an unprivileged user and executes
the sandboxed program as its child. Standard library only: it runs under ``python -I -S`` with an
empty environment.

argv[1] is a JSON object: scratch, uid, gid, python, argv, rlimits ({name: [soft, hard]}), hide (directories
to cover with an empty root-owned tmpfs).
"""

import ctypes
import json
import os
import resource
import sys

MS_BIND = 4096


def _mount(libc, source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    enc = lambda s: None if s is None else s.encode()
    if libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def main() -> None:
    cfg = json.loads(sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    scratch = cfg["scratch"]
    keep = os.open(scratch, os.O_PATH | os.O_DIRECTORY)
    for d in cfg["hide"]:
        if os.path.isdir(d) and not os.path.islink(d):
            _mount(libc, "tmpfs", d, "tmpfs", 0, "size=64k,mode=755")
    os.makedirs(scratch, exist_ok=True)  # re-created inside the tmpfs when the scratch lived under it
    _mount(libc, f"/proc/self/fd/{keep}", scratch, None, MS_BIND, None)
    os.close(keep)
    os.chdir(scratch)
    # This process is PID 1 of the namespace, which ignores signals it has no handler for (SIGXCPU
    # included): run the program as its child, and report a death by signal as 128 + signal.
    pid = os.fork()
    if pid == 0:
        for name, value in cfg["rlimits"].items():
            resource.setrlimit(getattr(resource, name), tuple(value))
        os.setgroups([])
        os.setgid(cfg["gid"])
        os.setuid(cfg["uid"])
        os.execve(cfg["python"], [cfg["python"], *cfg["argv"]], {})
    while True:  # reap orphans too, until the program itself exits
        done, status = os.wait()
        if done == pid:
            break
    sys.exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))


if __name__ == "__main__":
    main()
