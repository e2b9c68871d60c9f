"""Secrets never leave their place: not in output, logs, files, state, the hash cache, exceptions or URLs.

One test runs every command (validate, plan, apply, upload-aws, upload-zenodo) against the S3 server and
the Zenodo fake — successes, a wrong token, 5xx from Zenodo and S3, access denied — at every verbosity
(-v, -vv, -vvv, --debug, --json), with sentinel secrets in the environment and in a token file, then looks
for the sentinels everywhere a secret could end up.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import threading
from pathlib import Path

import pytest
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


# ---- a token pasted where it does not belong (issue 10, case 13) --------------------------------------
# A real Zenodo token is 60 random letters and digits; this one holds CORE, so any echo is caught.
PASTED = "aB3dqz7xK9mN2pQ4rS6tU8vW0yZ1cE3fG5hJ7kL9mN1pQ3rS5tU7vW9yZ0cE"
META = {"title": "Pasted token", "upload_type": "dataset", "description": "d", "creators": ["Doe, Jane"]}
NOT_A_NAME = ("the value given (60 characters) looks like a token, not the name of an environment variable (name an "
              "environment variable that holds the token, e.g. token_env: ZENODO_TOKEN, or use token_file; if the "
              "token was shared, revoke it on Zenodo)")
NOT_A_PATH = ("no such file, and the value given (60 characters) looks like a token, not a path (give the path of a "
              "file that holds the token (chmod 600 it); if the token was shared, revoke it on Zenodo)")
IN_ZENODO_URL = ("looks like it holds a credential (give only the server, e.g. https://zenodo.org; the token goes in "
                 "token_file or the environment variable named by token_env)")
PASTE_CASES = [
    ("token_env", {"token_env": PASTED}, f"targets[0].zenodo.token_env: {NOT_A_NAME}"),
    ("token_env_with_dashes", {"token_env": "SENTINEL-qz7x-zenodo-token-0001"},
     "targets[0].zenodo.token_env: " + NOT_A_NAME.replace("(60 characters)", "(31 characters)")),
    ("token_file", {"token_file": PASTED}, f"targets[0].zenodo.token_file: {NOT_A_PATH}"),
    ("url_userinfo", {"url": f"https://user:{PASTED}@zenodo.org"}, f"targets[0].zenodo.url: {IN_ZENODO_URL}"),
    ("url_token_only", {"url": f"https://{PASTED}@zenodo.org"}, f"targets[0].zenodo.url: {IN_ZENODO_URL}"),
    ("url_access_token", {"url": f"https://zenodo.org/?access_token={PASTED}"},
     f"targets[0].zenodo.url: {IN_ZENODO_URL}"),
    ("deposition", {"deposition": PASTED},
     "targets[0].zenodo.deposition: a string of 60 characters that looks like a token is not allowed (use 'new')\n"
     "  m.yaml:#: targets[0].zenodo.deposition: a string of 60 characters that looks like a token has the wrong form "
     "(use `new` or the numeric id of an existing deposition)"),
]


@pytest.mark.parametrize("name,zenodo_keys,problem", PASTE_CASES, ids=[c[0] for c in PASTE_CASES])
def test_a_token_in_the_wrong_manifest_field_is_refused_and_never_echoed(tmp_path, monkeypatch, cli, dataset, zenodo,
                                                                         name, zenodo_keys, problem):
    monkeypatch.chdir(tmp_path)
    z = {"url": zenodo.url, "metadata": META, **zenodo_keys}
    manifest(tmp_path / "m.yaml", [{"name": "doi", "zenodo": z}])
    for command in ("validate", "plan", "apply"):
        code, out, err = cli("--debug", command, "m.yaml")
        assert leaks_in(out + err) == []
        assert (code, out) == (1, "")
        head = "error: invalid manifest:" if "\n" not in problem else "error: invalid manifest (2 problems):"
        pattern = re.escape(f"\n{head}\n  m.yaml:#: {problem}\n").replace("\\#", "#").replace("#", r"\d+")
        assert re.search(pattern + r"\Z", err), err
    assert zenodo.requests == []


def test_a_token_in_a_store_endpoint_url_is_refused_and_never_echoed(tmp_path, monkeypatch, cli, dataset):
    monkeypatch.chdir(tmp_path)
    manifest(tmp_path / "m.yaml", [{"name": "web", "url": "s3://bucket/x",
                                    "storage_options": {"endpoint_url": f"https://AKIA:{PASTED}@s3.example.org"}}])
    code, out, err = cli("--debug", "validate", "m.yaml")
    assert leaks_in(err) == [] and (code, out) == (1, "")
    expected = ("error: invalid manifest:\n  m.yaml:8: targets[0].storage_options.endpoint_url: looks like it "
                "holds a credential (put credentials in the environment, a profile or storage_options, never in "
                "the URL)\n")
    assert err[-len(expected):] == expected


FLAG_TOKEN = ("error: --zenodo-token: no such file, and the value given (60 characters) looks like a token, not a "
              "path\n"
              "hint: --zenodo-token takes the path of a file holding the token (chmod 600 it), or leave it out and "
              "export ZENODO_TOKEN; revoke the token if this command line was shared\n")
FLAG_URL = ("error: --zenodo-url: the URL holds a user name or password (user:…@host)\n"
            "hint: give only the server, e.g. https://zenodo.org; the token goes in a file (--zenodo-token FILE) or "
            "$ZENODO_TOKEN\n")


@pytest.mark.parametrize("flags,expected", [
    (["--zenodo-token", PASTED], FLAG_TOKEN),
    (["--zenodo-token", PASTED, "--print-manifest"], FLAG_TOKEN),
    (["--zenodo-token", PASTED, "--dry-run", "--json"], FLAG_TOKEN),
    (["--zenodo-url", f"https://me:{PASTED}@zenodo.org", "--print-manifest"], FLAG_URL),
    (["--zenodo-url", f"https://zenodo.org?access_token={PASTED}"],
     "error: --zenodo-url: the URL holds a credential in its query (access_token=…)\nhint: give only the server, "
     "e.g. https://zenodo.org; the token goes in a file (--zenodo-token FILE) or $ZENODO_TOKEN\n"),
], ids=["token", "token_print_manifest", "token_dry_run", "url_print_manifest", "url_query"])
def test_upload_zenodo_never_echoes_a_token_given_as_a_path_or_url(tmp_path, monkeypatch, cli, dataset, zenodo,
                                                                   flags, expected):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("--debug", "upload-zenodo", "--in-dir", "cartload2", "--title", "Compat", "--creators",
                         "Doe, Jane", "--description", "d", "--create-new-deposition", *flags)
    assert leaks_in(err) == [] and (code, out) == (1, "")
    assert err.endswith("\n" + expected)
    assert zenodo.requests == [] and list(tmp_path.glob("*.json")) == []


@pytest.mark.parametrize("argv,expected", [
    (["upload-zenodo", "--in-dir", "x", "--n-jobs", PASTED],
     "cartsync upload-zenodo: error: argument --n-jobs: invalid int value: the value given (60 characters) looks "
     "like a token\n"),
    (["upload-zenodo", "--in-dir", "x", "--upload-method", PASTED],
     "cartsync upload-zenodo: error: argument --upload-method: invalid choice: the value given (60 characters) looks "
     "like a token (choose from 'all', 'catalog', 'files', 'user_list')\n"),
    (["plan", "m.yaml", PASTED], "cartsync: error: unrecognized arguments: the value given (60 characters) looks "
                                 "like a token\n"),
    (["upload-zenodo", "--in-dir", "x", "--zenodo-deposition-id", PASTED, "--title", "t"],
     "error: --zenodo-deposition-id the value given (60 characters) looks like a token: not a deposition id (use the "
     "number in the deposition's URL)\n"),
], ids=["int_flag", "choice_flag", "stray_argument", "deposition_id"])
def test_a_token_in_any_other_flag_is_described_not_echoed(tmp_path, monkeypatch, capsys, argv, expected):
    from cartsync.cli import main
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x").mkdir()                  # --in-dir exists and a token is set: the flag under test is refused
    monkeypatch.setenv("ZENODO_TOKEN", "test-token-zz9")
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert (code, out) == (1, "") and leaks_in(err) == []
    assert err.endswith(expected)


def test_a_token_file_with_a_byte_order_mark_works(zenodo, dataset, tmp_path, monkeypatch, cli):
    """Notepad's "UTF-8" and "Unicode" (UTF-16) both start the file with a byte-order mark: not part of the token."""
    monkeypatch.chdir(tmp_path)
    zenodo.add_token(TOKEN)
    for i, data in enumerate([b"\xef\xbb\xbf" + TOKEN.encode() + b"\r\n", (TOKEN + "\r\n").encode("utf-16")]):
        token_file = tmp_path / f"zenodo{i}.token"
        token_file.write_bytes(data)
        token_file.chmod(0o600)
        manifest(tmp_path / "m.yaml", [{"name": "doi", "zenodo": {"url": zenodo.url, "token_file": str(token_file),
                                                                  "metadata": META}}])
        code, out, err = cli("plan", "m.yaml")
        assert (code, err) == (0, "") and leaks_in(out) == []
        assert out.splitlines()[0] == f"Target doi → {zenodo.url}/deposition/(new)"
    assert zenodo.count("GET", "/api/deposit/depositions", status=200) == 2


