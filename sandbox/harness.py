"""The in-sandbox test runner: standard library only, runs INSIDE the sandbox.

A backend starts ``python3 -I -c <this file's source>`` (in a container, a bubblewrap
sandbox, or a plain subprocess) and writes jobs to its stdin, one program per job, one JSON
line each; the harness runs them one after the other until its stdin closes::

    {"token": "...", "code": "...", "prelude": "...", "setup": "...",
     "tests": [{"kind": "stdio", "input": "..."},
               {"kind": "call", "fn": "f", "args": [...], "kwargs": {...}},
               {"kind": "expr", "expr": "f(1) + 1"}],
     "timeouts": [6.0, ...], "memory_bytes": N, "max_output": N, "max_stderr": N,
     "file_size": N, "nproc": N, "nofile": N, "stop_after_timeouts": 1 | null,
     "kill_all": true, "wipe": ["/tmp", "/dev/shm"], "workdir": "/tmp", "drop_uid": null}

Expected outputs are never part of a job: the host compares. For every test the
harness forks a child that runs the program (compiled and executed in the child,
never in the harness), enforces the test's timeout from outside with SIGKILL, caps
the captured output, then kills every leftover process (``kill(-1)`` in a sandbox,
where the harness's uid owns nothing else; the harness's own descendants otherwise),
reaps them (the harness is a child subreaper) and empties ``/tmp`` and ``/dev/shm``.

Results go to the harness's original stdout, which no child can reach (children get
fresh pipes, every other descriptor is closed, and the harness is not dumpable, so
``/proc/<harness>/fd`` is closed to them), one line per test::

    <token> {"i": 0, "status": "ok", "stdout": "...", "value": <tagged JSON>, ...}

and ``<token> {"done": n}`` at the end. Return values are serialized in the child
with :func:`encode` into "tagged JSON" (tuples, sets, dicts with any keys, bytes,
big ints, non-finite floats keep their type); objects of other types become
``{"$opaque": type name}``, which never equals anything on the host.

The host imports this module too (for :func:`encode` / :func:`decode` of trusted
values); it has no side effects on import.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import errno
import io
import json
import os
import resource
import select
import signal
import sys
import time
import traceback
import types

MAX_DEPTH = 100
_BIG_INT = 1 << 62
_READ = 65536
_TRACEBACK_CHARS = 4000
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36


# --------------------------------------------------------------------------- tagged JSON values
def _enc_float(x: float):
    if x != x:
        return {"$float": "nan"}
    if x in (float("inf"), float("-inf")):
        return {"$float": "inf" if x > 0 else "-inf"}
    return x


def _enc_int(x: int):
    if -_BIG_INT < x < _BIG_INT:
        return x
    return {"$int": hex(x)}  # hex: no 4300-digit str() limit, linear time


def encode(x, depth: int = 0):
    """``x`` as tagged JSON data, using only the built-in types' own methods.

    Subclasses of built-in types are encoded as their base value through the base
    type's methods (an ``int`` subclass with a custom ``__eq__`` becomes a plain
    int); anything else becomes ``{"$opaque": type name}``.
    """
    if depth > MAX_DEPTH:
        return {"$opaque": "nesting too deep"}
    t = type(x)
    d = depth + 1
    if x is None or t is bool or t is str:
        return x
    if t is int:
        return _enc_int(x)
    if t is float:
        return _enc_float(x)
    if t is list:
        return [encode(v, d) for v in x]
    if t is tuple:
        return {"$tuple": [encode(v, d) for v in x]}
    if t is dict:
        return {"$dict": [[encode(k, d), encode(v, d)] for k, v in dict.items(x)]}
    if t is set or t is frozenset:
        return {"$set" if t is set else "$frozenset": [encode(v, d) for v in x]}
    if t is bytes or t is bytearray:
        return {"$bytes" if t is bytes else "$bytearray": base64.b64encode(bytes(x)).decode("ascii")}
    if t is complex:
        return {"$complex": [_enc_float(x.real), _enc_float(x.imag)]}
    # subclasses of built-in types: their base value, read with the base type's methods
    if isinstance(x, int):
        return _enc_int(int.__int__(x))
    if isinstance(x, float):
        return _enc_float(float.__float__(x))
    if isinstance(x, str):
        return str.__str__(x)
    if isinstance(x, list):
        return [encode(v, d) for v in list.__iter__(x)]
    if isinstance(x, tuple):
        return {"$tuple": [encode(v, d) for v in tuple.__iter__(x)]}
    if isinstance(x, dict):
        return {"$dict": [[encode(k, d), encode(v, d)] for k, v in dict.items(x)]}
    if isinstance(x, frozenset):
        return {"$frozenset": [encode(v, d) for v in frozenset.__iter__(x)]}
    if isinstance(x, set):
        return {"$set": [encode(v, d) for v in set.__iter__(x)]}
    if isinstance(x, bytes):
        return {"$bytes": base64.b64encode(bytes.__getitem__(x, slice(None))).decode("ascii")}
    if isinstance(x, bytearray):
        return {"$bytearray": base64.b64encode(bytes(bytearray.__getitem__(x, slice(None)))).decode("ascii")}
    try:
        name = type.__getattribute__(t, "__qualname__")
        name = name if type(name) is str else "?"
    except Exception:
        name = "?"
    return {"$opaque": name[:200]}


class DecodeError(ValueError):
    pass


def decode(v, depth: int = 0):
    """The Python value of tagged JSON data (for trusted data: test arguments)."""
    if depth > MAX_DEPTH:
        raise DecodeError("value nested too deep")
    d = depth + 1
    if v is None or type(v) in (bool, int, float, str):
        return v
    if type(v) is list:
        return [decode(x, d) for x in v]
    if type(v) is dict and len(v) == 1:
        ((tag, x),) = v.items()
        if tag == "$tuple":
            return tuple(decode(e, d) for e in x)
        if tag == "$set":
            return {decode(e, d) for e in x}
        if tag == "$frozenset":
            return frozenset(decode(e, d) for e in x)
        if tag == "$dict":
            return {decode(k, d): decode(val, d) for k, val in x}
        if tag == "$int":
            return int(x, 16)
        if tag == "$float":
            return float(x)
        if tag == "$bytes":
            return base64.b64decode(x)
        if tag == "$bytearray":
            return bytearray(base64.b64decode(x))
        if tag == "$complex":
            return complex(decode(x[0], d), decode(x[1], d))
    raise DecodeError("not a tagged JSON value: " + repr(v)[:100])


# --------------------------------------------------------------------------- process helpers
def _libc():
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True)
    except Exception:
        return None


_LIBC = None


def _prctl(option: int, arg: int) -> bool:
    global _LIBC
    if _LIBC is None:
        _LIBC = _libc() or False
    if not _LIBC:
        return False
    return _LIBC.prctl(option, arg, 0, 0, 0) == 0


def _set_rlimit(name: str, value) -> None:
    if value is None or value <= 0:
        return
    res = getattr(resource, name, None)
    if res is None:
        return
    try:
        soft, hard = resource.getrlimit(res)
        v = int(value)
        if hard != resource.RLIM_INFINITY:
            v = min(v, hard)
        resource.setrlimit(res, (v, v))
    except (ValueError, OSError):
        pass


def _children_of(pid: int) -> list:
    """Direct children of ``pid`` according to /proc (for the no-kill(-1) mode)."""
    out = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open("/proc/" + name + "/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(b")") + 2 :].split()
        if len(rest) > 1 and int(rest[1]) == pid:
            out.append(int(name))
    return out


def kill_leftovers(kill_all: bool, max_s: float = 5.0) -> bool:
    """Kill every process of this sandbox but the harness, and reap them all."""
    me = os.getpid()
    deadline = time.monotonic() + max_s
    while True:
        if kill_all:
            with contextlib.suppress(OSError):  # ESRCH: nothing left to signal
                os.kill(-1, signal.SIGKILL)
        else:
            for pid in _children_of(me):
                for target in (-pid, pid):
                    with contextlib.suppress(OSError):
                        os.kill(target, signal.SIGKILL)
        reaped = False
        try:
            while True:
                pid, _ = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                reaped = True
        except ChildProcessError:
            return True
        if time.monotonic() > deadline:
            return False
        if not reaped:
            time.sleep(0.0005)


def _wipe(path: str) -> None:
    """Empty a directory (the program's files are ours: same uid; fix modes on the way)."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        return
    for e in entries:
        p = e.path
        try:
            if e.is_dir(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.chmod(p, 0o700)
                _wipe(p)
                os.rmdir(p)
            else:
                os.unlink(p)
        except OSError:
            pass


# --------------------------------------------------------------------------- the child
def _fresh_stdio() -> None:
    sys.stdin = io.TextIOWrapper(
        io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8", errors="replace"
    )
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(1, "w", closefd=False)), encoding="utf-8", errors="backslashreplace"
    )
    sys.stderr = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(2, "w", closefd=False)),
        encoding="utf-8",
        errors="backslashreplace",
        line_buffering=True,
    )
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr


