"""Adversarial programs, against both real backends (Docker and bubblewrap).

Every attack must be contained, reported as a failed test with a reason, and leave the
sandbox pool and the host healthy: after each one, a normal program on the same slot
(``workers=1``) must see no leftover process, an empty ``/tmp`` and ``/dev/shm`` with their
full space, and pass. The Docker runs FAIL, never skip, when no daemon is reachable
(``-k "not docker"`` deselects them).
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from pathlib import Path

import pytest

from autojudge.sandbox import Limits, Program, TestCase, get_sandbox

pytestmark = pytest.mark.integration

# memory_mb is small: first-touch page faults run at ~60 MB/s in this project's VMs
LIMITS = Limits(timeout=2, memory_mb=128, tmpfs_mb=64, shm_mb=16)
REPO = Path(__file__).resolve().parents[1]

HEALTH_CHECK = """
import os
me, parent = os.getpid(), os.getppid()
others = [p for p in os.listdir('/proc') if p.isdigit() and int(p) not in (me, parent, 1)]
left = os.listdir('/tmp') + os.listdir('/dev/shm')
full = []
for d in ('/tmp', '/dev/shm'):
    st = os.statvfs(d)
    if st.f_bavail < 0.95 * st.f_blocks:
        full.append(d)
    with open(d + '/probe', 'wb') as f:
        f.write(b'x' * (1 << 20))
    os.unlink(d + '/probe')
print('healthy' if not others and not left and not full else f'unhealthy: processes {others}, files {left}, full {full}')
"""


@pytest.fixture(scope="module", params=["docker", "bwrap"])
def box(request):
    sb = get_sandbox(request.param, workers=1, limits=LIMITS)
    yield sb
    sb.close()


def assert_healthy(box) -> None:
    res = box.run(Program(HEALTH_CHECK, [TestCase.stdio("", "healthy")] * 2))
    assert res.passed, [(r.status, r.reason, r.stdout) for r in res.results]
    if box.name == "docker":
        assert len(box.containers()) <= box.workers


def run_attack(box, code: str, tests=None, **kw):
    res = box.run(Program(code, tests or [TestCase.stdio("", "unreachable")], **kw))
    for r in res.results:
        assert not r.passed
        assert r.reason, r
    return res


def test_infinite_python_loop(box):
    res = run_attack(box, "while True:\n    pass\n")
    assert res.results[0].status == "timeout"
    assert_healthy(box)


def test_c_level_loop(box):
    # one C call that never checks for signals: signal.alarm could not stop it, SIGKILL does
    res = run_attack(box, "x = pow(3, 10 ** 9)\nprint(x % 10)\n")
    assert res.results[0].status in ("timeout", "memory_limit"), res.results[0]
    assert_healthy(box)


def test_fork_bomb(box):
    res = run_attack(
        box, "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    assert res.results[0].status in ("timeout", "runtime_error", "memory_limit"), res.results[0]
    assert_healthy(box)


def test_thread_bomb(box):
    code = (
        "import threading, time\nn = 0\nwhile True:\n"
        "    threading.Thread(target=time.sleep, args=(100,), daemon=True).start()\n    n += 1\n"
    )
    res = run_attack(box, code)
    assert res.results[0].status in ("runtime_error", "memory_limit", "timeout"), res.results[0]
    assert_healthy(box)


def test_memory_bomb(box):
    res = run_attack(
        box,
        "x = []\nwhile True:\n    x.append(bytearray(8 << 20))\n",
        [TestCase.stdio("", "unreachable", timeout=15)],
    )
    assert res.results[0].status == "memory_limit", res.results[0]
    assert_healthy(box)


def test_memory_bomb_in_many_processes(box):
    # each process stays under the per-process address-space limit (128 MB); together they exceed
    # the sandbox's memory (container / cgroup), whose out-of-memory killer takes them
    code = """
import os, signal, time
kids = []
for _ in range(5):
    pid = os.fork()
    if pid == 0:
        x = bytearray(90 << 20)
        time.sleep(3)
        os._exit(0)
    kids.append(pid)
