"""``tavrida2 run --reload``: serve in a child process, start it again when a file changes.

For development. The ``tavrida2 run`` process becomes a watcher: it runs the
same command without ``--reload`` as a child process (so ``--workers N`` and
several configs work: the child is then the supervisor, and all its workers
are restarted together) and watches, with the ``watchfiles`` library
(``pip install 'tavrida2[reload]'``):

- the folder of each config file (controllers are looked up there first; its
  ``.ds`` files are usually there too),
- the ``services`` folder of each config file that names one,
- every ``--reload-dir``.

A change of a ``.py``, ``.ini`` or ``.ds`` file (changes are grouped for
``debounce`` ms) stops the child as SIGTERM does (it finishes the messages in
hand, within its ``stop_timeout``) and starts a new one. A child that exits by
itself — a controller with a syntax error makes it exit at once with status 2
and the error on stderr — is reported, and the watcher waits for the next
change to start it again. SIGINT or SIGTERM stops the child and the watcher.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Iterable, Sequence
from types import FrameType
from typing import Any

from tavrida2 import configfile, exceptions
from tavrida2.engine import DEFAULT_STOP_TIMEOUT

log = logging.getLogger(__name__)

#: The files whose changes restart the server.
WATCHED_SUFFIXES = (".py", ".ini", ".ds")
#: Milliseconds over which changes are grouped into one restart.
DEFAULT_DEBOUNCE_MS = 500
#: Seconds a stopping child gets past its ``stop_timeout`` (it ends itself by then).
_STOP_GRACE = 5.0
#: Milliseconds the watcher waits for changes before it looks at the child again.
_POLL_MS = 500


def require_watchfiles() -> Any:
    """The ``watchfiles`` module; ``ConfigError`` saying how to install it if missing."""
    try:
        import watchfiles
    except ImportError:
        raise exceptions.ConfigError(
            reason="--reload needs the watchfiles library: pip install 'tavrida2[reload]'"
        ) from None
    return watchfiles


def watched_paths(config_files: Sequence[str], extra: Iterable[str] = ()) -> list[str]:
    """The folders watched for ``config_files`` (see the module docstring), each once.

    Reads the files' ``[server]`` sections only: no controller is imported here.
    """
    paths: list[str] = []
    for path in config_files:
        server = configfile.read_sections(path).get("server", {})
        paths.append(os.path.dirname(os.path.abspath(path)))
        folder = configfile.services_folder(path, server)
        if folder is not None:
            paths.append(folder)
    for folder in extra:
        if not os.path.isdir(folder):
            raise exceptions.ConfigError(reason=f"--reload-dir {folder}: no such folder")
        paths.append(os.path.abspath(folder))
    return [p for p in dict.fromkeys(paths) if os.path.isdir(p)]


def stop_timeout_of(config_files: Sequence[str]) -> float:
    """The longest ``stop_timeout`` of ``config_files``: how long a child may take to stop."""
    timeouts = [DEFAULT_STOP_TIMEOUT]
    for path in config_files:
        value = configfile.read_sections(path).get("server", {}).get("stop_timeout")
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            timeouts.append(float(value))
    return max(timeouts)


def is_watched(change: Any, path: str) -> bool:
    """Whether a change of ``path`` restarts the server (``watchfiles``' filter signature)."""
    name = os.path.basename(path)
    return name.endswith(WATCHED_SUFFIXES) and not name.startswith(".")


class Reloader:
    """Runs ``command`` as a child process; starts it again when a watched file changes.

    Example::

        Reloader([sys.executable, "-m", "tavrida2", "run", "hello.ini"],
                 ["samples/deploy"], stop_timeout=30).run()
    """

    def __init__(
        self,
        command: Sequence[str],
        paths: Sequence[str],
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        debounce_ms: int = DEFAULT_DEBOUNCE_MS,
    ) -> None:
        self._watchfiles = require_watchfiles()
        if not paths:
            raise exceptions.ConfigError(reason="--reload: no folder to watch")
        self.command = list(command)
        self.paths = list(paths)
        self.stop_timeout = stop_timeout
        self.debounce_ms = debounce_ms
        self._child: subprocess.Popen[bytes] | None = None
        self._reported_exit = False
        self._stop = threading.Event()

    def run(self) -> int:
        """Serve and watch until SIGINT or SIGTERM; the last child's exit status."""
        previous = self._trap_signals()
        try:
            log.info("reload: watching %s", ", ".join(self.paths))
            self._start()
            for changes in self._watchfiles.watch(
                *self.paths,
                watch_filter=is_watched,
                debounce=self.debounce_ms,
                stop_event=self._stop,
                rust_timeout=_POLL_MS,
                yield_on_timeout=True,
                raise_interrupt=False,
            ):
                if changes:
                    names = sorted({os.path.relpath(path) for _, path in changes})
                    log.info("reload: %s changed; restarting the server", ", ".join(names))
                    self._stop_child()
                    self._start()
                else:
                    self._check_child()
        finally:
            self._restore_signals(previous)
            self._stop_child()
        child = self._child
        return 0 if child is None or child.returncode is None else abs(child.returncode)

    def stop(self) -> None:
        """Stop watching (the child is stopped as :meth:`run` returns)."""
        self._stop.set()

    def _start(self) -> None:
        # a process group of its own: a Ctrl-C in the terminal reaches the watcher
        # only, which stops the child with one SIGTERM (a second signal would make
        # it leave its handlers at once)
        self._child = subprocess.Popen(self.command, process_group=0)
        self._reported_exit = False

    def _check_child(self) -> None:
        """Report, once, a child that exited by itself (e.g. a controller that does not import)."""
        child = self._child
        if child is None or self._reported_exit or child.poll() is None:
            return
        self._reported_exit = True
        log.error(
            "reload: the server exited with status %s; it starts again when a file changes",
            child.returncode,
        )

    def _stop_child(self) -> None:
        child = self._child
        if child is None or child.poll() is not None:
            return
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(self.stop_timeout + _STOP_GRACE)
        except subprocess.TimeoutExpired:
            log.error("reload: the server did not stop; killing it")
            child.kill()
            child.wait()

    def _trap_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handle(signum: int, frame: FrameType | None) -> None:
            log.info("reload: signal %s: stopping", signal.Signals(signum).name)
            self._stop.set()

        return {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


__all__ = [
    "DEFAULT_DEBOUNCE_MS",
    "WATCHED_SUFFIXES",
    "Reloader",
    "is_watched",
    "require_watchfiles",
    "stop_timeout_of",
    "watched_paths",
]