def _flush() -> None:
    for s in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            s.flush()


def _resolve(g: dict, name: str):
    """LiveCodeBench's lookup: a top-level function, else a method of ``Solution()``."""
    parts = name.split(".")
    if parts[0] in g:
        obj = g[parts[0]]
        for p in parts[1:]:
            obj = getattr(obj, p)
        return obj
    sol = g.get("Solution")
    if sol is not None and len(parts) == 1:
        return getattr(sol(), name)
    raise NameError("function " + repr(name) + " is not defined by the program")


def _child(job: dict, test: dict, fds: tuple, limits: dict) -> None:
    inp, out_w, err_w, res_w = fds
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.setsid()
    os.dup2(inp, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.dup2(res_w, 3)
    os.closerange(4, 1 << 16)
    for sig in (signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with open("/proc/self/oom_score_adj", "w") as f:  # the OOM killer takes the program first
            f.write("1000")
    except OSError:
        pass
    uid = limits.get("drop_uid")
    if uid is not None and os.getuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    _set_rlimit("RLIMIT_AS", limits.get("memory_bytes"))
    _set_rlimit("RLIMIT_CPU", int(limits["timeout"]) + 2)
    _set_rlimit("RLIMIT_FSIZE", limits.get("file_size"))
    _set_rlimit("RLIMIT_NPROC", limits.get("nproc"))
    _set_rlimit("RLIMIT_NOFILE", limits.get("nofile"))
    _set_rlimit("RLIMIT_CORE", 0)
    with contextlib.suppress(OSError):
        os.chdir(job.get("workdir") or "/tmp")
    res = io.FileIO(3, "w", closefd=True)

    def report(rec: dict) -> None:
        _flush()
        data = json.dumps(rec, ensure_ascii=False, allow_nan=False).encode("utf-8", "backslashreplace")
        with contextlib.suppress(OSError):
            res.write(data)
        os._exit(0)

    code, prelude, setup = job.get("code", ""), job.get("prelude", ""), job.get("setup", "")
    kind = test["kind"]
    # the job (other tests' inputs) stays in this process's memory; nothing in it is secret
    job.clear()
    _fresh_stdio()
    sys.argv = ["main.py"]
    module = types.ModuleType("__main__")
    module.__file__ = "main.py"
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    g = module.__dict__
    stage = "compile"
    try:
        compiled = [
            compile(src, name, "exec")
            for src, name in ((prelude, "<prelude>"), (code, "main.py"), (setup, "<setup>"))
            if src
        ]
        expr = compile(test["expr"], "<test>", "eval") if kind == "expr" else None
        stage = "run"
        exit_code = 0
        try:
            for c in compiled:
                exec(c, g)
        except SystemExit as e:
            if kind != "stdio":
                raise
            exit_code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if e.code is not None and not isinstance(e.code, int):
                with contextlib.suppress(Exception):
                    sys.stderr.write(str(e.code) + "\n")
        if kind == "stdio":
            report({"status": "ok", "exit": exit_code})
        if kind == "call":
            fn = _resolve(g, test["fn"])
            value = fn(*decode(test.get("args", [])), **decode(test.get("kwargs", {"$dict": []})))
        else:
            value = eval(expr, g)
        stage = "serialize"
        report({"status": "ok", "value": encode(value)})
    except MemoryError:
        report({"status": "memory_limit", "error": "MemoryError"})
    except RecursionError as e:
        report(
            {"status": "runtime_error", "error": "RecursionError: " + str(e)[:200], "etype": "RecursionError"}
        )
    except BaseException as e:  # noqa: BLE001 - everything the program raises is its failure
        try:  # the program's frames only: drop _child's
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__.tb_next))
        except BaseException:
            tb = type(e).__name__
        st = "compile_error" if stage == "compile" else "runtime_error"
        try:
            etype = type(e).__name__
        except BaseException:
            etype = "?"
        report({"status": st, "error": tb[-_TRACEBACK_CHARS:], "etype": str(etype)[:100]})
    os._exit(0)


