"""retry.is_retryable judges transport faults by type: each backend declares its library's classes
(s3/client.py for botocore, urllib3 and aiohttp; zenodo/client.py for requests); a TLS failure never retries;
a class that only shares a name with a transport fault is not one (the check used to match names)."""
from __future__ import annotations

import http.client
import socket

import aiohttp
import botocore.exceptions as bce
import pytest
import requests
import urllib3.exceptions as u3

import cartsync.backends.zenodo.client  # noqa: F401 — declares requests' faults, as making the client does
from cartsync.backends.s3.client import declare_transient_aiohttp, declare_transient_botocore
from cartsync.errors import AuthError, RemoteError
from cartsync.retry import is_retryable

declare_transient_botocore()
declare_transient_aiohttp()


@pytest.mark.parametrize("exc", [
    bce.EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
    bce.ReadTimeoutError(endpoint_url="http://127.0.0.1:9"),
    bce.ConnectTimeoutError(endpoint_url="http://127.0.0.1:9"),
    bce.ConnectionClosedError(endpoint_url="http://127.0.0.1:9"),
    bce.ResponseStreamingError(error="reset"),
    requests.exceptions.ConnectionError("reset"),
    requests.exceptions.ReadTimeout("slow"),
    requests.exceptions.ChunkedEncodingError("cut"),
    u3.ProtocolError("Connection aborted."),
    aiohttp.ServerDisconnectedError(),
    http.client.IncompleteRead(b"", 10),
    http.client.RemoteDisconnected("closed"),
    TimeoutError("idle"),
    socket.timeout("idle"),
    ConnectionResetError(104, "reset"),
    RemoteError("HTTP 503", retryable=True),
], ids=lambda e: type(e).__name__)
def test_transport_faults_are_retried(exc):
    assert is_retryable(exc)


@pytest.mark.parametrize("exc", [
    bce.SSLError(endpoint_url="https://127.0.0.1:9", error="certificate verify failed"),
    requests.exceptions.SSLError("certificate verify failed"),
    u3.SSLError("certificate verify failed"),
    AuthError("access denied"),
    RemoteError("HTTP 400"),
    KeyboardInterrupt(),
    ValueError("bad"),
], ids=lambda e: type(e).__name__)
def test_other_failures_are_not(exc):
    assert not is_retryable(exc)


def test_a_class_that_only_shares_a_name_is_not_a_transport_fault():
    Timeout = type("Timeout", (Exception,), {})             # e.g. a parser's own "Timeout"
    ProtocolError = type("ProtocolError", (Exception,), {})
    assert not is_retryable(Timeout("not a network wait")) and not is_retryable(ProtocolError("bad YAML"))
