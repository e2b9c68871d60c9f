"""Network failures end in one clear message: a server that is not S3 / not Zenodo (a captive portal
answering 200 with HTML) after one try; DNS failures (a name that does not exist: once; a temporary
EAI_AGAIN: retried); an unreachable HTTPS_PROXY (retried, then named). The portal is a real HTTP
server on loopback; the DNS faults are injected at the resolver (socket.getaddrinfo), since tests
never query a real DNS server."""
from __future__ import annotations

import http.server
import socket
import threading
from pathlib import Path

import pytest
from helpers import write_manifest, zenodo_manifest

PORTAL = b"<!DOCTYPE html><html><body><form action='/login'>Sign in to the hotel Wi-Fi</form></body></html>"
S3_HINT = "hint: check storage_options.endpoint_url, and whether this network needs a sign-in first\n"
DNS_HINT = "hint: check the host in storage_options.endpoint_url (or the url), and the network's DNS\n"
PROXY_HINT = "hint: check HTTPS_PROXY / HTTP_PROXY (and NO_PROXY) in the environment, or unset them\n"
BOTOCORE = {"requester_pays": "false"}       # an option only botocore honours: the listing goes through it


@pytest.fixture
def portal():
    class Portal(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.server.hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(PORTAL)))
            self.end_headers()
            self.wfile.write(PORTAL)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Portal)
    server.hits = []
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def here(tmp_path, monkeypatch, s3) -> Path:   # s3: AWS credentials in the environment, no AWS config
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cartload2").mkdir()
    (tmp_path / "cartload2" / "a.tsv").write_text("a\n")
    return tmp_path


def s3_manifest(endpoint: str, **options: str) -> None:
    extra = "".join(f", {k}: {v}" for k, v in options.items())
    write_manifest(Path.cwd(), f"""
        version: 1
        source: {{dir: cartload2, method: all}}
        targets:
          - {{name: web, url: s3://bkt/p, storage_options: {{endpoint_url: "{endpoint}"{extra}}}}}
        """, name="m.yaml")


@pytest.mark.parametrize("options", [{}, BOTOCORE], ids=["fast-path", "botocore"])
def test_s3_endpoint_that_is_a_captive_portal(here, cli, portal, options):
    s3_manifest(portal.url, **options)
    assert cli("plan", "m.yaml") == (1, "", (
        f"error: target web: {portal.url} is not an S3 server: it answered the listing with something else (a "
        "captive portal or a login page?)\n" + S3_HINT))
    assert len(portal.hits) == 1                  # one try, not six


def test_zenodo_url_that_answers_a_login_page(here, cli, portal, monkeypatch):
    monkeypatch.setenv("ZT", "test-token-zz9")
    zenodo_manifest(here, portal.url, method="all")
    assert cli("plan", "manifest.yaml") == (1, "", (
        f"error: {portal.url} is not a Zenodo server: GET {portal.url}/api/deposit/depositions answered 200 with an "
        "HTML page, not Zenodo's API (a login page or a captive portal?)\n"
        "hint: check zenodo.url (https://zenodo.org or https://sandbox.zenodo.org), and whether this network needs "
        "a sign-in first\n"))
    assert len(portal.hits) == 1


@pytest.fixture
def resolver(monkeypatch):
    """getaddrinfo failing for *.nx (no such name) and *.again (EAI_AGAIN); counts the look-ups."""
    real, asked = socket.getaddrinfo, []

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and host.endswith((".nx", ".again")):
            asked.append(host)
            if host.endswith(".nx"):
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


@pytest.mark.parametrize("options", [{}, BOTOCORE], ids=["fast-path", "botocore"])
def test_s3_host_that_does_not_exist_is_said_once(here, cli, resolver, options):
    s3_manifest("http://store.example.nx:9000", **options)
    assert cli("plan", "m.yaml") == (1, "", (
        "error: target web: cannot resolve the host name 'store.example.nx' (Name or service not known)\n" + DNS_HINT))
    assert resolver == ["store.example.nx"]     # not retried: the name will not appear


@pytest.mark.parametrize("options", [{}, BOTOCORE], ids=["fast-path", "botocore"])
def test_s3_temporary_dns_failure_is_retried(here, cli, resolver, options):
    s3_manifest("http://store.example.again:9000", **options)
    assert cli("plan", "m.yaml") == (1, "", (
        "error: target web: cannot resolve the host name 'store.example.again' (Temporary failure in name "
        "resolution; tried 6 times)\n" + DNS_HINT))
    assert resolver == ["store.example.again"] * 6


@pytest.mark.parametrize("host,asked", [("zenodo.example.nx", 1), ("zenodo.example.again", 6)])
def test_zenodo_dns_failures(here, cli, resolver, monkeypatch, host, asked):
    monkeypatch.setenv("ZT", "test-token-zz9")
    zenodo_manifest(here, f"https://{host}", method="all")
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    why = "Name or service not known" if host.endswith(".nx") else "Temporary failure in name resolution"
    assert cli("plan", "manifest.yaml") == (1, "", (
        f"error: GET https://{host}/api/deposit/depositions: cannot resolve the host name '{host}' ({why})\n"
        "hint: check zenodo.url and the network's DNS\n"))
    assert resolver == [host] * asked


@pytest.fixture
def dead_proxy(monkeypatch) -> str:
    with socket.socket() as sock:       # a port that was free a moment ago: connecting is refused
        sock.bind(("127.0.0.1", 0))
        where = f"127.0.0.1:{sock.getsockname()[1]}"
    for name in ("HTTPS_PROXY", "HTTP_PROXY"):
        monkeypatch.setenv(name, f"http://user:pa55word@{where}")
    for name in ("NO_PROXY", "no_proxy", "https_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    return where


def test_unreachable_proxy_for_s3(here, cli, s3, dead_proxy):
    s3_manifest(s3.endpoint_url)
    code, out, err = cli("plan", "m.yaml")
    assert (code, out, err) == (1, "", (
        f"error: target web: cannot reach the proxy {dead_proxy} on the way to {s3.endpoint_url} (tried 6 times)\n"
        + PROXY_HINT))
    assert "pa55word" not in err
    assert s3.requests == []


def test_unreachable_proxy_for_zenodo(here, cli, dead_proxy, monkeypatch):
    monkeypatch.setenv("ZT", "test-token-zz9")
    zenodo_manifest(here, "https://zenodo.example", method="all")
    code, out, err = cli("plan", "manifest.yaml")
    assert (code, out, err) == (1, "", (
        f"error: GET https://zenodo.example/api/deposit/depositions: cannot reach the proxy {dead_proxy}\n"
        + PROXY_HINT))
