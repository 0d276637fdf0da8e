"""Run untrusted Python against tests in a limited subprocess, and a code reward built on it.

Layers, strongest first; :func:`isolation_report` says which hold on this machine:

* **namespaces** (Linux, root with CAP_SYS_ADMIN, ``unshare`` from util-linux): a fresh PID namespace
  (everything the program forks dies with it), a network namespace with only a downed loopback (no
  network), and a mount namespace where /tmp, /var/tmp, /dev/shm and /run/lock are covered by empty
  root-owned tmpfs, so the only writable place is the scratch directory;
* **an unprivileged user** (uid 65534 when run as root): root ignores RLIMIT_NPROC (the kernel
  exempts uid 0 and CAP_SYS_ADMIN), so the process-count limit holds only after dropping to another
  user; it also makes the rest of the file system read-only to the program;
* **resource limits**, always: wall-clock timeout (the process group is killed), RLIMIT_CPU,
  RLIMIT_AS (memory), RLIMIT_NPROC, RLIMIT_FSIZE (which also caps captured output), RLIMIT_NOFILE,
  no core dumps; an empty environment (no inherited secrets) and the scratch directory as cwd;
* **an audit hook** in the program's interpreter (``python -I -S``) refusing writes outside the
  scratch directory and socket use: not a security boundary by itself (Python's docs say so), but it
  keeps the guarantees where the OS layers are unavailable (not root, not Linux).
"""

from __future__ import annotations

import functools
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openm1.rewards.base import RewardResult

NOBODY = 65534
HIDDEN_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
_JAIL = str(Path(__file__).with_name("_jail.py"))

_RUNNER = r"""
import os, sys
_root = os.path.realpath(os.getcwd())
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_EVENTS = {"os.remove", "os.rmdir", "os.mkdir", "os.rename", "os.symlink", "os.link", "os.truncate",
                "os.chmod", "os.chown", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile"}
def _inside(p):
    p = os.path.realpath(os.fsdecode(p))
    return p == _root or p.startswith(_root + os.sep) or p in ("/dev/null", "/dev/stdout", "/dev/stderr")
def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        writing = mode is not None and any(c in mode for c in "wax+")
        writing = writing or (isinstance(flags, int) and flags & _WRITE)
        if writing and not isinstance(path, int) and not _inside(path):
            raise PermissionError("sandbox: writing outside the scratch directory is refused: %s" % (path,))
    elif event in _PATH_EVENTS:
        for p in args[:2]:
            if isinstance(p, (str, bytes, os.PathLike)) and not _inside(p):
                raise PermissionError("sandbox: %s outside the scratch directory is refused" % event)
    elif event in ("socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo"):
        raise PermissionError("sandbox: network access is refused")
    elif BLOCK_PROCS and event in _PROC_EVENTS:
        raise PermissionError("sandbox: starting processes is refused (no process limit can hold here)")
_PROC_EVENTS = {"os.fork", "os.forkpty", "os.system", "os.posix_spawn", "os.spawn", "os.exec",
                "subprocess.Popen"}
if AUDIT:
    sys.addaudithook(_hook)
sys.argv = ["main.py"]
sys.path.insert(0, _root)  # -I leaves the script's directory off the path; the program's files are here
with open("main.py") as f:
    _code = compile(f.read(), "main.py", "exec")
del f
exec(_code, {"__name__": "__main__", "__file__": "main.py"})
"""


def _runner(audit: bool, block_procs: bool) -> str:
    # Root without namespaces: the kernel ignores RLIMIT_NPROC for uid 0, so the hook refuses forks.
    return _RUNNER.replace("AUDIT", str(audit)).replace("BLOCK_PROCS", str(block_procs))


@dataclass
class SandboxLimits:
    """What one run may use. Defaults suit unit tests of small programs."""

    timeout_s: float = 5.0
    """Wall-clock limit; the whole process group (and PID namespace) is killed past it."""
    cpu_s: int = 5
    """RLIMIT_CPU: CPU seconds (SIGXCPU then SIGKILL)."""
    memory_mb: int = 512
    """RLIMIT_AS: address space of each process (the interpreter alone needs about 30 MB)."""
    max_procs: int = 16
    """RLIMIT_NPROC: processes of the sandbox user (uid 65534), counted across all runs at once, so
    concurrent runs share it; as root it holds only with namespaces (see the module docs)."""
    file_size_mb: int = 8
    """RLIMIT_FSIZE: largest file the program may write, its captured stdout/stderr included."""
    open_files: int = 64
    """RLIMIT_NOFILE."""


@dataclass
class SandboxResult:
    """The outcome of one run; ``status`` is one of ok, error, timeout, memory, output_limit, killed."""

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _python_candidates(python: str | None) -> list[str]:
    if python:
        return [python]
    found = [
        sys.executable,
        getattr(sys, "_base_executable", ""),
        shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or "",
    ]
    return list(dict.fromkeys(p for p in found if p))


