#!/usr/bin/python3
"""Talk to a zpipes broker with libzmq (pyzmq), as a C or Python client would.

Usage: interop.py ENDPOINT

Run by TestInteropLibzmq. It prints one "ok ..." line per check and exits
with status 1 and a "FAIL ..." line on the first failure. Every socket has
send and receive timeouts and LINGER 0, so the script cannot hang.
"""

import json
import sys
import time

import zmq

TIMEOUT_MS = 5000
MIB = 1 << 20


class Failure(Exception):
    pass


def fail(msg):
    raise Failure(msg)


def ok(msg):
    print("ok " + msg, flush=True)


def b(s):
    return s if isinstance(s, bytes) else s.encode()


class Peer:
    """A libzmq socket with bounded waits and named steps."""

    def __init__(self, ctx, kind, name, endpoint, identity=None):
        self.name = name
        self.sock = ctx.socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
        self.sock.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
        if identity is not None:
            self.sock.setsockopt(zmq.IDENTITY, identity)
        self.sock.connect(endpoint)

    def send(self, *frames):
        try:
            self.sock.send_multipart([b(f) for f in frames])
        except zmq.Again:
            fail("%s: send %r timed out after %d ms" % (self.name, frames[:2], TIMEOUT_MS))

    def recv(self, what):
        try:
            return self.sock.recv_multipart()
        except zmq.Again:
            fail("%s: no reply to %s within %d ms" % (self.name, what, TIMEOUT_MS))

    def pending(self):
        """Whether a reply is ready now, without waiting."""
        return self.sock.poll(0, zmq.POLLIN) != 0

    def call(self, *frames):
        self.send(*frames)
        return self.recv(show(frames[:2]))

    def expect(self, want, *frames):
        got = self.call(*frames)
        if got != [b(w) for w in want]:
            fail("%s: %s -> %s, want %s" % (self.name, show(frames), show(got), show(want)))
        return got

    def close(self):
        self.sock.close()


def show(frames):
    """Frames for a message, long ones abbreviated."""
    out = []
    for f in frames:
        f = b(f)
        out.append(repr(f) if len(f) <= 40 else "<%d bytes>" % len(f))
    return "[" + ", ".join(out) + "]"


def pipes(peer):
    """LIST, decoded: pipe name -> info."""
    got = peer.call("LIST")
    if len(got) != 2 or got[0] != b"OK":
        fail("%s: LIST -> %s, want [OK, json]" % (peer.name, show(got)))
    return {p["name"]: p for p in json.loads(got[1])}


