#!/usr/bin/python3
"""A misbehaving RESP2 (Valkey/Redis protocol) server for fault tests.

It listens on 127.0.0.1 (a free port unless given), one thread per client
connection, and normally behaves like a tiny Valkey: PING, AUTH, SELECT, GET,
SET (EX/PX/NX/XX), DEL, EXISTS, INCR, FLUSHALL over an in-memory dict.  A test
switches `mode` at any time to make it answer badly:

  ok             behave
  never          read commands, never answer
  drip           answer correctly, one byte every `drip_s` seconds
  garbage        answer bytes that are not RESP
  wrong_length   answer a bulk whose data is longer than its declared length
  close_mid      answer the start of a bulk, then close the connection
  unsolicited    answer correctly, then answer the same command a second time
  push           answer correctly; `push_after_s` later push a reply that no
                 command asked for
  error          answer every command with the next of `errors` (-ERR, -OOM,
                 -WRONGTYPE by default)
  huge           answer GET with a `huge_bytes` bulk, streamed in 64 KiB
                 chunks (stops when the client goes away)

Faults apply to every command except PING unless `fault_ping` is set (so a
client's connect handshake can succeed and the fault hits the data commands).
`write_modes` limits a fault to the given command names (e.g. {"SET", "DEL"}).
Counters: `connections`, `commands` (name -> count), `log` (list of argv).
Standard library only.  Not shipped with the service.
"""

from __future__ import annotations

import socket
import threading
import time

HOST = "127.0.0.1"
DEFAULT_ERRORS = (b"-ERR fake failure", b"-OOM command not allowed when used memory > 'maxmemory'.",
                  b"-WRONGTYPE Operation against a key holding the wrong kind of value")


def _bulk(v):
    if v is None:
        return b"$-1\r\n"
    return b"$%d\r\n%s\r\n" % (len(v), v)


