"""Silent servers: every request is abandoned after the idle timeout, a target failing every request
is given up on within the retry budget, every wait shows at -v, and a Retry-After past the budget
fails at once. Against loopback servers that accept and then stall (tests/fakes/stallserver.py), with the
timeouts shortened by the documented environment variables; one test runs at the defaults."""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers import REPO, zenodo_manifest
from s3server import aws_env
from stallserver import StallServer

from cartsync.retry import RetryPolicy, Timeouts

SHORT = {"CARTSYNC_IDLE_TIMEOUT": "1", "CARTSYNC_CONNECT_TIMEOUT": "0.5", "CARTSYNC_RETRY_BUDGET": "6"}
HINT = ("hint: check that the server is up and reachable; CARTSYNC_IDLE_TIMEOUT and CARTSYNC_RETRY_BUDGET set "
        "how long cartsync waits (see the README)\n")


@pytest.fixture
def stall():
    server = StallServer()
    yield server
    server.stop()


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> tuple[int, str, str]:
    full = {**os.environ, **aws_env(), "PYTHONPATH": str(REPO), "AWS_CONFIG_FILE": str(cwd / "none"), **env}
    done = subprocess.run([sys.executable, "-m", "cartsync", *args], check=False, cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def s3_target(name: str, url: str, **options: object) -> dict:
    return {"name": name, "url": f"s3://bkt/{name}", "storage_options": {"endpoint_url": url, **options}}


def manifest(folder: Path, *targets: dict) -> Path:
    src = folder / "src"
    src.mkdir(exist_ok=True)
    (src / "a.tsv").write_text("a\n")
    path = folder / "m.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "source": {"dir": "src", "method": "all"},
                                    "targets": list(targets)}))
    return path


def test_defaults_arithmetic_keeps_a_silent_run_under_five_minutes():
    policy = RetryPolicy()
    assert (policy.timeouts, policy.budget, policy.attempts) == (Timeouts(connect=10, idle=60), 300, 6)
    # the silent schedule with the longest backoff: a try starts only while budget - connect - idle is not past
    start, tries = 0.0, 0
    while start <= policy.budget - policy.timeouts.connect - policy.timeouts.idle and tries < policy.attempts:
        tries += 1
        end = start + policy.timeouts.idle
        start = end + min(policy.max_wait, policy.base * 2 ** tries)
    assert (tries, end) == (4, 240 + 1 + 2 + 4)
    assert end < 300


@pytest.mark.parametrize("path", ["fast", "botocore"])
def test_silent_s3_listing_is_abandoned_retried_and_given_up_on(tmp_path, stall, path):
    extra = {} if path == "fast" else {"requester_pays": False}     # requester_pays: botocore lists
    manifest(tmp_path, s3_target("web", stall.url, **extra))
    code, out, err = run(["plan", "m.yaml", "-v"], tmp_path, SHORT)
    assert (code, out) == (1, "")
    *logs, error, hint = err.splitlines(keepends=True)
    last = ("TimeoutError: timed out" if path == "fast" else
            f'ReadTimeoutError: Read timeout on endpoint URL: "{stall.url}/bkt?list-type=2&prefix=web%2F'
            '&encoding-type=url"')
    assert error == f"error: target web: no answer within the retry budget (6 s); last: {last}\n"
    assert hint == HINT
    retries = [line for line in logs if "; try " in line]
    assert len(retries) >= 2
    for n, line in enumerate(retries, start=2):
        assert re.fullmatch(rf"INFO: target web: {re.escape(last)}; try {n} of 6 in \d+\.\d s\n", line)
    # the server's side: each try was closed by the client, none early. The last close reaches the server's
    # thread a moment after the client process has exited: wait for it (bounded), then count
    deadline = time.monotonic() + 3
    while len(stall.abandoned()) < len(retries) + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    held = stall.abandoned()
    assert len(held) == len(retries) + 1
    assert all(h >= 0.9 for h in held)     # (the server sees the request a moment late)


@pytest.mark.parametrize("path", ["fast", "botocore"])
def test_a_server_dripping_its_answer_is_abandoned_too(tmp_path, path):
    """A byte every 0.3 s never trips a 1 s read timeout; the answer timeout (2 s here) cuts the try, and the
    retry budget ends the run."""
    with dripping() as drip:
        extra = {} if path == "fast" else {"requester_pays": False}     # requester_pays: botocore lists
        manifest(tmp_path, s3_target("web", drip.url, **extra))
        code, out, err = run(["plan", "m.yaml", "-v"], tmp_path, DRIP_ENV)
        assert (code, out) == (1, ""), err
        assert ABANDONED in err
        assert err.splitlines()[-2].startswith("error: target web: no answer within the retry budget (6 s); last: ")
        assert abandoned_at_least(drip, 2), err


DRIP_ENV = {**SHORT, "CARTSYNC_CONNECT_TIMEOUT": "2", "CARTSYNC_ANSWER_TIMEOUT": "2"}
ABANDONED = "INFO: abandoned an answer still arriving 2 s after the request (CARTSYNC_ANSWER_TIMEOUT)\n"


@contextlib.contextmanager
def dripping() -> Iterator[StallServer]:
    """A server that answers 200 and then one byte every 0.3 s, for ever."""
    drip = StallServer(drip=0.3)
    try:
        yield drip
    finally:
        drip.stop()


def abandoned_at_least(server: StallServer, n: int) -> bool:
    """Whether the server saw `n` connections abandoned; the last close reaches it a moment after the
    client exits."""
    deadline = time.monotonic() + 3
    while len(server.abandoned()) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(server.abandoned()) >= n


