"""The code sandbox refuses a fork bomb, an infinite loop, a huge allocation, a write outside its
directory and the network; the code reward scores right, wrong and malformed programs.

Limits are tight and timeouts short so that a failure of the sandbox cannot harm the machine."""

from __future__ import annotations

import os
import socket
import sys
import uuid
from pathlib import Path

import pytest

if not sys.platform.startswith(("linux", "darwin")):
    pytest.skip("the sandbox needs POSIX resource limits", allow_module_level=True)

from openm1.rewards.sandbox import CodeReward, SandboxLimits, isolation_report, run_python  # noqa: E402

TIGHT = SandboxLimits(timeout_s=3.0, cpu_s=1, memory_mb=256, max_procs=8, file_size_mb=1)
NAMESPACES = isolation_report()["namespaces"]


def test_a_normal_program_runs_in_its_scratch_directory_with_an_empty_environment(monkeypatch):
    monkeypatch.setenv("OPENM1_TEST_SECRET", "hunter2")
    res = run_python(
        "import os\nopen('note.txt', 'w').write('hi')\n"
        "print(open('note.txt').read(), ','.join(os.environ) or '-', os.getcwd())",
        limits=TIGHT,
    )
    assert res.ok, res
    text, env, cwd = res.stdout.split(" ", 2)
    # nothing inherited; the interpreter itself may set LC_CTYPE (PEP 538 locale coercion)
    assert (
        text == "hi"
        and set(env.split(",")) <= {"-", "LC_CTYPE"}
        and "openm1-sbx-" in cwd
        and not Path(cwd.strip()).exists()
    )


def test_fork_bomb_is_refused():
    res = run_python("import os\nwhile True:\n    os.fork()", limits=TIGHT)
    assert res.status == "error"
    assert "BlockingIOError" in res.stderr or "starting processes is refused" in res.stderr


def test_infinite_loop_is_stopped():
    res = run_python("while True:\n    pass", limits=TIGHT)
    assert res.status == "timeout" and res.duration_s < TIGHT.timeout_s + 2


def test_sleeping_past_the_wall_clock_is_stopped():
    res = run_python("import time\ntime.sleep(60)", limits=SandboxLimits(timeout_s=1.0))
    assert res.status == "timeout" and "wall-clock" in res.reason


def test_huge_allocation_is_refused():
    res = run_python("x = bytearray(8 * 1024 ** 3)\nprint('allocated')", limits=TIGHT)
    assert res.status == "memory" and "allocated" not in res.stdout


@pytest.mark.parametrize("audit_hook", [True, pytest.param(False, id="os-layer-only")])
def test_write_outside_the_scratch_directory_is_refused(audit_hook, tmp_path):
    if not audit_hook and not NAMESPACES:
        pytest.skip(f"no OS-level file-system isolation here: {isolation_report().get('namespaces_error')}")
    name = f"openm1-escape-{uuid.uuid4().hex}"
    targets = [f"/tmp/{name}", f"../{name}", str(tmp_path / name), os.path.expanduser(f"~/{name}")]
    code = "import sys\nok = 0\n"
    for t in targets:
        code += f"try:\n    open({t!r}, 'w').write('x')\n    ok += 1\n"
        code += "except OSError as e:\n    print(type(e).__name__)\n"
    code += "sys.exit(ok)"
    res = run_python(code, limits=TIGHT, audit_hook=audit_hook)
    assert res.returncode == 0, res  # every write failed
    # refused: no permission, or (covered by an empty tmpfs) the directory is not even there
    errors = res.stdout.split()
    assert len(errors) == len(targets) and set(errors) <= {"PermissionError", "FileNotFoundError"}
    for t in (f"/tmp/{name}", str(tmp_path / name), os.path.expanduser(f"~/{name}")):
        assert not os.path.exists(t)


@pytest.mark.parametrize("audit_hook", [True, pytest.param(False, id="os-layer-only")])
def test_no_network(audit_hook):
    if not audit_hook and not NAMESPACES:
        pytest.skip("no network namespace here")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        code = "import socket\ns = socket.socket()\ns.settimeout(1)\n"
        code += f"s.connect(('127.0.0.1', {port}))\nprint('connected')"
        res = run_python(code, limits=TIGHT, audit_hook=audit_hook)
    finally:
        server.close()
    assert res.status == "error" and "connected" not in res.stdout


def test_output_is_capped_by_the_file_size_limit():
    res = run_python("print('x' * (4 * 1024 * 1024))", limits=TIGHT)
    assert not res.ok and len(res.stdout) <= 1024 * 1024


def test_isolation_report_names_what_holds():
    rep = isolation_report()
    for key in ("network", "filesystem", "processes", "limits"):
        assert rep[key]
    if os.geteuid() == 0 and not NAMESPACES:
        assert "refuses process creation" in rep["processes"]


SOLUTION = "```python\ndef add(a, b):\n    return a + b\n```"
TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
IO = [{"input": "2 3\n", "output": "5\n"}, {"input": "10 -4", "output": "6"}]


def test_code_reward_right_wrong_malformed():
    reward = CodeReward(limits=TIGHT)
    assert reward("q", "<think>easy</think>\n" + SOLUTION, TESTS).score == 1.0
    wrong = reward("q", SOLUTION.replace("a + b", "a - b"), TESTS)
    assert wrong.score == 0.0 and "AssertionError" in wrong.details["reason"]
    broken = reward("q", "```python\ndef add(a, b) return\n```", TESTS)
    assert broken.score == 0.0 and "SyntaxError" in broken.details["reason"]
    none = reward("q", "def add(a, b): return a + b", TESTS)
    assert none.score == 0.0 and "no fenced code block" in none.details["reason"]


def test_code_reward_io_cases_and_partial_credit():
    prog = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    assert CodeReward(limits=TIGHT)("q", prog, IO).score == 1.0
    half = "```python\na, b = map(int, input().split())\nprint(a + b if a < 5 else 0)\n```"
    assert CodeReward(limits=TIGHT)("q", half, IO).score == 0.0
    out = CodeReward(limits=TIGHT, partial_credit=True)("q", half, IO)
    assert out.score == 0.5 and out.details["first_failure"]["case"] == 1
    with pytest.raises(TypeError, match="reference must be"):
        CodeReward(limits=TIGHT)("q", prog, 42)


@pytest.mark.parametrize(
    "code,status",
    [
        ("import os\nwhile True:\n    os.fork()", "error"),
        ("while True:\n    pass", "timeout"),
        ("x = bytearray(8 * 1024 ** 3)", "memory"),
        (f"open('../escape-{uuid.uuid4().hex}', 'w')", "error"),
    ],
)
def test_the_fallback_without_namespaces_refuses_the_same(code, status):
    """Where namespaces are unavailable (not root, not Linux) the limits and the audit hook hold."""
    res = run_python(code, limits=TIGHT, use_namespaces=False)
    assert res.status == status, res


def test_extra_files_are_importable_and_names_are_checked():
    res = run_python("import helper\nprint(helper.X)", files={"helper.py": "X = 41 + 1"}, limits=TIGHT)
    assert res.ok and res.stdout.strip() == "42"
    with pytest.raises(ValueError, match="bad sandbox file name"):
        run_python("pass", files={"../evil.py": ""})
