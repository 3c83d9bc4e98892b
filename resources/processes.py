"""Child processes that die with their parent: servers on 127.0.0.1 (parity checks, tests) and bounded commands."""

import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True) if sys.platform == "linux" else None
GRACE_S = 10.0


def die_with_parent(signum: int = signal.SIGKILL):
    """A ``preexec_fn`` that has the kernel send ``signum`` to the child when the thread that started it dies.

    So a run process killed with SIGKILL (OOM killer, a lost node, ``kill -9``) leaves no server or
    build behind. Linux only (elsewhere: None, and a killed parent's children live on). The signal
    follows the starting *thread*: start long-lived children from a thread that outlives them.
    It reaches the child only, not the processes the child starts: servers go through ``_guard``.
    """
    if _LIBC is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signum)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return preexec


def _descendants(root: int) -> list[int]:
    """Every live process below ``root`` (from /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _guard(command: list[str]) -> int:
    """Run ``command`` so that nothing it starts outlives it, or outlives this guard's parent.

    Servers fork workers that start sessions of their own (BentoML's circus arbiter does): a
    process group or a death signal to the leader does not reach them, and a SIGKILLed leader
    orphans them with the port still bound. The guard is a child subreaper (orphans below it
    reparent to it), receives SIGTERM when its parent dies (it asks the kernel itself, so any
    parent's death counts), passes SIGTERM on, and SIGKILLs every descendant left after ``GRACE_S``
    or once the command has exited.
    """
    stop: list[int] = []
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_CHILD_SUBREAPER, 1)
        # Whoever started the guard may not have asked for this (dagster's PipesSubprocessClient does not).
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda received, _frame: stop.append(received))
    child = subprocess.Popen(command, preexec_fn=die_with_parent(signal.SIGTERM))
    deadline = None
    while child.poll() is None:
        if stop and deadline is None:
            deadline = time.monotonic() + GRACE_S
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        if deadline is not None and time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for _ in range(50):  # until nothing is left (a dying server may still fork)
        left = _descendants(os.getpid())
        if not left:
            break
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        time.sleep(0.05)
    return child.returncode if child.returncode is not None else 128 + signal.SIGKILL


def guarded(command: list[str]) -> list[str]:
    """``command`` run under ``_guard`` (a bare interpreter on this file: no package imports)."""
    if _LIBC is None:
        return command
    return [sys.executable, "-I", str(Path(__file__).resolve()), "--guard", "--", *command]


def run_bounded(command: list[str], timeout_s: float, what: str, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` that dies with its parent and is killed after ``timeout_s`` (RuntimeError saying what)."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                              preexec_fn=die_with_parent(), **kwargs)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or b"")[-1500:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        raise RuntimeError(f"{what} did not finish within {timeout_s:.0f} s and was killed: {tail}") from None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(command: list[str], ready_url: str, log: Path, timeout_s: float = 90, env: dict | None = None, cwd=None,
                   ssl_context=None):
    """Start ``command``, wait until ``ready_url`` answers 2xx, and stop the process (group) afterwards.

    An https ``ready_url`` is verified with ``ssl_context`` (default: the system's CAs).

    The process runs under a guard (``_guard``) in a session of its own: it and every process it
    starts are stopped with it, and die with this process however it dies.
    """
    with open(log, "w") as output:
        process = subprocess.Popen(
            guarded(command), stdout=output, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(ready_url, timeout=2, context=ssl_context):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{command[:4]} did not start: {Path(log).read_text()[-2000:]}") from None
                time.sleep(0.2)
        yield process
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the whole group (the guard stops what left it), SIGKILL what is left after 15 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # workers that outlived their leader



def start_detached(command: list[str], log: Path, env: dict | None = None, cwd=None) -> subprocess.Popen:
    """Start a long-lived service under the guard, in a session (process group) of its own, that outlives this process.

    Unlike ``running_server`` nothing ties it to the caller: a supervisor that exits leaves it running,
    and ``stop_process_group`` (or a SIGKILL of its group) ends it with everything it started.
    """
    with open(log, "a") as output:
        return subprocess.Popen(guarded(command), stdout=output, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, exited but not yet reaped, counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        if _LIBC is not None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in {"Z", "X"}


def group_members(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] not in {"Z", "X"}:
                members.append(int(entry.name))
    return members


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is this process's child (so it does not linger as a zombie)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop_process_group(pgid: int, grace_s: float = GRACE_S + 5) -> bool:
    """SIGTERM process group ``pgid``, SIGKILL what is left after ``grace_s``; True once nothing of it is alive.

    The group's leader is a guard (``start_detached``): on SIGTERM it stops its command and kills every
    descendant left, also those that started sessions of their own.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        _reap(pgid)
        if not group_members(pgid) and not process_alive(pgid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    for _ in range(100):
        _reap(pgid)
        if not group_members(pgid) and not process_alive(pgid):
            return True
        time.sleep(0.05)
    return False

if __name__ == "__main__":
    if sys.argv[1:3] != ["--guard", "--"] or len(sys.argv) < 4:
        sys.exit("usage: python resources/processes.py --guard -- COMMAND [ARG ...]")
    sys.exit(_guard(sys.argv[3:]))