def _probe_jail(unshare: str, python: str) -> str:
    """'' when ``python`` runs as the unprivileged user inside the namespaces, else the error."""
    with tempfile.TemporaryDirectory(prefix="openm1-probe-") as d:
        os.chmod(d, 0o755)
        os.chown(d, NOBODY, NOBODY)
        cfg = _jail_cfg(d, python, ["-I", "-S", "-c", "import os; print(os.getuid())"], SandboxLimits())
        try:
            p = subprocess.run(_jail_argv(unshare, cfg), capture_output=True, text=True, timeout=20, env={})
        except (OSError, subprocess.SubprocessError) as e:
            return repr(e)
        if p.returncode == 0 and p.stdout.strip() == str(NOBODY):
            return ""
        return (
            (p.stderr or p.stdout).strip().splitlines()[-1:][0][-300:] if (p.stderr or p.stdout) else "failed"
        )


@functools.cache
def isolation_report(python: str | None = None) -> dict[str, Any]:
    """What the sandbox can enforce here, probed once. With namespaces the program's interpreter must be
    executable by the unprivileged user: ``python`` if given, else the first of this interpreter, its
    base interpreter and the system ``python3`` that is (a virtual environment under /root is not)."""
    rep: dict[str, Any] = {
        "platform": sys.platform,
        "root": os.geteuid() == 0,
        "python": python or sys.executable,
    }
    rep["namespaces"] = False
    unshare = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")
    if sys.platform.startswith("linux") and rep["root"] and unshare:
        errors = []
        for candidate in _python_candidates(python):
            err = _probe_jail(unshare, candidate)
            if not err:
                rep["namespaces"], rep["python"], rep["unshare"] = True, candidate, unshare
                break
            errors.append(f"{candidate}: {err}")
        if errors and not rep["namespaces"]:
            rep["namespaces_error"] = "; ".join(errors)
    ns = rep["namespaces"]
    rep["network"] = (
        "isolated (empty network namespace)" if ns else "audit hook only (Python sockets refused)"
    )
    rep["filesystem"] = (
        "read-only outside scratch (unprivileged user; world-writable dirs covered by tmpfs)"
        if ns
        else "audit hook only (Python writes outside scratch refused)"
    )
    rep["processes"] = (
        f"RLIMIT_NPROC as uid {NOBODY}; PID namespace killed with the run"
        if ns
        else (
            "RLIMIT_NPROC ignored for root, so the audit hook refuses process creation; process group "
            "killed on timeout"
            if rep["root"]
            else "RLIMIT_NPROC; process group killed on timeout"
        )
    )
    rep["limits"] = "wall clock, RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_CORE=0, empty env"
    return rep


def _rlimits(limits: SandboxLimits) -> dict[str, tuple[int, int]]:
    """(soft, hard) per limit; CPU's hard limit a second later, so SIGXCPU names the cause first."""
    mb = 1024 * 1024
    both = lambda v: (int(v), int(v))
    return {
        "RLIMIT_CPU": (int(limits.cpu_s), int(limits.cpu_s) + 1),
        "RLIMIT_AS": both(limits.memory_mb * mb),
        "RLIMIT_NPROC": both(limits.max_procs),
        "RLIMIT_FSIZE": both(limits.file_size_mb * mb),
        "RLIMIT_NOFILE": both(limits.open_files),
        "RLIMIT_CORE": (0, 0),
    }


def _jail_cfg(scratch: str, python: str, argv: list[str], limits: SandboxLimits) -> dict[str, Any]:
    return {
        "scratch": scratch,
        "uid": NOBODY,
        "gid": NOBODY,
        "python": python,
        "argv": argv,
        "rlimits": _rlimits(limits),
        "hide": list(HIDDEN_DIRS),
    }


def _jail_argv(unshare: str, cfg: dict[str, Any]) -> list[str]:
    return [
        unshare,
        "--pid",
        "--fork",
        "--kill-child",
        "--net",
        "--mount",
        "--propagation",
        "private",
        sys.executable,
        "-I",
        "-S",
        _JAIL,
        json.dumps(cfg),
    ]


def _set_limits(limits: SandboxLimits) -> None:  # runs in the child, fallback mode only
    for name, value in _rlimits(limits).items():
        resource.setrlimit(getattr(resource, name), value)