# --------------------------------------------------------------------------- the harness
def _memfd(data: bytes) -> int:
    try:
        fd = os.memfd_create("stdin", 0)
    except (AttributeError, OSError):
        import tempfile

        with tempfile.TemporaryFile() as f:
            fd = os.dup(f.fileno())
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _run_one(job: dict, test: dict, timeout: float, limits: dict, devnull: int, kill_all: bool) -> dict:
    data = test.get("input", "").encode("utf-8", "surrogatepass") if test["kind"] == "stdio" else b""
    inp = _memfd(data) if data else os.dup(devnull)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    res_r, res_w = os.pipe()
    sys.stderr.flush()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            _child(job, test, (inp, out_w, err_w, res_w), dict(limits, timeout=timeout))
        except BaseException:
            with contextlib.suppress(BaseException):
                os.write(2, ("harness (test set-up): " + traceback.format_exc()).encode("utf-8", "replace"))
        finally:
            os._exit(70)
    for fd in (inp, out_w, err_w, res_w):
        os.close(fd)
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    max_out, max_err = limits["max_output"], limits["max_stderr"]
    bufs = {out_r: bytearray(), err_r: bytearray(), res_r: bytearray()}
    caps = {out_r: max_out, err_r: max_out, res_r: max_out}
    err_total = 0
    open_fds = [out_r, err_r, res_r]
    for fd in open_fds:
        os.set_blocking(fd, False)
    deadline = t0 + timeout
    status = None  # the harness's verdict when it had to stop the child
    wait_status = None
    elapsed = None
    drain_until = None
    while True:
        if wait_status is None:
            try:
                got, st = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                got, st = pid, 0
            if got == pid:
                wait_status = st
                elapsed = time.monotonic() - t0
                # the test ends with its main process: kill what it left behind (daemons holding
                # our pipes), then read the pipes to their end
                kill_leftovers(kill_all)
                drain_until = time.monotonic() + 1.0
        now = time.monotonic()
        if wait_status is None and now >= deadline:
            status = "timeout"
            break
        if not open_fds:
            if wait_status is not None:
                break
            time.sleep(0.001)
            continue
        rlist = list(open_fds)
        if pidfd is not None and wait_status is None:
            rlist.append(pidfd)
        if drain_until is not None:
            wait = max(0.0, drain_until - now)
        else:
            wait = max(0.0, deadline - now) if pidfd is not None else min(0.005, max(0.0, deadline - now))
        try:
            ready, _, _ = select.select(rlist, [], [], wait)
        except InterruptedError:
            continue
        if not ready and drain_until is not None:
            break
        over = False
        for fd in ready:
            if fd == pidfd:
                continue
            try:
                chunk = os.read(fd, _READ)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                open_fds.remove(fd)
                continue
            if fd == err_r:
                err_total += len(chunk)
                buf = bufs[err_r]
                buf += chunk
                if len(buf) > max_err:
                    del buf[: len(buf) - max_err]  # keep the tail: that is where tracebacks end
                if err_total > caps[err_r]:
                    over = True
            else:
                bufs[fd] += chunk
                if len(bufs[fd]) > caps[fd]:
                    over = True
        if over:
            status = "output_limit"
            break
    if elapsed is None:
        elapsed = time.monotonic() - t0
    if wait_status is None:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        try:
            _, wait_status = os.waitpid(pid, 0)
        except ChildProcessError:
            wait_status = 0
    if pidfd is not None:
        os.close(pidfd)
    for fd in (out_r, err_r, res_r):
        os.close(fd)
    rec: dict = {}
    if status is None:
        raw = bytes(bufs[res_r])
        try:
            rec = json.loads(raw.decode("utf-8")) if raw else {}
            if type(rec) is not dict:
                rec = {}
        except (ValueError, RecursionError):
            rec = {"status": "runtime_error", "error": "the program wrote a malformed result record"}
    out = {
        "stdout": bytes(bufs[out_r][:max_out]).decode("utf-8", "replace"),
        "stderr": bytes(bufs[err_r]).decode("utf-8", "replace"),
        "time": round(elapsed, 6),
    }
    if os.WIFSIGNALED(wait_status):
        out["signal"] = os.WTERMSIG(wait_status)
    elif os.WIFEXITED(wait_status):
        out["exit"] = os.WEXITSTATUS(wait_status)
    if status is not None:
        out["status"] = status
        out["error"] = (
            f"timed out after {timeout:.3g} s" if status == "timeout" else f"output exceeded {max_out} bytes"
        )
        return out
    if not rec:
        sig = out.get("signal")
        if sig == signal.SIGXCPU:
            out.update(status="timeout", error="CPU time limit exceeded")
        elif sig == signal.SIGXFSZ:
            out.update(status="runtime_error", error="file size limit exceeded")
        elif sig == signal.SIGKILL:
            out.update(status="memory_limit", error="killed by SIGKILL (most likely out of memory)")
        elif sig is not None:
            out.update(status="runtime_error", error=f"killed by signal {sig}")
        else:
            out.update(
                status="runtime_error",
                error=f"the program exited (code {out.get('exit')}) before its test finished",
            )
        return out
    for key in ("status", "value", "error", "etype"):
        if key in rec:
            out[key] = rec[key]
    if "exit" in rec and type(rec["exit"]) is int:
        out["exit"] = rec["exit"]
    if out.get("status") not in ("ok", "runtime_error", "compile_error", "memory_limit"):
        out["status"] = "runtime_error"
        out["error"] = "the program wrote a malformed result record"
    return out