def wait_reader(peer, pipe):
    """Poll LIST until the broker has a READ waiting on pipe."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        if pipes(peer).get(pipe, {}).get("reader"):
            return
        time.sleep(0.001)
    fail("%s: broker never reported a reader waiting on %r" % (peer.name, pipe))


def basic(peer, pipe):
    """OPEN, WRITE awkward chunks, READ them back, errors, CLOSE."""
    tag = peer.name
    peer.expect(["OK"], "OPEN", pipe)
    ok(tag + " open")

    big = bytes(range(256)) * (MIB // 256)
    chunks = [b"ERROR", b"OK", b"", b"\x00\xff\n", big]
    for c in chunks:
        peer.expect(["OK"], "WRITE", pipe, c)
    ok(tag + " write (ERROR, OK, empty, binary, 1 MiB)")
    for c in chunks:
        got = peer.call("READ", pipe)
        if got != [c]:
            fail("%s: READ -> %s, want %s" % (tag, show(got), show([c])))
    ok(tag + " read back")

    batch = [b("m%d" % i) for i in range(10)]
    peer.expect(["OK"], "MWRITE", pipe, *batch)
    ok(tag + " mwrite")
    got = []
    while len(got) < len(batch):
        reply = peer.call("MREAD", pipe, "4")
        if len(reply) < 2 or len(reply) > 5 or reply[0] != b"OK":
            fail("%s: MREAD 4 -> %s, want [OK, 1 to 4 chunks]" % (tag, show(reply)))
        got += reply[1:]
    if got != batch:
        fail("%s: MREAD returned %s, want %s" % (tag, show(got), show(batch)))
    ok(tag + " mread")

    peer.expect(["ERROR", "no such pipe"], "READ", pipe + "-missing")
    peer.expect(["ERROR", 'unknown command: "FOO"'], "FOO", pipe)
    ok(tag + " errors are [ERROR, reason]")

    peer.expect(["OK"], "CLOSE", pipe)
    if pipe in pipes(peer):
        fail("%s: pipe %r still listed after CLOSE" % (tag, pipe))
    ok(tag + " close")


def extensions(dealer, req):
    """UNREAD puts chunks back at the head; CANCEL answers a waiting READ."""
    pipe = "interop ext"
    dealer.expect(["OK"], "OPEN", pipe)
    dealer.expect(["OK"], "MWRITE", pipe, "a", "b", "c")
    req.expect(["OK", "a", "b"], "MREAD", pipe, "2")
    req.expect(["OK"], "UNREAD", pipe, "a", "b")
    got = req.call("UNREAD", pipe, "x")
    if got[:1] != [b"ERROR"] or not got[1].startswith(b"bad request: UNREAD of 1 chunks"):
        fail("req: UNREAD of what it did not take -> %s, want [ERROR, bad request...]" % show(got))
    for want in ["a", "b", "c"]:
        req.expect([want], "READ", pipe)
    ok("unread")

    dealer.send("READ", pipe)
    wait_reader(req, pipe)
    dealer.send("CANCEL", pipe)
    got = [dealer.recv("READ"), dealer.recv("CANCEL")]
    if got != [[b"ERROR", b"cancelled"], [b"OK"]]:
        fail("dealer: READ, CANCEL -> %s, want [ERROR, cancelled], [OK]" % got)
    dealer.expect(["OK"], "CLOSE", pipe)
    ok("cancel")


def waiting_read(reader, writer, pipe):
    """A READ on an empty pipe waits, and is answered by another's WRITE."""
    reader.expect(["OK"], "OPEN", pipe)
    reader.send("READ", pipe)
    wait_reader(writer, pipe)
    if reader.pending():
        fail("%s: READ on an empty pipe answered at once: %s" % (reader.name, reader.recv("READ")))
    writer.expect(["OK"], "WRITE", pipe, "wake up")
    got = reader.recv("the waiting READ")
    if got != [b"wake up"]:
        fail("%s: waiting READ -> %s, want ['wake up']" % (reader.name, show(got)))
    reader.expect(["OK"], "CLOSE", pipe)
    ok("%s waiting read answered by %s write" % (reader.name, writer.name))


def main():
    if len(sys.argv) != 2:
        print("usage: interop.py ENDPOINT", file=sys.stderr)
        return 2
    endpoint = sys.argv[1]
    print("pyzmq %s, libzmq %s" % (zmq.pyzmq_version(), zmq.zmq_version()), flush=True)
    ctx = zmq.Context()
    peers = []
    try:
        dealer = Peer(ctx, zmq.DEALER, "dealer", endpoint)
        req = Peer(ctx, zmq.REQ, "req", endpoint)
        named = Peer(ctx, zmq.DEALER, "dealer-with-identity", endpoint, identity=b"interop-\x00id")
        peers = [dealer, req, named]
        basic(dealer, "interop dealer")
        basic(req, "interop req")
        basic(named, "interop named")
        extensions(dealer, req)
        waiting_read(dealer, req, "interop wait 1")
        waiting_read(req, named, "interop wait 2")
    except Failure as e:
        print("FAIL " + str(e), flush=True)
        return 1
    finally:
        for p in peers:
            p.close()
        ctx.term()
    print("PASS", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
