# tests/python/test_proxy.py - the test proxy itself: forwarding, stalls, limits, black holes, cuts, records.
import select
import socket
import time

from proxy import TcpProxy


def readable(sock, seconds):
    return bool(select.select([sock], [], [], seconds)[0])


def read_n(sock, n):
    data = b""
    while len(data) < n:
        assert readable(sock, 5), f"only {data!r} arrived"
        chunk = sock.recv(n - len(data))
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def upstream():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s


def test_forwards_stalls_and_resumes():
    up = upstream()
    with TcpProxy(*up.getsockname()) as p, up:
        c = socket.create_connection(("127.0.0.1", p.port))
        assert readable(up, 5)
        s, _ = up.accept()
        c.sendall(b"ping")
        assert read_n(s, 4) == b"ping"
        s.sendall(b"pong")
        assert read_n(c, 4) == b"pong"

        p.stall()
        c.sendall(b"more")
        s.sendall(b"late")
        assert not readable(s, 0.3) and not readable(c, 0.3)
        # A connection made while stalled is black-holed: the upstream never sees it.
        c2 = socket.create_connection(("127.0.0.1", p.port))
        c2.sendall(b"hello")
        assert not readable(up, 0.3) and not readable(c2, 0.1)

        p.resume()
        assert read_n(s, 4) == b"more"
        assert read_n(c, 4) == b"late"
        assert p.accepted == 2
        assert p.saw(0, b"pingmore") and not p.saw(0, b"pong")
        assert p.saw(1, b"hello")
        for x in (c, c2, s):
            x.close()


def test_limits_stall_a_connection_after_n_bytes():
    up = upstream()
    with TcpProxy(*up.getsockname()) as p, up:
        p.limit(to_server=3, to_client=2)
        c = socket.create_connection(("127.0.0.1", p.port))
        assert readable(up, 5)
        s, _ = up.accept()
        s.sendall(b"abcdef")
        assert read_n(c, 2) == b"ab"
        assert not readable(c, 0.3)
        c.sendall(b"xyz123")
        assert read_n(s, 3) == b"xyz"
        assert not readable(s, 0.3)
        c.close()
        s.close()


def test_without_upstream_every_connection_is_black_holed_and_recorded():
    with TcpProxy() as p:
        c = socket.create_connection(("127.0.0.1", p.port))
        c.sendall(b"secret handshake")
        assert not readable(c, 0.3)
        deadline = time.monotonic() + 5
        while p.recorded(0) != b"secret handshake" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert p.recorded(0) == b"secret handshake"
        assert p.recorded(1) == b""
        c.close()


def test_urls_point_at_the_proxy():
    with TcpProxy() as p:
        assert p.url("postgresql://u:pw@db.example:5432/db?x=1") == \
            f"postgresql://u:pw@127.0.0.1:{p.port}/db?x=1"
        assert p.url("mongodb://localhost/keel") == f"mongodb://127.0.0.1:{p.port}/keel"


def test_cut_closes_every_connection_and_relays_new_ones():
    up = upstream()
    with TcpProxy(*up.getsockname()) as p, up:
        c = socket.create_connection(("127.0.0.1", p.port))
        assert readable(up, 5)
        s, _ = up.accept()
        c.sendall(b"ping")
        assert read_n(s, 4) == b"ping"
        p.cut()
        # Both ends read the end of their stream.
        assert readable(c, 5) and c.recv(16) == b""
        assert readable(s, 5) and s.recv(16) == b""
        c2 = socket.create_connection(("127.0.0.1", p.port))
        assert readable(up, 5)
        s2, _ = up.accept()
        c2.sendall(b"again")
        assert read_n(s2, 5) == b"again"
        for x in (c, s, c2, s2):
            x.close()