def _run_job(job: dict, devnull: int, result_fd: int) -> None:
    token = job["token"]
    limits = {
        k: job.get(k)
        for k in ("memory_bytes", "max_output", "max_stderr", "file_size", "nproc", "nofile", "drop_uid")
    }
    # kill(-1) only where the harness's uid owns nothing but the sandbox (never as root)
    kill_all = bool(job.get("kill_all")) and os.getuid() != 0
    wipe = list(job.get("wipe") or [])
    stop_after = job.get("stop_after_timeouts")
    timeouts = job["timeouts"]
    tests = job["tests"]
    prefix = token.encode("ascii") + b" "

    def emit(rec: dict) -> None:
        line = prefix + json.dumps(rec, ensure_ascii=False, allow_nan=False).encode(
            "utf-8", "backslashreplace"
        )
        view = memoryview(line + b"\n")
        while view:
            try:
                n = os.write(result_fd, view)
            except InterruptedError:
                continue
            view = view[n:]

    kill_leftovers(kill_all)  # a clean start, whatever ran before
    for path in wipe:
        _wipe(path)
    n_timeouts = 0
    for i, test in enumerate(tests):
        if stop_after is not None and n_timeouts >= stop_after:
            emit({"i": i, "status": "skipped", "error": f"skipped after {n_timeouts} timed-out test(s)"})
            continue
        try:
            rec = _run_one(job, test, float(timeouts[i]), limits, devnull, kill_all)
        except OSError as e:  # resources exhausted by the previous test's leftovers, ...
            rec = {"status": "sandbox_error", "error": f"harness: {e}"}
        clean = kill_leftovers(kill_all)
        for path in wipe:
            _wipe(path)
        if not clean:
            rec["leftovers"] = True
        if rec.get("status") == "timeout":
            n_timeouts += 1
        rec["i"] = i
        emit(rec)
    emit({"done": len(tests)})


