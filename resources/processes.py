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
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True) if sys.platform == "linux" else None


def die_with_parent():
    """A ``preexec_fn`` that has the kernel SIGKILL the child when the thread that started it dies.

    So a run process killed with SIGKILL (OOM killer, a lost node, ``kill -9``) leaves no server or
    build behind. Linux only (elsewhere: None, and a killed parent's children live on). The signal
    follows the starting *thread*: start long-lived children from a thread that outlives them.
    Children of the child are not covered: ``serving`` gives each server its own process group and
    a server's workers exit when their arbiter does (checked in tests/reliability/test_bento_faults.py).
    """
    if _LIBC is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return preexec


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
def serving(command: list[str], ready_url: str, log: Path, timeout_s: float = 90, env: dict | None = None, cwd=None):
    """Start ``command``, wait until ``ready_url`` answers 2xx, and stop the process (group) afterwards.

    The process leads a session of its own (its workers are stopped with it) and dies with its parent.
    """
    with open(log, "w") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True,
            preexec_fn=die_with_parent(),
        )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(ready_url, timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{command[:4]} did not start: {Path(log).read_text()[-2000:]}") from None
                time.sleep(0.2)
        yield process
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the whole group (servers fork workers), SIGKILL what is left after 15 s."""
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
