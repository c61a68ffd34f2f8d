# tests/python/proxy.py - a TCP proxy for tests: forwards to a server, stalls, black-holes, records.
"""A local TCP proxy that makes a real server fall silent when a test says so.

    with TcpProxy("127.0.0.1", 5432) as proxy:        # TcpProxy() alone black-holes everything
        url = proxy.url(PG_URL)                        # the server's URL through the proxy
        ...                                            # connect, run a statement
        proxy.stall()                                  # from now on the server says nothing
        proxy.cut()                                    # or: every connection closes at once
        ...                                            # the next statement meets a silent peer

It runs on a thread of its own, so it keeps working whatever the event loop under test does, and
serves synchronous callers (a subprocess running the keel CLI) too. Modes, per connection:

- forwarding: bytes go both ways (the default when an upstream is given);
- stalled: after stall(), or once a connection reached the byte limits set by limit(): nothing
  is read or forwarded any more (the bytes wait in the kernel's buffers, so resume() carries on
  where it stopped);
- black-holed: accepted and never answered; what the client sends is read, recorded and
  dropped, and no upstream connection is made. Every connection of a proxy without an
  upstream, and every connection accepted while the proxy is stalled (a PostgreSQL cancel
  request or a MySQL KILL connection then meets a silent server too).

What clients send, as far as the proxy reads it, is recorded per connection (recorded(i),
saw(i, needle)), so a test can check what reached the wire.
"""
from __future__ import annotations

import selectors
import socket
import threading
import urllib.parse

_CHUNK = 65536
_RECORD_MAX = 1 << 20
_UNLIMITED = float("inf")


class _Direction:
    __slots__ = ("src", "dst", "pending", "total", "limit", "eof")

    def __init__(self, src: socket.socket | None, dst: socket.socket | None, limit: float):
        self.src = src
        self.dst = dst
        self.pending = b""
        self.total = 0
        self.limit = limit
        self.eof = False


class _Relay:
    __slots__ = ("client", "server", "up", "down", "stalled", "closed", "record")

    def __init__(self, client: socket.socket, server: socket.socket | None,
                 limit_up: float, limit_down: float):
        self.client = client
        self.server = server
        self.up = _Direction(client, server, limit_up)
        self.down = _Direction(server, client, limit_down)
        self.stalled = False
        self.closed = False
        self.record = bytearray()

    def may_read(self, d: _Direction) -> bool:
        return not self.stalled and not d.pending and not d.eof and d.total < d.limit

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.client.close()
            if self.server is not None:
                self.server.close()


