"""Secrets never leave their place: not in output, logs, files, state, the hash cache, exceptions or URLs.

One test runs every command (validate, plan, apply, upload-aws, upload-zenodo) against the S3 server and
the Zenodo fake — successes, a wrong token, 5xx from Zenodo and S3, access denied — at every verbosity
(-v, -vv, -vvv, --debug, --json), with sentinel secrets in the environment and in a token file, then looks
for the sentinels everywhere a secret could end up.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

import yaml

import cartsync

TOKEN = "SENTINEL-qz7x-zenodo-token-0001"
WRONG = "SENTINEL-qz7x-wrong-token-0002"
AWS_SECRET = "SENTINEL-qz7x-aws-secret-key-0003"
SENTINELS = (TOKEN, WRONG, AWS_SECRET)
# "qz7x" is in every sentinel and cannot occur in hex (MD5s, uuids, bucket names): it also catches a
# truncated or partly masked echo such as "SENTINEL-qz7x-zen…".
CORE = "qz7x"
CARTSYNC_DIR = os.path.dirname(os.path.abspath(cartsync.__file__)) + os.sep


def leaks_in(text: str) -> list[str]:
    return [s for s in SENTINELS if s in text] + (["partial " + CORE] if CORE in text else [])


class ExceptionRecorder:
    """Every exception raised in, or passing through, a cartsync frame, in any thread (via settrace)."""

    def __init__(self) -> None:
        self.seen: dict[int, BaseException] = {}

    def _local(self, frame, event, arg):
        if event == "exception":
            self.seen.setdefault(id(arg[1]), arg[1])
        return self._local

    def _global(self, frame, event, arg):
        if frame.f_code.co_filename.startswith(CARTSYNC_DIR):
            frame.f_trace_lines = False
            return self._local
        return None

    def __enter__(self) -> "ExceptionRecorder":
        self._before = (sys.gettrace(), threading.gettrace())
        threading.settrace(self._global)
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc) -> None:
        sys.settrace(self._before[0])
        threading.settrace(self._before[1])

    def texts(self) -> list[str]:
        out, stack, done = [], list(self.seen.values()), set()
        while stack:
            exc = stack.pop()
            if exc is None or id(exc) in done:
                continue
            done.add(id(exc))
            out.append(f"{type(exc).__name__}: {exc!s} {exc!r} {getattr(exc, 'args', ())!r} "
                       f"{getattr(exc, 'message', '')} {getattr(exc, 'hint', '')}")
            stack += [exc.__cause__, exc.__context__]
        return out


def manifest(path: Path, targets: list[dict], src: str = "cartload2") -> Path:
    path.write_text(yaml.safe_dump({"version": 1, "source": {"dir": src}, "targets": targets}, sort_keys=False))
    return path


def test_no_command_leaks_a_secret(s3, zenodo, dataset, tmp_path, monkeypatch, capsys, caplog):
    from faultproxy import FaultProxy

    from cartsync import cli as cli_mod
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)         # moto accepts any key
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint_url)       # for upload-aws
    monkeypatch.setenv("ZT", TOKEN)
    monkeypatch.setenv("ZENODO_TOKEN", TOKEN)
    monkeypatch.setenv("CARTSYNC_RETRY_ATTEMPTS", "3")
    zenodo.add_token(TOKEN)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    token_file, wrong_file, loose_file = secrets / "zenodo.token", secrets / "wrong.token", secrets / "loose.token"
    for f, value, mode in ((token_file, TOKEN, 0o600), (wrong_file, WRONG, 0o600), (loose_file, TOKEN, 0o644)):
        f.write_text(value + "\n")
        f.chmod(mode)
    holders = {token_file, wrong_file, loose_file}                   # the only files allowed to hold a sentinel

    meta = {"title": "Secret test", "upload_type": "dataset", "description": "d", "creators": ["Doe, Jane"]}
    web = {"name": "web", "url": f"s3://{s3.bucket}/ds", "storage_options": {"endpoint_url": s3.endpoint_url}}
    doi = {"name": "doi", "zenodo": {"url": zenodo.url, "token_env": "ZT", "metadata": meta}}
    both = manifest(tmp_path / "both.yaml", [web, doi])
    by_file = manifest(tmp_path / "by-file.yaml", [{"name": "doi", "zenodo": {
        "url": zenodo.url, "token_file": str(loose_file), "metadata": meta}}])
    by_env = manifest(tmp_path / "by-env.yaml", [doi])
    proxy = FaultProxy(s3.endpoint_url).start()
    via_proxy = manifest(tmp_path / "proxy.yaml", [dict(web, url=f"s3://{s3.bucket}/px",
                                                        storage_options={"endpoint_url": proxy.url})])

    # Everything the CLI logs also goes to caplog (the CLI replaces the root handlers on every run).
    original_setup = cli_mod._setup_logging
    force_debug = {"on": False}

    def setup_logging(verbose: int, quiet: bool) -> None:
        original_setup(verbose, quiet)
        root = logging.getLogger()
        root.addHandler(caplog.handler)
        if force_debug["on"]:                 # what any library would log at DEBUG, as -vvv promises
            root.setLevel(logging.DEBUG)
            for name in ("botocore", "s3fs", "fsspec", "urllib3", "aiobotocore", "requests"):
                logging.getLogger(name).setLevel(logging.DEBUG)
    monkeypatch.setattr(cli_mod, "_setup_logging", setup_logging)

    outputs: list[tuple[tuple[str, ...], int, str, str]] = []

    def run(*args) -> int:
        try:
            code = cli_mod.main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        outputs.append((args, code, out, err))
        return code

    upload_zenodo = ["upload-zenodo", "--in-dir", "cartload2", "--zenodo-url", zenodo.url, "--title", "Compat",
                     "--creators", "Doe, Jane", "--description", "d", "--create-new-deposition"]
    upload_aws = ["upload-aws", "--in-dir", "cartload2", "--s3-dir", f"s3://{s3.bucket}/aws"]
    try:
        with ExceptionRecorder() as recorder:
            # validate and plan, at every verbosity
            assert run("validate", both) == 0
            for flags in ([], ["-v"], ["-vv"], ["-vvv", "--debug"]):
                assert run(*flags, "plan", both) == 0
            assert run("plan", both, "--json", "--detailed-exitcode") == 2
            # apply: first run, no-op re-run, a change, dry runs
            assert run("-vv", "apply", both) == 0
            assert run("-vvv", "--debug", "apply", both) == 0
            (dataset / "genes_bin3.pmtiles").write_bytes(os.urandom(20008))
            assert run("-v", "apply", both, "--json") == 0
            assert run("apply", both, "--dry-run", "--json") == 0
            # the token from a (group-readable: warned) file
            assert run("-vv", "plan", by_file) == 0 and run("-vvv", "--debug", "apply", by_file) == 0
            # a wrong token: from the environment and from a file
            monkeypatch.setenv("ZT", WRONG)
            assert run("-vvv", "--debug", "plan", by_env) == 1
            assert run("-vv", "--debug", "apply", by_env) == 1
            monkeypatch.setenv("ZT", TOKEN)
            monkeypatch.delenv("ZENODO_TOKEN")
            assert run("-vvv", "--debug", *upload_zenodo, "--zenodo-token", wrong_file) == 1
            # 5xx from Zenodo: on the first read, and on every try of one upload
            zenodo.fail_next(3, status=500)
            assert run("-vv", "--debug", "apply", by_env) == 1
            (dataset / "genes_bin1.pmtiles").write_bytes(os.urandom(40008))
            zenodo.fail_next(3, status=500, path_contains="/genes_bin1.pmtiles", method="PUT")
            assert run("-vvv", "--debug", "apply", by_env) == 1
            assert run("-vv", "apply", by_env) == 0
            # S3 failures: every write answered 500, then access denied
            rule = proxy.fail_always(lambda method, target: method == "PUT", status=500,
                                     body=b"<Error><Code>InternalError</Code><Message>boom</Message></Error>")
            assert run("-vv", "--debug", "apply", via_proxy) == 1
            proxy.remove_rule(rule)
            proxy.fail_always(lambda method, target: True)
            assert run("-vvv", "--debug", "apply", via_proxy) == 1
            # cartloader's command lines
            assert run("-vv", *upload_aws) == 0
            assert run("-vvv", "--debug", *upload_aws, "--dry-run") == 0
            assert run(*upload_aws, "--print-manifest") == 0
            assert run("-vv", *upload_zenodo, "--zenodo-token", token_file) == 0
            assert run("-vvv", "--debug", *upload_zenodo, "--zenodo-token", token_file, "--dry-run") == 0
            assert run(*upload_zenodo, "--zenodo-token", token_file, "--print-manifest") == 0
            monkeypatch.setenv("ZENODO_TOKEN", TOKEN)
            assert run("--debug", *upload_zenodo, "--json") == 0
            # and with every library logging at DEBUG (botocore, urllib3, s3fs …)
            force_debug["on"] = True
            (dataset / "genes_all.pmtiles").write_bytes(os.urandom(60008))
            assert run("-vvv", "--debug", "apply", both) == 0
            force_debug["on"] = False
    finally:
        proxy.stop()

    found: list[str] = []
    for args, code, out, err in outputs:
        for where, text in (("stdout", out), ("stderr", err)):
            found += [f"{where} of {' '.join(map(str, args))}: {s}" for s in leaks_in(text)]
    found += [f"caplog: {s}" for s in leaks_in(caplog.text)]
    found += [f"log record {r.name}: {s}" for r in caplog.records for s in leaks_in(r.getMessage() + str(r.exc_text))]
    found += [f"exception {t[:80]}…: {s}" for t in recorder.texts() for s in leaks_in(t)]
    cache_dir = Path(os.environ["CARTSYNC_CACHE_DIR"])
    files = [p for root in (tmp_path, cache_dir) for p in root.rglob("*") if p.is_file() and p not in holders]
    for p in files:                                  # state file, sqlite cache (+ -wal/-shm), locks, uploads
        found += [f"file {p}: {s}" for s in leaks_in(p.read_bytes().decode("latin-1") + str(p))]
    # on the wire: the token only ever goes in the Authorization header, never in a URL
    found += [f"zenodo request {r}: {s}" for r in zenodo.requests for s in leaks_in(str(r))]
    found += [f"zenodo query {q}: {s}" for q in zenodo.query_log for s in leaks_in(q)]
    found += [f"zenodo metadata {d.id}: {s}" for d in zenodo.depositions.values() for s in leaks_in(str(d.metadata))]
    found += [f"s3 request {r}: {s}" for r in s3.request_log for s in leaks_in(str(r))]

    assert found == []
    # the runs did what they were meant to: failures failed, with messages, and files were scanned
    assert any(p.name.endswith(".cartsync-state.json") for p in files)
    assert any(p.name == "hashes.sqlite3" for p in files)
    assert any("403 Permission denied" in err for *_, err in outputs)
    assert any("500 The server encountered an internal error" in out + err for *_, out, err in outputs)
    assert any("access denied listing" in err for *_, err in outputs)
    assert any("Traceback" in err for *_, err in outputs) and len(recorder.seen) > 0
    assert "DEBUG" in caplog.text


def test_token_file_with_a_second_line_is_refused_without_echoing_it(zenodo, dataset, tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    zenodo.add_token(TOKEN)
    token_file = tmp_path / "zenodo.token"
    token_file.write_text(f"{TOKEN}\n# created 2026-11-24 for the lab account\n")   # a note under the token
    token_file.chmod(0o600)
    manifest(tmp_path / "m.yaml", [{"name": "doi", "zenodo": {"url": zenodo.url, "token_file": str(token_file),
                                                              "metadata": {"title": "Two lines", "upload_type": "dataset",
                                                                           "description": "d",
                                                                           "creators": ["Doe, Jane"]}}}])
    code, out, err = cli("--debug", "plan", "m.yaml")
    assert leaks_in(out + err) == []
    assert (code, out) == (1, "")
    assert err.endswith(f"error: Zenodo token file {token_file} holds characters a token cannot have "
                        "(spaces, line breaks or non-ASCII)\nhint: put only the token, on one line, in it\n")
    assert zenodo.requests == []