def zenodo_source(tmp_path: Path, url: str) -> None:
    """A one-file source and a Zenodo manifest (token in $ZT) for the server at `url`."""
    src = tmp_path / "cartload2"
    src.mkdir()
    (src / "a.tsv").write_text("a\n")
    zenodo_manifest(tmp_path, url, method="all")


def test_silent_zenodo_is_given_up_on(tmp_path, stall, monkeypatch):
    monkeypatch.setenv("ZT", "test-token-zz9")
    zenodo_source(tmp_path, stall.url)
    code, out, err = run(["plan", "manifest.yaml"], tmp_path, SHORT)
    assert (code, out) == (1, "")
    assert err == ("error: target doi: no answer within the retry budget (6 s); last: GET "
                   f"{stall.url}/api/deposit/depositions: ReadTimeout (network)\n" + HINT)
    assert len(stall.abandoned()) >= 2 and all(h >= 0.9 for h in stall.abandoned())


def test_zenodo_dripping_its_answer_is_abandoned(tmp_path, monkeypatch):
    """The Zenodo member of the dripping-answer family: requests' connections carry the same answer bound."""
    monkeypatch.setenv("ZT", "test-token-zz9")
    with dripping() as drip:
        zenodo_source(tmp_path, drip.url)
        code, out, err = run(["plan", "manifest.yaml", "-v"], tmp_path, DRIP_ENV)
        assert (code, out) == (1, ""), err
        assert ABANDONED in err
        assert err.splitlines()[-2] == ("error: target doi: no answer within the retry budget (6 s); last: GET "
                                        f"{drip.url}/api/deposit/depositions: the answer broke off before its end "
                                        "(network)")
        assert "test-token-zz9" not in err
        assert abandoned_at_least(drip, 2), err


def test_once_given_up_the_other_files_are_not_tried(tmp_path, s3_server, monkeypatch):
    """A server that lists and then goes silent: the run ends within the budget, not budget × files."""
    from faultproxy import FaultProxy
    monkeypatch.setenv("CARTSYNC_RETRY_ATTEMPTS", "6")
    bucket = s3_server.create_bucket("silent-later")
    with FaultProxy(s3_server.endpoint_url, stall_seconds=30) as proxy:
        # the data PUTs go silent (the target lock object, issue 14, is written first and still answers)
        proxy.configure(rate=1.0, faults={"stall": 1}, methods={"PUT"},
                        path_filter=lambda target: ".cartsync.lock" not in target)
        src = tmp_path / "src"
        src.mkdir()
        for i in range(12):
            (src / f"f{i:02}.tsv").write_text(f"{i}\n")
        path = tmp_path / "m.yaml"
        path.write_text(yaml.safe_dump({"version": 1, "source": {"dir": "src", "method": "all"}, "targets": [
            {"name": "web", "url": f"s3://{bucket}/p", "storage_options": {"endpoint_url": proxy.url}}]}))
        code, out, err = run(["apply", "m.yaml", "--jobs", "2"], tmp_path, SHORT)
        puts = [entry for entry in proxy.log if entry[0] == "PUT" and ".cartsync.lock" not in entry[1]]
    assert code == 1
    failed = [line for line in out.splitlines() if line.startswith("  FAILED ")]
    assert len(failed) == 12, out
    not_tried = [line for line in failed if line.endswith(": not tried: no answer within the retry budget (6 s)")]
    assert len(not_tried) == 10, out        # 2 at a time were tried while the budget lasted; the rest not at all
    assert len({target for _, target, _ in puts}) == 2
    assert s3_server.list_objects(bucket, "p/") == {}


def test_retry_after_past_the_budget_fails_at_once(tmp_path, zenodo, monkeypatch):
    src = tmp_path / "cartload2"
    src.mkdir()
    (src / "a.tsv").write_text("a\n")
    zenodo_manifest(tmp_path, zenodo.url, method="all")
    zenodo.fault_retry_after = 86400
    zenodo.fail_next(1, status=429)
    code, out, err = run(["plan", "manifest.yaml"], tmp_path, {})
    assert (code, out) == (1, "")
    error, hint = err.splitlines()
    assert re.fullmatch(r"error: GET http://127\.0\.0\.1:\d+/api/deposit/depositions: 429 .*; the server asks to wait "
                        r"24\.0 h, longer than cartsync waits", error)
    assert re.fullmatch(r"hint: re-run after \d{4}-\d\d-\d\d \d\d:\d\d UTC", hint)
    assert zenodo.count(status=429) == 1           # asked once, not six times


@pytest.mark.slow
def test_at_default_settings_a_silent_request_is_abandoned_after_60_s(tmp_path, monkeypatch):
    """One 60 s wait, three clients at once: the S3 fast path, botocore, and Zenodo's requests."""
    for name in ("CARTSYNC_IDLE_TIMEOUT", "CARTSYNC_CONNECT_TIMEOUT", "CARTSYNC_RETRY_BUDGET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ZT", "test-token-zz9")
    servers = [StallServer() for _ in range(3)]
    try:
        fast, boto, zen = servers
        path = manifest(tmp_path, s3_target("fast", fast.url), s3_target("boto", boto.url, requester_pays=False))
        data = yaml.safe_load(path.read_text())
        data["targets"].append({"name": "doi", "zenodo": {"url": zen.url, "token_env": "ZT", "metadata": {
            "title": "Silent", "upload_type": "dataset", "description": "d", "creators": ["Doe, Jane"]}}})
        path.write_text(yaml.safe_dump(data))
        code, _, err = run(["plan", "m.yaml"], tmp_path, {"CARTSYNC_RETRY_ATTEMPTS": "1"}, timeout=200)
        assert code == 1, err
        for server in servers:
            held = server.abandoned()       # one try, closed by the client: not before 60 s
            assert len(held) == 1 and held[0] >= 59, (held, err)
    finally:
        for server in servers:
            server.stop()