class TcpProxy:
    """A proxy on 127.0.0.1 (an ephemeral port) relaying to host:port, or black-holing every
    connection when host is None. Use as a context manager, or call close()."""

    def __init__(self, host: str | None = None, port: int = 0) -> None:
        self._upstream = (host, port) if host is not None else None
        self._lock = threading.Lock()
        self._stalled = False
        self._limit_up: float = _UNLIMITED
        self._limit_down: float = _UNLIMITED
        self._relays: list[_Relay] = []
        self._quit = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._thread = threading.Thread(target=self._run, name=f"proxy:{self.port}", daemon=True)
        self._thread.start()

    # ---- control ----

    def stall(self) -> None:
        """Stops forwarding on every connection now; new connections are black-holed."""
        self._set_stalled(True)

    def cut(self) -> None:
        """Closes every connection accepted so far, both sides, at once: the client reads the end
        of its stream (or a reset) in the middle of whatever it was doing, as when a server
        crashes. Connections accepted later are relayed (or black-holed) as before."""
        with self._lock:
            for r in self._relays:
                r.close()
        self._wake()

    def resume(self) -> None:
        """Forwards again on connections stalled by stall(); new ones are relayed again."""
        self._set_stalled(False)

    def limit(self, to_server: float = _UNLIMITED, to_client: float = _UNLIMITED) -> None:
        """Connections accepted from now on stall once they have forwarded to_server bytes from
        the client or to_client bytes from the server. limit(to_client=0) accepts and never
        answers, while the upstream still sees the connection."""
        with self._lock:
            self._limit_up = to_server
            self._limit_down = to_client

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        with self._lock:
            return len(self._relays)

    def recorded(self, index: int) -> bytes:
        """What the client of connection index (0: the first accepted) sent, as far as read."""
        with self._lock:
            return bytes(self._relays[index].record) if index < len(self._relays) else b""

    def saw(self, index: int, needle: bytes) -> bool:
        return needle in self.recorded(index)

    def url(self, url: str) -> str:
        """url with its host and port replaced by the proxy's."""
        parts = urllib.parse.urlsplit(url)
        userinfo, _, _ = parts.netloc.rpartition("@")
        netloc = (userinfo + "@" if userinfo else "") + f"127.0.0.1:{self.port}"
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))

    def close(self) -> None:
        """Closes every connection and the listener and stops the thread."""
        with self._lock:
            self._quit = True
        self._wake()
        self._thread.join(10)
        for r in self._relays:
            r.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _set_stalled(self, stalled: bool) -> None:
        with self._lock:
            self._stalled = stalled
            for r in self._relays:
                if r.server is not None:
                    r.stalled = stalled
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a full or closed pipe: the thread wakes (or has stopped) anyway

    # ---- the proxy thread ----

    def _connect_upstream(self) -> socket.socket | None:
        assert self._upstream is not None
        try:
            s = socket.create_connection(self._upstream, timeout=5)
        except OSError:
            return None
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        return s

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        client.setblocking(False)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server = None
        if self._upstream is not None and not self._stalled:
            server = self._connect_upstream()
            if server is None:  # the upstream is down: the client sees a refusal
                client.close()
                return
        self._relays.append(_Relay(client, server, self._limit_up, self._limit_down))

    @staticmethod
    def _record(r: _Relay, data: bytes) -> None:
        room = _RECORD_MAX - len(r.record)
        if room > 0:
            r.record += data[:room]

    def _read(self, r: _Relay, d: _Direction, from_client: bool) -> bool:
        assert d.src is not None
        room = _CHUNK if d.limit == _UNLIMITED else min(_CHUNK, int(d.limit - d.total))
        try:
            data = d.src.recv(room)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not data:
            d.eof = True
            if d.dst is not None:
                try:
                    d.dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            return True
        if from_client:
            self._record(r, data)
        d.pending = data
        d.total += len(data)
        return True

    @staticmethod
    def _write(d: _Direction) -> bool:
        assert d.dst is not None
        try:
            n = d.dst.send(d.pending)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        d.pending = d.pending[n:]
        if not d.pending and d.eof:
            try:
                d.dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        return True

    def _drain(self, r: _Relay) -> bool:
        try:
            data = r.client.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not data:
            return False
        self._record(r, data)
        return True

    def _events(self, r: _Relay) -> tuple[int, int]:
        if r.closed:
            return 0, 0
        if r.server is None:
            return selectors.EVENT_READ, 0
        ce = se = 0
        if r.may_read(r.up):
            ce |= selectors.EVENT_READ
        if r.down.pending and not r.stalled:
            ce |= selectors.EVENT_WRITE
        if r.may_read(r.down):
            se |= selectors.EVENT_READ
        if r.up.pending and not r.stalled:
            se |= selectors.EVENT_WRITE
        return ce, se

    def _ready(self, r: _Relay, ce: int, se: int) -> None:
        if r.closed:  # cut while the thread selected: its sockets are gone
            return
        ok = True
        if r.server is None:
            if ce & selectors.EVENT_READ:
                ok = self._drain(r)
        else:
            if ce & selectors.EVENT_READ and r.may_read(r.up):
                ok = self._read(r, r.up, True)
            if ok and se & selectors.EVENT_READ and r.may_read(r.down):
                ok = self._read(r, r.down, False)
            if ok and ce & selectors.EVENT_WRITE and r.down.pending:
                ok = self._write(r.down)
            if ok and se & selectors.EVENT_WRITE and r.up.pending:
                ok = self._write(r.up)
            if r.up.eof and r.down.eof and not r.up.pending and not r.down.pending:
                ok = False
        if not ok:
            r.close()

    def _run(self) -> None:
        while True:
            sel = selectors.DefaultSelector()
            with self._lock:
                if self._quit:
                    sel.close()
                    return
                sel.register(self._listener, selectors.EVENT_READ, ("listen", None))
                sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
                for r in self._relays:
                    ce, se = self._events(r)
                    if ce:
                        sel.register(r.client, ce, ("client", r))
                    if se:
                        assert r.server is not None
                        sel.register(r.server, se, ("server", r))
            ready = sel.select()
            sel.close()
            with self._lock:
                if self._quit:
                    return
                events: dict[int, list[int]] = {}
                relays: dict[int, _Relay] = {}
                for key, mask in ready:
                    kind, r = key.data
                    if kind == "listen":
                        self._accept()
                    elif kind == "wake":
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except (BlockingIOError, OSError):
                            pass
                    else:
                        slot = events.setdefault(id(r), [0, 0])
                        slot[0 if kind == "client" else 1] |= mask
                        relays[id(r)] = r
                for rid, (ce, se) in events.items():
                    self._ready(relays[rid], ce, se)