# Imported once here, so the per-test children (forks) do not import them again and again; the
# standard library only, without side effects (random reseeds itself in every fork).
PRELOAD = (
    "typing",
    "re",
    "math",
    "cmath",
    "collections",
    "itertools",
    "functools",
    "heapq",
    "bisect",
    "string",
    "random",
    "statistics",
    "datetime",
    "copy",
    "operator",
    "decimal",
    "fractions",
    "array",
    "dataclasses",
    "enum",
    "textwrap",
    "unicodedata",
    "hashlib",
    "struct",
)


def main() -> None:
    """Run jobs, one JSON line each, read from stdin until it closes."""
    import ctypes  # noqa: F401 - imported before any test: a child may lose access to the stdlib's files

    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            __import__(name)

    _prctl(_PR_SET_DUMPABLE, 0)  # no ptrace, no /proc/<harness>/{mem,fd} for the program
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)  # orphans (double-forked daemons) come back to us
    # as PID 1 of a sandbox (bubblewrap --as-pid-1, a container) nothing inside can signal us then
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    idle_exit = float(sys.argv[1]) if len(sys.argv) > 1 else None
    devnull = os.open(os.devnull, os.O_RDWR)
    jobs_fd = os.dup(0)  # children never get these two descriptors
    jobs = os.fdopen(jobs_fd, "rb")
    result_fd = os.dup(1)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    while True:
        if idle_exit is not None and not select.select([jobs_fd], [], [], idle_exit)[0]:
            break  # nobody sent a job for idle_exit seconds
        line = jobs.readline()
        if not line:
            break
        if line.strip():
            job = json.loads(line.decode("utf-8", "surrogatepass"))
            _run_job(job, devnull, result_fd)
            del job


if __name__ == "__main__":
    try:
        main()
    except Exception:  # pragma: no cover - reported to the host on stderr
        traceback.print_exc()
        sys.exit(1)
    except OSError as e:  # pragma: no cover
        if e.errno != errno.EPIPE:
            raise