class RespServer:
    def __init__(self, port=0, mode="ok"):
        self.mode = mode
        self.fault_ping = False
        self.only_commands = None        # a set of command names the fault applies to
        self.drip_s = 0.2
        self.push_after_s = 0.1
        self.huge_bytes = 64 << 20
        self.errors = list(DEFAULT_ERRORS)
        self.data = {}
        self.connections = 0
        self.commands = {}
        self.log = []
        self.huge_sent = 0
        self._lock = threading.Lock()
        self._err_i = 0
        self._stop = threading.Event()
        self._clients = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((HOST, port))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._thread = None

    @property
    def url(self):
        return f"redis://{HOST}:{self.port}"

    # -- lifecycle -----------------------------------------------------------
    def start(self):
        self._thread = threading.Thread(target=self._accept_loop, name="resp-accept", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self._sock.close()
        with self._lock:
            clients = list(self._clients)
        for s in clients:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def drop_clients(self):
        """Close every client connection now (the listener stays)."""
        with self._lock:
            clients, self._clients = list(self._clients), []
        for s in clients:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def count(self, name):
        with self._lock:
            return self.commands.get(name, 0)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- serving ---------------------------------------------------------------
    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                s, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            s.settimeout(0.2)
            with self._lock:
                self.connections += 1
                self._clients.append(s)
            threading.Thread(target=self._serve, args=(s,), name="resp-client", daemon=True).start()

    def _serve(self, s):
        buf = b""
        try:
            while not self._stop.is_set():
                cmd, buf = self._parse(buf)
                if cmd is None:
                    try:
                        chunk = s.recv(65536)
                    except socket.timeout:
                        continue
                    if not chunk:
                        return
                    buf += chunk
                    continue
                if cmd is False:
                    return      # not RESP from the client: hang up
                if not self._answer(s, cmd):
                    return
        except OSError:
            return
        finally:
            with self._lock:
                if s in self._clients:
                    self._clients.remove(s)
            try:
                s.close()
            except OSError:
                pass

    @staticmethod
    def _parse(buf):
        """One command (a list of bytes) from buf: (argv, rest), (None, buf) if
        incomplete, (False, b"") if malformed."""
        if not buf:
            return None, buf
        if buf[:1] != b"*":
            i = buf.find(b"\r\n")     # inline command
            if i < 0:
                return None, buf
            return buf[:i].split(), buf[i + 2:]
        i = buf.find(b"\r\n")
        if i < 0:
            return None, buf
        try:
            n = int(buf[1:i])
        except ValueError:
            return False, b""
        pos, argv = i + 2, []
        for _ in range(n):
            j = buf.find(b"\r\n", pos)
            if j < 0:
                return None, buf
            if buf[pos:pos + 1] != b"$":
                return False, b""
            ln = int(buf[pos + 1:j])
            if len(buf) < j + 2 + ln + 2:
                return None, buf
            argv.append(buf[j + 2:j + 2 + ln])
            pos = j + 2 + ln + 2
        return argv, buf[pos:]

    def _faulted(self, name):
        if self.mode == "ok":
            return False
        if name == "PING" and not self.fault_ping:
            return False
        return self.only_commands is None or name in self.only_commands

    def _answer(self, s, argv):
        name = argv[0].decode("ascii", "replace").upper() if argv else ""
        with self._lock:
            self.commands[name] = self.commands.get(name, 0) + 1
            self.log.append(argv)
        mode = self.mode if self._faulted(name) else "ok"
        if mode == "never":
            return True
        if mode == "garbage":
            s.sendall(b"%\x00\xffnot resp at all\r\n")
            return True
        if mode == "wrong_length":
            s.sendall(b"$3\r\n\"abcdefgh\"\r\n")
            return True
        if mode == "close_mid":
            s.sendall(b"$100\r\n\"abc")
            time.sleep(0.05)
            return False
        if mode == "error":
            with self._lock:
                e = self.errors[self._err_i % len(self.errors)]
                self._err_i += 1
            s.sendall(e + b"\r\n")
            return True
        if mode == "huge" and name == "GET":
            return self._send_huge(s)
        reply = self._execute(name, argv[1:])
        if mode == "drip":
            for i in range(len(reply)):
                if self._stop.is_set():
                    return False
                s.sendall(reply[i:i + 1])
                time.sleep(self.drip_s)
            return True
        s.sendall(reply)
        if mode == "unsolicited":
            s.sendall(reply)
        elif mode == "push":
            def later():
                time.sleep(self.push_after_s)
                try:
                    s.sendall(b":1\r\n")
                except OSError:
                    pass
            threading.Thread(target=later, daemon=True).start()
        return True

    def _send_huge(self, s):
        n = self.huge_bytes
        chunk = b"x" * 65536
        sent = 0
        s.settimeout(2.0)
        try:
            s.sendall(b"$%d\r\n\"" % n)     # a JSON string, so a client that keeps it could serve it
            sent = 1
            while sent < n - 1 and not self._stop.is_set():
                part = chunk[:min(len(chunk), n - 1 - sent)]
                s.sendall(part)
                sent += len(part)
                with self._lock:
                    self.huge_sent = sent
            s.sendall(b"\"\r\n")
        except OSError:
            return False
        return True

    def _execute(self, name, args):
        with self._lock:
            d = self.data
            if name == "PING":
                return b"+PONG\r\n"
            if name in ("AUTH", "SELECT"):
                return b"+OK\r\n"
            if name == "FLUSHALL":
                d.clear()
                return b"+OK\r\n"
            if name == "GET" and len(args) == 1:
                return _bulk(d.get(args[0]))
            if name == "SET" and len(args) >= 2:
                opts = [a.upper() for a in args[2:]]
                if b"NX" in opts and args[0] in d:
                    return b"$-1\r\n"
                if b"XX" in opts and args[0] not in d:
                    return b"$-1\r\n"
                d[args[0]] = args[1]
                return b"+OK\r\n"
            if name == "DEL":
                n = sum(1 for k in args if d.pop(k, None) is not None)
                return b":%d\r\n" % n
            if name == "EXISTS":
                return b":%d\r\n" % sum(1 for k in args if k in d)
            if name == "INCR" and len(args) == 1:
                v = int(d.get(args[0], b"0")) + 1
                d[args[0]] = b"%d" % v
                return b":%d\r\n" % v
            if name in ("EVAL", "EVALSHA"):
                return b":1\r\n"
            return b"-ERR unknown command '%s'\r\n" % name.encode()


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--mode", default="ok")
    a = ap.parse_args()
    srv = RespServer(a.port, a.mode).start()
    print(f"listening on {srv.url} in mode {srv.mode}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()
