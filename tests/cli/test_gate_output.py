"""PR-ready Markdown (checked exactly), the plan before the first write, an honest progress bar, and -v on a
terminal without stale bar copies."""
from __future__ import annotations

import io
import os
import sys

import yaml
from helpers import REPO, catalog_dataset, local_setup


def test_plan_and_apply_as_markdown(tmp_path, cli):
    m = local_setup(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b.tsv").write_bytes(b"xy\n")
    (tmp_path / "out" / "old.tsv").write_bytes(b"old\n")
    url = tmp_path / "out"
    code, out, _ = cli("plan", m, "--format", "markdown")
    assert code == 0
    assert out == f"""### cartsync plan: 1 of 1 target(s) to change

- **out** (`{url}`): Plan: 2 to create, 1 to replace, 1 to delete, 0 unchanged (44 B to send).

<details><summary>out: 4 file action(s)</summary>

```diff
+ create   a.tsv  2 B
~ replace  b.tsv  3 B  (same size, content differs (md5))
+ create   catalog.yaml  39 B
- delete   old.tsv  4 B
```

</details>
"""
    code, out, err = cli("apply", m, "--format", "markdown")
    assert code == 0 and err.startswith(f"Target out → {url}\n")      # the text plan still goes to stderr
    assert out == f"""### cartsync apply: 1 of 1 target(s) done

- **out** (`{url}`): ok: 2 created, 1 replaced, 1 deleted; 44 B sent, 0 retries.

<details><summary>out: 4 file action(s)</summary>

```diff
+ created  a.tsv  2 B
~ replaced b.tsv  3 B
+ created  catalog.yaml  39 B
- deleted  old.tsv  4 B
```

</details>
"""
    assert cli("plan", m, "--format", "markdown")[1] == (
        "### cartsync plan: 0 of 1 target(s) to change\n\n"
        f"- **out** (`{url}`): No changes. 3 file(s) up to date.\n")


def test_markdown_escapes_what_would_change_the_page(tmp_path, cli):
    catalog_dataset(tmp_path / "src", {"x```y.tsv": b"a\n"}, "ds")
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump({"version": 1, "source": {"dir": "src", "method": "all"},
                                 "targets": [{"name": "out", "url": "o_u*t"}]}))
    out = cli("plan", m, "--format", "markdown")[1]
    assert f"- **out** (`{tmp_path}/o_u*t`): Plan: 2 to create" in out
    assert "\n````diff\n" in out and "\n+ create   x```y.tsv  2 B\n" in out and out.count("\n````\n") == 1


def test_the_whole_plan_is_printed_before_the_first_upload_reaches_the_server(tmp_path, s3, cli, monkeypatch):
    catalog_dataset(tmp_path / "src", {f"f{i}.tsv": b"x" * i for i in range(1, 6)}, "ds")
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump({"version": 1, "source": {"dir": "src", "method": "all"}, "targets": [
        {"name": "web", "url": f"s3://{s3.bucket}/ds", "storage_options": {"endpoint_url": s3.endpoint_url}}]}))
    seen: list[tuple[str, int]] = []                    # (line written to stderr, data PUTs the server had seen)

    class Recorder(io.StringIO):
        def write(self, text: str) -> int:
            for line in text.splitlines():
                seen.append((line, s3.counts()["PutObject"]))
            return super().write(text)

    monkeypatch.setattr(sys, "stderr", Recorder())
    from cartsync.cli import main
    assert main(["apply", str(m)]) == 0
    last = [i for i, (line, _) in enumerate(seen) if line.startswith("Plan: ")]
    summary = "Plan: 6 to create, 0 to replace, 0 to delete, 0 unchanged (95 B to send)."
    assert len(last) == 1 and seen[last[0]] == (summary, 0)
    assert all(puts == 0 for _, puts in seen[:last[0] + 1])
    assert s3.counts()["PutObject"] == 6                # and then the uploads came


def test_the_bar_never_counts_more_than_the_server_acknowledged(tmp_path, s3, monkeypatch):
    from cartsync import engine, manifest, progress
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(23 * 2**20))            # multipart: 5 parts of 5 MiB
    for i in range(6):
        (src / f"s{i}.bin").write_bytes(os.urandom(100_000))
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump({"version": 1, "source": {"dir": "src", "method": "all"}, "targets": [
        {"name": "web", "url": f"s3://{s3.bucket}/p", "part_size": "5MiB",
         "storage_options": {"endpoint_url": s3.endpoint_url}}]}))
    checks: list[tuple[int, int]] = []
    advance = progress.Bar.advance

    def watched(self, key, n):
        advance(self, key, n)
        checks.append((self.acknowledged, s3.bytes_acknowledged))

    monkeypatch.setattr(progress.Bar, "advance", watched)
    s3.reset_counts()
    [(_, report)] = engine.apply(manifest.load(m), engine.Options(show_progress=True, jobs=4))
    assert not report.failed
    assert len(checks) == 5 + 6                                       # per part, and per single PUT
    assert all(bar <= server for bar, server in checks)
    assert checks[-1][0] == 23 * 2**20 + 600_000 == s3.bytes_acknowledged


def visible_lines(raw: str) -> list[str]:
    """What a terminal shows: each line after carriage returns overwrote it (ANSI codes dropped)."""
    import re
    raw = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", raw.replace("\r\n", "\n"))
    lines = []
    for chunk in raw.split("\n"):
        screen: list[str] = []
        col = 0
        for ch in chunk:
            if ch == "\r":
                col = 0
                continue
            if col < len(screen):
                screen[col] = ch
            else:
                screen.append(ch)
            col += 1
        lines.append("".join(screen).rstrip())
    return lines


def run_in_pty(args: list[str], env: dict[str, str]) -> str:
    import fcntl
    import pty
    import struct
    import subprocess
    import termios
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_verbose_on_a_terminal_leaves_no_stale_bar_copies(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(60):
        (src / f"f{i:02d}.bin").write_bytes(os.urandom(300_000))
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump({"version": 1, "source": {"dir": "src", "method": "all"},
                                 "targets": [{"name": "out", "url": "out"}]}))
    env = dict(os.environ, PYTHONPATH=str(REPO), CARTSYNC_CACHE_DIR=str(tmp_path / "cache"), TERM="xterm")
    raw = run_in_pty([sys.executable, "-m", "cartsync", "-v", "apply", str(m), "--jobs", "2"], env)
    lines = visible_lines(raw)
    creates = [line for line in lines if line.startswith("INFO: create ")]
    assert len(creates) == 60
    assert all(line.endswith("(300.0 KB)") for line in creates)     # no bar left on a log line
    bars = [i for i, line in enumerate(lines) if line.startswith("out: ") and "%|" in line]
    assert len(bars) == 1                                            # one bar, the final one, not dozens
    assert "18.0 MB/18.0 MB, 60/60 files" in lines[bars[0]]


def test_pipes_get_no_carriage_return(tmp_path):
    import subprocess
    m = local_setup(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO), CARTSYNC_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-m", "cartsync", "-v", "apply", str(m)], capture_output=True,
                          env=env, timeout=120, check=False)
    assert done.returncode == 0 and b"\r" not in done.stdout + done.stderr
