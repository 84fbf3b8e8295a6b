"""A real redis-server for the tests, on a free 127.0.0.1 port with no
persistence (start / kill / restart), and a minimal RESP2 client."""
import socket
import subprocess
import time
from pathlib import Path

from . import Closing
from .proc import HOST, free_port, kill_group

REDIS_SERVER = "/usr/bin/redis-server"


class RedisError(Exception):
    pass


class Resp(Closing):
    """A minimal RESP2 client over a socket (commands the tests need)."""

    def __init__(self, port, timeout=3.0):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.f = self.sock.makefile("rb")

    def cmd(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode("utf-8")
            elif not isinstance(a, bytes):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _read(self):
        line = self.f.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RedisError(f"bad reply {line!r}")

    def close(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass


class RedisServer:
    """A redis-server on 127.0.0.1:<port>, no persistence; start/kill/restart."""

    def __init__(self, workdir, port=None):
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.proc = None
        self.log_path = self.workdir / f"redis-{self.port}.log"

    def start(self):
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--dir", str(self.workdir), "--loglevel", "warning",
                "--logfile", "", "--databases", "2"]
        deadline = time.monotonic() + 10
        while True:
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                             start_new_session=True)
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with Resp(self.port, timeout=1) as r:
                        if r.cmd("PING") == "PONG":
                            return self
                except (OSError, RedisError):
                    time.sleep(0.02)
            if self.proc.poll() is not None and time.monotonic() < deadline:
                time.sleep(0.1)  # the port may still be held for a moment after a kill
                continue
            self.kill()
            raise RuntimeError(f"redis-server did not start on port {self.port}: {self.log()[-2000:]}")

    def kill(self):
        """SIGKILL, like a crashed Valkey."""
        kill_group(self.proc)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def client(self):
        return Resp(self.port)

    def cmd(self, *args):
        with Resp(self.port) as r:
            return r.cmd(*args)

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


    def close(self):
        """kill(); returns no problems (a test may have killed it on purpose)."""
        self.kill()
        return []