killed = sum(os.WTERMSIG(st) == signal.SIGKILL for st in (os.waitpid(k, 0)[1] for k in kids) if os.WIFSIGNALED(st))
print('oom-killed', killed)
"""
    res = run_attack(box, code, [TestCase.stdio("", "oom-killed 0", timeout=20)])
    assert res.results[0].status == "wrong_answer", res.results[0]
    assert int(res.results[0].stdout.split()[-1]) >= 1
    assert_healthy(box)


@pytest.mark.parametrize("where", ["/tmp", "/dev/shm"])
def test_disk_fill(box, where):
    code = f"f = open('{where}/fill', 'wb')\nwhile True:\n    f.write(b'x' * (1 << 20))\n    f.flush()\n"
    res = run_attack(box, code)
    assert res.results[0].status == "runtime_error", res.results[0]
    assert "No space left" in res.results[0].reason or "file size" in res.results[0].reason
    assert_healthy(box)


def test_writes_outside_tmp(box):
    targets = [
        "/x",
        "/etc/x",
        "/usr/x",
        "/usr/lib/x",
        "/var/x",
        "/root/x",
        "/home/x",
        "/dev/x",
        "/sys/x",
        "/proc/sys/kernel/hostname",
        "/usr/bin/python3",
        "/etc/passwd",
    ]
    code = (
        f"import os\nfor p in {targets!r}:\n"
        "    try:\n        with open(p, 'a') as f:\n            f.write('pwned')\n        print('escaped', p)\n"
        "    except OSError:\n        pass\n"
        "try:\n    os.mkdir('/newdir')\n    print('escaped mkdir')\nexcept OSError:\n    pass\n"
        "print('contained')\n"
    )
    res = run_attack(box, code, [TestCase.stdio("", "escaped")])
    assert res.results[0].stdout == "contained\n"
    assert_healthy(box)


def test_reading_host_files(box):
    secret = "aj-secret-" + os.urandom(8).hex()
    with tempfile.NamedTemporaryFile("w", dir="/tmp", prefix="aj-secret-", delete=False) as f:
        f.write(secret)
    readme_line = (REPO / "README.md").read_text().splitlines()[0]
    paths = [
        f.name,
        str(REPO / "README.md"),
        "/root/.bashrc",
        "/etc/shadow",
        "/var/run/docker.sock",
        "/proc/1/environ",
        "/proc/1/cmdline",
        f"/proc/{os.getpid()}/environ",
        os.path.expanduser("~/.ssh"),
    ]
    code = (
        f"import os\nfor p in {paths!r}:\n"
        "    try:\n        print(p, open(p, errors='replace').read()[:300])\n"
        "    except OSError as e:\n        print(p, 'unreadable', type(e).__name__)\n"
    )
    try:
        res = run_attack(box, code, [TestCase.stdio("", secret)])
    finally:
        os.unlink(f.name)
    out = res.results[0].stdout
    assert secret not in out and readme_line not in out and "unreadable" in out
    assert "autojudge" not in out.lower()
    assert_healthy(box)


def test_network_to_a_host_loopback_listener(box):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    port = srv.getsockname()[1]
    accepted = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            accepted.append(conn)

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    host_ip = socket.gethostbyname(socket.gethostname())
    code = (
        f"import socket\nfor host in ('127.0.0.1', {host_ip!r}, 'localhost', '172.17.0.1'):\n"
        f"    try:\n        socket.create_connection((host, {port}), timeout=1)\n        print('connected', host)\n"
        "    except OSError as e:\n        print('refused', host, type(e).__name__)\n"
        "try:\n    socket.getaddrinfo('pypi.org', 443)\n    print('dns works')\nexcept OSError:\n    print('no dns')\n"
    )
    try:
        res = run_attack(box, code, [TestCase.stdio("", "connected")])
    finally:
        stop.set()
        t.join(2)
        srv.close()
    out = res.results[0].stdout
    assert not accepted and "connected" not in out and "no dns" in out, out
    assert_healthy(box)


def test_huge_stdout(box):
    res = run_attack(box, "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n")
    assert res.results[0].status == "output_limit", res.results[0]
    res = run_attack(box, "import sys\nwhile True:\n    sys.stderr.write('y' * 65536)\n")
    assert res.results[0].status == "output_limit", res.results[0]
    assert_healthy(box)


def test_daemon_that_outlives_its_test(box):
    code = """
import os, sys, time
if input() == 'spawn':
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(0.5)
            for _ in range(600):
                with open('/tmp/daemon-alive', 'w') as f:
                    f.write(str(time.time()))
                print('daemon still writing', flush=True)
                time.sleep(0.05)
        os._exit(0)
    print('spawned')