def run_python(
    code: str,
    stdin: str = "",
    limits: SandboxLimits | None = None,
    files: dict[str, str] | None = None,
    python: str | None = None,
    audit_hook: bool = True,
    use_namespaces: bool | None = None,
) -> SandboxResult:
    """Run ``code`` as ``main.py`` in a fresh scratch directory under the limits; never raises for
    anything the program does. ``files`` are extra files written beside it (for example tests)."""
    limits = limits or SandboxLimits()
    for name in files or {}:
        if not name or "/" in name or name.startswith(".") or name in ("main.py", "_runner.py"):
            raise ValueError(f"bad sandbox file name {name!r}: a plain name, not main.py or _runner.py")
    report = isolation_report(python)
    ns = report["namespaces"] if use_namespaces is None else use_namespaces
    python = report["python"] if ns else (python or sys.executable)
    if ns and not report["namespaces"]:
        raise RuntimeError(
            f"namespaces are not available here: {report.get('namespaces_error', 'not root/Linux')}"
        )
    base = tempfile.mkdtemp(prefix="openm1-sbx-")
    try:
        scratch = os.path.join(base, "work")
        os.mkdir(scratch)
        for name, text in {
            **(files or {}),
            "main.py": code,
            "_runner.py": _runner(audit_hook, block_procs=not ns and os.geteuid() == 0),
        }.items():
            Path(scratch, name).write_text(text)
        out_path, err_path, in_path = (os.path.join(base, n) for n in ("stdout", "stderr", "stdin"))
        Path(in_path).write_text(stdin)
        argv = ["-I", "-S", "_runner.py"]
        if ns:
            os.chmod(base, 0o711)
            for p in Path(scratch).rglob("*"):
                os.chown(p, NOBODY, NOBODY)
            os.chown(scratch, NOBODY, NOBODY)
            cmd, preexec = _jail_argv(report["unshare"], _jail_cfg(scratch, python, argv, limits)), None
        else:
            cmd, preexec = [python, *argv], functools.partial(_set_limits, limits)
        start = time.monotonic()
        with open(in_path) as fin, open(out_path, "wb") as fout, open(err_path, "wb") as ferr:
            proc = subprocess.Popen(
                cmd,
                stdin=fin,
                stdout=fout,
                stderr=ferr,
                cwd=scratch,
                env={},
                start_new_session=True,
                preexec_fn=preexec,
            )
            timed_out = False
            try:
                proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc.pid)
                proc.wait()
            _kill_group(proc.pid)  # stragglers that outlived the main process
        duration = time.monotonic() - start
        cap = int(limits.file_size_mb * 1024 * 1024)
        stdout = Path(out_path).read_bytes()[:cap].decode(errors="replace")
        stderr = Path(err_path).read_bytes()[:cap].decode(errors="replace")
        return _classify(proc.returncode, stdout, stderr, duration, timed_out, limits)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _classify(
    rc: int | None, stdout: str, stderr: str, duration: float, timed_out: bool, limits: SandboxLimits
) -> SandboxResult:
    if timed_out:
        status, reason = "timeout", f"wall-clock limit of {limits.timeout_s}s exceeded"
    elif rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        status, reason = "timeout", f"CPU limit of {limits.cpu_s}s exceeded"
    elif rc in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ):
        status, reason = "output_limit", f"file-size limit of {limits.file_size_mb} MB exceeded"
    elif "MemoryError" in stderr:
        status, reason = "memory", f"memory limit of {limits.memory_mb} MB exceeded"
    elif rc is not None and (rc < 0 or rc > 128):
        status, reason = "killed", f"killed by signal {abs(rc) if rc < 0 else rc - 128}"
    elif rc != 0:
        last = stderr.strip().splitlines()[-1:] or [f"exit status {rc}"]
        status, reason = "error", last[0][:300]
    else:
        status, reason = "ok", ""
    return SandboxResult(status, rc, stdout, stderr, duration, reason)


# --------------------------------------------------------------------------- the reward

_FENCE = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL)


def extract_code(response: str) -> str | None:
    """The last fenced code block after any ``</think>``; None when there is none."""
    tail = response.rsplit("</think>", 1)[-1]
    blocks = _FENCE.findall(tail)
    return blocks[-1] if blocks else None


@dataclass
class CodeReward:
    """Score a response's code against tests: ``reference`` is either Python test code (asserts run
    after the solution in the same program) or a list of ``{"input": ..., "output": ...}`` cases
    (stdin in, stdout compared after stripping trailing whitespace per line)."""

    limits: SandboxLimits = field(default_factory=SandboxLimits)
    partial_credit: bool = False
    """For I/O cases: the fraction passed (True) or all-or-nothing (False, the usual RL choice)."""

    def __call__(self, prompt: str, response: str, reference: Any, **meta: Any) -> RewardResult:
        code = extract_code(response)
        if code is None:
            return RewardResult(0.0, {"reason": "no fenced code block in the response"})
        if isinstance(reference, str):
            res = run_python(code + "\n\n" + reference, limits=self.limits)
            return RewardResult(float(res.ok), {"status": res.status, "reason": res.reason})
        if not isinstance(reference, (list, tuple)) or not reference:
            raise TypeError(
                "CodeReward's reference must be test code (str) or a non-empty list of "
                "{'input': ..., 'output': ...} cases"
            )
        passed, first_failure = 0, None
        for i, case in enumerate(reference):
            res = run_python(code, stdin=str(case.get("input", "")), limits=self.limits)
            good = res.ok and _norm(res.stdout) == _norm(str(case["output"]))
            passed += good
            if not good and first_failure is None:
                first_failure = {"case": i, "status": res.status, "reason": res.reason or "wrong output"}
                if not self.partial_credit:
                    break
        n = len(reference)
        score = passed / n if self.partial_credit else float(passed == n)
        return RewardResult(score, {"passed": passed, "cases": n, "first_failure": first_failure})


def _norm(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())
