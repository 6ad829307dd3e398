"""`nin` as its own process, without a new interpreter: children forked from a preloaded server.

A `nin` subprocess spends 3-6 s importing Python, torch and Hydra before it does anything; most
tests need a separate process only for what a process gives (its own exit code, signals, locks,
globals, a death by SIGKILL). A multiprocessing forkserver imports nin once; each call forks a
child from it, which sets its working directory, environment and file descriptors like a fresh
process and then runs `nin_cli.interface.cli.main`. The server never runs a torch op, so no thread pool is
copied half-alive into a child. Exit codes follow `subprocess`: the code of `sys.exit`, or minus
the signal that killed the child.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.forkserver
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

# What a child would otherwise import itself: torch._dynamo (1.6 s; torch.optim imports it when it
# builds its first optimizer) and the plotting of reports (1.1 s) above all.
PRELOAD = [
    "nin_cli.interface.cli",
    "nin_cli.interface.runner",
    "nin_cli.config.preflight",
    "nin_cli.robustness.evaluate",
    "nin_cli.analysis.summarize",
    "nin_cli.analysis.report",
    "nin_cli.analysis.plots",
    "nin_cli.analysis.progress",
    "hydra_plugins.nin_batched_launcher",
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher",
    "torch._dynamo",
    "forkserver_plugins",  # Hydra's plugin registry, scanned once (0.25 s a child otherwise)
]
_context: multiprocessing.context.ForkServerContext | None = None


def _ctx() -> multiprocessing.context.ForkServerContext:
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
        # The server is a new interpreter that does not take this one's sys.path (Python 3.11's
        # forkserver passes it along unused): tests/ is on its PYTHONPATH while it starts, for
        # forkserver_plugins, which takes it off its sys.path again.
        here = os.path.dirname(os.path.abspath(__file__))
        before = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, before) if p)
        try:
            multiprocessing.forkserver.ensure_running()
        finally:
            if before is None:
                os.environ.pop("PYTHONPATH")
            else:
                os.environ["PYTHONPATH"] = before
    return _context


def nin_main(args: list) -> None:
    """The `nin` command line."""
    from nin_cli.interface.cli import main

    main(args)


def train_run(cfg, run_dir: str) -> None:
    """The engine alone (a composed config, a run directory), failing as `nin train` does: one line."""
    from nin_cli.errors import one_line_errors
    from nin_cli.train import train

    with one_line_errors():
        train(cfg, Path(run_dir))


def _child(target: Callable, args: tuple, cwd: str, env: dict[str, str], out: str, err: str) -> None:
    """The body of a forked `nin`: a fresh process's cwd, environment, stdio and signal dispositions."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    # A fresh interpreter reads PYTHONPATH at start: entries the server did not start with go first.
    added = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    sys.path[:0] = added
    if added:  # Hydra plugins of its own may be there: the registry the server scanned is dropped, scanned anew
        from hydra.core.plugins import Plugins
        from hydra.core.singleton import Singleton

        Singleton._instances.pop(Plugins, None)
    for fd, path in ((1, out), (2, err)):
        opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(opened, fd)
        os.close(opened)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - a process's own stdio
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    sys.argv = ["nin", *args[0]] if target is nin_main else [target.__name__]
    code = 0
    try:
        target(*args)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if not isinstance(exit_.code, int | None):
            print(exit_.code, file=sys.stderr)
    except BaseException:  # what the interpreter does with an uncaught exception
        import traceback

        traceback.print_exc()
        code = 1
    threading._shutdown()  # as the interpreter ends: join non-daemon threads (joblib's executor stops its workers)
    atexit._run_exitfuncs()  # then the atexit handlers
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def environment(env: dict | None) -> dict[str, str]:
    """os.environ updated by `env`, where a value of None removes the variable, as a new process gets it."""
    full = {**os.environ, "PYTHONUNBUFFERED": "1"}
    full.pop("PYTEST_CURRENT_TEST", None)
    for key, value in (env or {}).items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = str(value)
    return full


class RunningNin:
    """A `nin` running beside a test; its stdout and stderr go to files, read at any moment (a process stopped
    at a fault point has no pipe to drain)."""

    def _open_outputs(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="nin-run-")
        self._out, self._err = os.path.join(self._dir, "stdout"), os.path.join(self._dir, "stderr")

    @property
    def stdout(self) -> str:
        return Path(self._out).read_text(errors="replace") if os.path.exists(self._out) else ""

    @property
    def stderr(self) -> str:
        return Path(self._err).read_text(errors="replace") if os.path.exists(self._err) else ""

    def poll(self) -> int | None:
        raise NotImplementedError

    def wait(self, timeout: float | None = None) -> int:
        raise NotImplementedError

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def result(self, timeout: float | None = None) -> subprocess.CompletedProcess:
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait()
            raise
        done = subprocess.CompletedProcess(self.args, self.returncode, self.stdout, self.stderr)
        shutil.rmtree(self._dir, ignore_errors=True)
        return done


class StartedNin(RunningNin):
    """A `nin` started as a new program (`python -m nin_cli`, a console script), with ForkedNin's interface."""

    def __init__(self, command: list[str], cwd: Path | None = None, env: dict | None = None):
        self.args = command
        self._open_outputs()
        with open(self._out, "w") as out, open(self._err, "w") as err:
            self._proc = subprocess.Popen(command, cwd=cwd, env=environment(env), stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        self.pid: int = self._proc.pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        self.returncode = self._proc.poll()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self.returncode = self._proc.wait(timeout)
        return self.returncode


class ForkedNin(RunningNin):
    """A running forked `nin`, with the part of `subprocess.Popen` the tests use."""

    def __init__(self, args: list, cwd: Path | None = None, env: dict | None = None, target: Callable = nin_main):
        self.args = ["nin", *args] if target is nin_main else [target.__name__, str(args[-1])]
        self._open_outputs()
        full_env = environment(env)
        call = (list(args),) if target is nin_main else tuple(args)  # nin_main takes the argument list
        spec = (target, call, str(cwd or os.getcwd()), full_env, self._out, self._err)
        self._proc = _ctx().Process(target=_child, args=spec)
        self._proc.start()
        self.pid: int = self._proc.pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not self._proc.is_alive():
            self._proc.join()
            self.returncode = self._proc.exitcode
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._proc.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode
