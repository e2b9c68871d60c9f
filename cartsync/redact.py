"""What may be shown to a person: never a value that might be a secret, never a terminal control sequence.

Two rules, used by every human-readable output (plan, report, errors, logs):
- a value given where a secret may have been pasted (a token field, a URL, a flag) is shown only if
  it cannot be a token; otherwise it is *described* (its length, that it looks like a token), so the
  user can still tell what went wrong without the value reaching a terminal, a log or a CI transcript;
- text that came from outside (file names, server answers) has its control characters (C0, DEL, C1,
  bidi overrides, line separators) escaped, so a crafted file name cannot move the cursor, rewrite a
  plan line or reorder what is shown. JSON output is left exact: json.dumps escapes them itself.

Pure functions; no I/O. The checks of manifest fields and compat flags live here so that both the
manifest loader and the cartloader flag translation use the same ones.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

# Environment-variable-like names: CAPITALS_WITH_UNDERSCORES, each word short. Anything else long
# and without spaces might be a token (Zenodo's are 60 random letters and digits).
_NAME_RE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")
_SECRET_PARAM_RE = re.compile(r"(?i)(secret|token|password|passwd|key|signature|credential|auth)")
# C0, DEL, C1; bidi embeddings/overrides/isolates and marks; zero-width and line/paragraph separators;
# lone surrogates (an undecodable byte in a file name, which print() could not even encode)
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def looks_like_token(text: str) -> bool:
    """True if `text` could be a secret: 16+ characters without spaces, letters and digits mixed (as in
    every generated token), that do not read as a NAME_LIKE_THIS."""
    if len(text) < 16 or any(c.isspace() for c in text):
        return False
    if not (any(c.isdigit() for c in text) and any(c.isalpha() for c in text)):
        return False
    return not (_NAME_RE.fullmatch(text) and max(len(w) for w in text.split("_")) <= 16)


def described(text: str) -> str:
    """A value that is never shown, as what a user needs to recognise it."""
    kind = "looks like a token" if looks_like_token(text) else "is not shown"
    return f"the value given ({len(text)} characters) {kind}"


def shown(text: str) -> str:
    """`text` (control characters escaped), or described if it might be a secret."""
    return described(text) if looks_like_token(text) else printable(text)


def printable(text: str, keep_newlines: bool = False) -> str:
    """`text` with control characters escaped (\\r, \\x1b, \\u202e …); `keep_newlines` for multi-line text."""
    def esc(m: re.Match[str]) -> str:
        c = m.group()
        if keep_newlines and c == "\n":
            return c
        return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
    return _CONTROL_RE.sub(esc, text)


def url_credential(url: str) -> str | None:
    """Why `url` holds a credential (user:password@, ?access_token=…), or None. Never echoes it."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if "@" in parts.netloc:
        return "holds a user name or password (user:…@host)"
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_PARAM_RE.search(name):
            return f"holds a credential in its query ({printable(name)}=…)"
    return None


URL_HINT = "put credentials in the environment, a profile or storage_options, never in the URL"
ZENODO_URL_HINT = ("give only the server, e.g. https://zenodo.org; the token goes in token_file or the "
                   "environment variable named by token_env")
TOKEN_ENV_HINT = ("name an environment variable that holds the token, e.g. token_env: ZENODO_TOKEN, or use "
                  "token_file; if the token was shared, revoke it on Zenodo")
TOKEN_FILE_HINT = ("give the path of a file that holds the token (chmod 600 it); if the token was shared, "
                   "revoke it on Zenodo")


def token_env_problem(name: str) -> str | None:
    """token_env holds a value that looks like the token itself rather than a variable name."""
    if looks_like_token(name):
        return f"{described(name)}, not the name of an environment variable"
    return None


def token_file_problem(raw: str, exists: bool) -> str | None:
    """token_file holds what looks like the token itself (no such file, no folder in it)."""
    if not exists and "." not in raw.rsplit("/", 1)[-1] and looks_like_token(raw.rsplit("/", 1)[-1]):
        return f"no such file, and {described(raw)}, not a path"
    return None


def check_flags(token_files: dict[str, str | None], urls: dict[str, str | None],
                exists: Callable[[str], bool]) -> None:
    """For translated command lines (upload-zenodo, upload-aws): refuse, before anything is printed
    (--print-manifest) or run, a token given where a path or a URL belongs. Raises CartsyncError."""
    from .errors import CartsyncError
    for flag, raw in token_files.items():
        if raw is not None and (why := token_file_problem(raw, exists(raw))):
            raise CartsyncError(f"{flag}: {why}", f"{flag} takes the path of a file holding the token (chmod "
                                "600 it), or leave it out and export ZENODO_TOKEN; revoke the token if this "
                                "command line was shared")
    for flag, url in urls.items():
        if url is not None and (why := url_credential(url)):
            hint = ("give only the server, e.g. https://zenodo.org; the token goes in a file (--zenodo-token FILE) "
                    "or $ZENODO_TOKEN") if "zenodo" in flag else URL_HINT
            raise CartsyncError(f"{flag}: the URL {why}", hint)


_QUOTED_RE = re.compile(r"'([^']*)'|\"([^\"]*)\"|(\S+)")


def scrubbed(message: str) -> str:
    """A message from a library that quotes what it was given (argparse: "invalid choice: '…'"), with
    every word that might be a token described instead, and control characters escaped."""
    def one(m: re.Match[str]) -> str:
        word = next(g for g in m.groups() if g is not None)
        return described(word) if looks_like_token(word.strip(",.:;()[]")) else m.group()
    return printable(_QUOTED_RE.sub(one, message))