def test_a_token_pasted_as_a_key_or_inside_a_token_file_path_is_not_echoed(tmp_path, monkeypatch, cli, dataset, zenodo):
    monkeypatch.chdir(tmp_path)
    manifest(tmp_path / "m.yaml", [{"name": "doi", "zenodo": {"url": zenodo.url, "metadata": META, PASTED: "x"}}])
    code, out, err = cli("validate", "m.yaml")
    assert (code, out) == (1, "") and leaks_in(err) == []
    assert err == ("error: invalid manifest:\n  m.yaml:14: targets[0].zenodo.<a key of 60 characters that looks like "
                   "a token>: unknown key (allowed keys: deposition, metadata, publish, token_env, token_file, url)\n")
    manifest(tmp_path / "m.yaml", [{"name": "doi", "zenodo": {"url": zenodo.url, "metadata": META,
                                                              "token_file": f"~/.config/{PASTED}"}}])
    code, out, err = cli("validate", "m.yaml")
    assert (code, out) == (1, "") and leaks_in(err) == []
    assert err.endswith("targets[0].zenodo.token_file: " + NOT_A_PATH.replace("(60 characters)", "(70 characters)")
                        + "\n"), err
    # a real file name that is missing is named as usual (letters only, or with a dot: not a token)
    manifest(tmp_path / "m.yaml", [{"name": "doi", "zenodo": {"url": zenodo.url, "metadata": META,
                                                              "token_file": "zenodo_sandbox.token"}}])
    assert cli("plan", "m.yaml") == (1, "", f"error: Zenodo token file {tmp_path}/zenodo_sandbox.token does not "
                                            "exist\nhint: create it with the token from Zenodo's Applications "
                                            "settings, then chmod 600 it\n")