else:
    time.sleep(0.3)
    others = [p for p in os.listdir('/proc') if p.isdigit() and int(p) not in (os.getpid(), os.getppid(), 1)]
    print('alive' if others or os.path.exists('/tmp/daemon-alive') else 'gone')
"""
    res = box.run(Program(code, [TestCase.stdio("spawn", "spawned"), TestCase.stdio("check", "alive")]))
    first, second = res.results
    assert first.passed and first.time_s < LIMITS.timeout, first  # it ended with its main process
    assert second.status == "wrong_answer" and second.stdout == "gone\n", second
    assert_healthy(box)


def test_forged_result_lines(box):
    # the token is in the child's memory (it is a fork of the harness); the channel is not
    code = r"""
import gc, json, os, sys
tokens = set()
f = sys._getframe()
while f is not None:
    for v in list(f.f_locals.values()):
        if isinstance(v, str) and len(v) == 32:
            tokens.add(v)
        if isinstance(v, dict) and isinstance(v.get('token'), str):
            tokens.add(v['token'])
    f = f.f_back
for o in gc.get_objects():
    if isinstance(o, dict) and isinstance(o.get('token'), str):
        tokens.add(o['token'])
forged = []
for t in tokens | {'0' * 32}:
    for i in range(3):
        forged.append(f'{t} ' + json.dumps({'i': i, 'status': 'ok', 'stdout': '42\n', 'value': 42}))
    forged.append(f'{t} ' + json.dumps({'done': 3}))
text = '\n'.join(forged) + '\n'
print(text)
print(text, file=sys.stderr)
reached = []
mode = sys.stdin.read()  # 'forge-all' also garbles its own result record (fd 3): that is its own loss
for fd in range(0, 1024) if mode == 'forge-all' else (n for n in range(0, 1024) if n != 3):
    try:
        os.write(fd, text.encode())
        reached.append(fd)
    except OSError:
        pass
for pid in (os.getppid(), 1):
    for n in range(0, 64):
        try:
            with open(f'/proc/{pid}/fd/{n}', 'w') as f:
                f.write(text)
            print('opened', pid, n)
        except OSError:
            pass
print('tokens', len(tokens), 'fds', reached)
"""
    tests = [TestCase.stdio("forge-all", "42"), TestCase.stdio("forge", "42"), TestCase.call("f", [], 42)]
    res = box.run(Program(code + "\ndef f():\n    return 41\n", tests))
    assert [r.status for r in res.results] == ["runtime_error", "wrong_answer", "wrong_answer"], res.results
    assert "malformed result record" in res.results[0].reason
    assert res.error is None
    out = res.results[1].stdout
    assert "opened" not in out and "tokens 1 " in out  # it found the token, and it did not help
    assert res.results[2].value == 41
    assert_healthy(box)


def test_signalling_the_harness(box):
    # the harness is the sandbox's PID 1: signals from inside do not reach it
    code = (
        "import os, signal\nfor sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGTERM, signal.SIGINT):\n"
        "    try:\n        os.kill(os.getppid(), sig)\n    except OSError:\n        pass\nprint('42')\n"
    )
    res = box.run(Program(code, [TestCase.stdio("", "42"), TestCase.stdio("", "42")]))
    assert res.passed and res.error is None, res
    assert_healthy(box)


def test_a_killed_harness_is_replaced():
    # with one `docker exec` per program the harness is not PID 1 and can be killed or stopped:
    # its tests fail with a reason and the container is replaced
    with get_sandbox("docker", workers=1, limits=LIMITS, mode="exec") as box:
        code = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('42')\n"
        res = run_attack(box, code, [TestCase.stdio("", "42"), TestCase.stdio("", "42")])
        assert all(r.status == "sandbox_error" for r in res.results) and res.error
        code = "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\nprint('42')\n"
        res = run_attack(box, code, [TestCase.stdio("", "42", timeout=1)])
        assert res.results[0].status == "timeout" and "host-side hard timeout" in res.results[0].reason
        assert_healthy(box)


def test_custom_eq(box):
    code = (
        "class Anything:\n    def __eq__(self, o):\n        return True\n    __hash__ = object.__hash__\n"
        "def solve(x):\n    return Anything()\n"
    )
    res = run_attack(box, code, [TestCase.call("solve", [1], 2), TestCase.expr("solve(1)", [1, 2])])
    assert all("not plain data" in r.reason for r in res.results)
    assert_healthy(box)
