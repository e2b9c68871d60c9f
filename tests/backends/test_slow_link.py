"""Slow links: an upload is timed from the last byte that left the machine (cartsync/backends/sockets.py).

On a link slower than what the kernel buffers per idle timeout (10 KB/s and hundreds of KB buffered at the
defaults), the answer to a healthy upload used to time out: the wait for it started when the last byte was
handed to the kernel. Here the fault proxy moves request bodies at 20 KB/s through a small receive window,
with the idle timeout scaled down to 1 s, so a 60 KB body takes 3 s to leave: three idle timeouts."""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from faultproxy import FaultProxy
from helpers import REPO, zenodo_manifest
from s3server import aws_env

from cartsync.backends.sockets import unsent, wait_sent

SCALED = {"CARTSYNC_IDLE_TIMEOUT": "1", "CARTSYNC_CONNECT_TIMEOUT": "1", "CARTSYNC_RETRY_BUDGET": "20"}
RATE = 20_000          # bytes per second
BODY = 60_000          # 3 s at RATE


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **aws_env(), **SCALED, "PYTHONPATH": str(REPO), "AWS_CONFIG_FILE": str(cwd / "none"),
           "CARTSYNC_CACHE_DIR": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "cartsync", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


# ---- the wait itself, on real TCP sockets on loopback -------------------------------------------------

@pytest.fixture
def pair():
    """A connected client socket with a small send buffer, and the server's end (whose reads we control)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    client.connect(server.getsockname())
    peer, _ = server.accept()
    yield client, peer
    for s in (client, peer, server):
        s.close()


def fill(sock: socket.socket) -> int:
    """Write until the kernel takes no more; what it took."""
    sock.setblocking(False)
    total = 0
    try:
        while True:
            total += sock.send(b"x" * 16384)
    except BlockingIOError:
        pass
    sock.setblocking(True)
    return total


def test_a_send_queue_that_never_drains_times_out_after_idle(pair):
    client, _peer = pair                    # the peer never reads
    fill(client)
    assert unsent(client) > 0
    with pytest.raises(TimeoutError, match=r"^no byte of the request was sent in 0.5 s \(\d+ bytes still queued\)$"):
        wait_sent(client, 0.5)


def test_a_queue_that_keeps_draining_is_waited_for_however_long_it_takes(pair):
    client, peer = pair
    written = fill(client)
    got = []

    def slow_reader() -> None:              # 2 KiB per 50 ms: the queue shrinks, slower than the idle bound
        while sum(got) < written:
            got.append(len(peer.recv(2048)))
            time.sleep(0.05)

    reader = threading.Thread(target=slow_reader)
    reader.start()
    wait_sent(client, 0.3)                  # draining takes several idle bounds; no timeout
    assert unsent(client) == 0
    reader.join(timeout=30)
    assert sum(got) == written


def test_an_early_answer_ends_the_wait(pair):
    client, peer = pair
    fill(client)
    peer.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")   # refused, body unread
    wait_sent(client, 30)                   # returns at once: the answer is there to read
    assert client.recv(100).startswith(b"HTTP/1.1 413")


def test_no_bound_means_no_wait(pair):
    client, _peer = pair
    fill(client)
    wait_sent(client, None)


# ---- end to end through a throttled link ----------------------------------------------------------------

def test_s3_upload_on_a_link_slower_than_the_buffers_succeeds_without_a_retry(tmp_path, s3):
    data = os.urandom(BODY)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "slow.bin").write_bytes(data)
    with FaultProxy(s3.endpoint_url, throttle=RATE) as proxy:
        (tmp_path / "m.yaml").write_text(yaml.safe_dump({
            "version": 1, "source": {"dir": "src", "method": "all"},
            "targets": [{"name": "web", "url": f"s3://{s3.bucket}/p", "storage_options": {"endpoint_url": proxy.url}}]}))
        done = run(["apply", "m.yaml", "--no-progress"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("web: 1 created, 0 replaced, 0 deleted;") and done.stdout.rstrip().endswith(
        ", 0 retries."), done.stdout
    assert s3.get_object_bytes(s3.bucket, "p/slow.bin") == data


def test_zenodo_upload_on_a_link_slower_than_the_buffers_succeeds_without_a_retry(tmp_path, zenodo):
    data = os.urandom(BODY)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "slow.bin").write_bytes(data)
    with FaultProxy(zenodo.url, throttle=RATE) as proxy:
        zenodo.url = proxy.url             # the links Zenodo hands out (bucket PUTs) point through the link too
        m = zenodo_manifest(tmp_path, proxy.url, src="src", method="all")
        done = run(["apply", str(m), "--no-progress"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert ", 0 retries." in done.stdout, done.stdout
    [dep] = zenodo.depositions.values()
    assert dep.files["slow.bin"].md5 == hashlib.md5(data).hexdigest()
