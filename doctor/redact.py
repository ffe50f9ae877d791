"""Redaction: what a report must not carry when it is pasted into a public ticket.

Applied once, to the whole report, before any renderer sees it. It is a generic walk
over dataclasses, dicts, lists and strings, so facts added by later probes are covered
without anyone remembering to call it. What it removes:

- the home directory (becomes ``~``);
- the user name and the host name, as whole words and path components only: user
  ``ci`` is removed from ``/srv/ci/x`` and ``run by ci`` but ``decision`` is untouched;
  a host name becomes a stable pseudonym (``host-3f9c2a1b``, see ``host_pseudonym``) so
  that the reports of one cluster job stay comparable after redaction;
- GPU and MIG UUIDs, and any value stored under a key naming a UUID or a serial number;
- the value of any variable whose name looks secret (``HF_TOKEN``, ``WANDB_API_KEY``, …),
  both in dicts of variables and in ``NAME=value`` text; the name stays;
- credentials inside URLs: ``user:pass@`` (or a bare token before ``@``) and
  secret-looking query parameters (``?token=…``), wherever the URL appears;
- access tokens anywhere in text (a pasted traceback, a command line): the formats with
  a distinctive prefix (``hf_…``, ``ghp_…``, ``github_pat_…``, ``glpat-…``, ``pypi-AgE…``,
  ``xoxb-…``, ``AKIA…``), ``Bearer …``, and the value of a secret-looking ``--flag`` or
  ``name=`` in any case (``--hf-token X``, ``hf_token=X``).
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "KIND_LABELS",
    "REDACTED",
    "RedactionRules",
    "Redactor",
    "host_pseudonym",
    "looks_secret",
    "redact",
    "run_key",
]

REDACTED = "<redacted>"
USER_TOKEN = "<user>"
# Where the key of host pseudonyms comes from, first set wins: every node of one job
# sees the same value, so a host gets the same pseudonym in every report of the job.
RUN_KEY_VARIABLES = ("TORCH_DOCTOR_RUN_KEY", "SLURM_JOB_ID", "TORCHELASTIC_RUN_ID")

# Stable kind ids (JSON `redactions`) and how the Markdown report says them.
KIND_LABELS = {
    "home-directory": "home directory (shown as ~)",
    "user-name": "user name",
    "host-name": "host name",
    "secret-variable": "values of secret-looking variables",
    "url-credentials": "credentials in URLs",
    "gpu-identifier": "GPU UUIDs and serial numbers",
    "access-token": "access tokens in text",
}

# Name parts (split at "_") that mark a variable as secret. A part *containing* one of
# the first set counts (GITHUB_PAT_TOKEN, MYAPIKEY); the second set must match a whole
# part, because as substrings they are too common (KEYRING, PASSTHROUGH).
_SECRET_SUBSTRINGS = (
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "AUTH",
    "APIKEY",
    "PRIVATE",
    "COOKIE",
    "SIGNATURE",
)
_SECRET_PARTS = frozenset({"KEY", "PASS", "PAT", "SESSION", "SIG", "PWD"})
# Whole names that match the rules above but are not secrets.
_NOT_SECRET = frozenset({"PWD", "OLDPWD"})

# Names too common to remove as words without mangling ordinary text (user "root" is
# no secret; its home directory is still replaced by ~). The report's own vocabulary
# counts too: a user called "torch" or "cuda" identifies no one, and removing those
# words would make the report unreadable.
_REPORT_WORDS = frozenset(
    {
        "torch",
        "cuda",
        "nvidia",
        "python",
        "python3",
        "uv",
        "pip",
        "triton",
        "venv",
        "lib",
        "lib64",
        "bin",
        "usr",
        "local",
        "opt",
        "src",
        "app",
        "dev",
        "tmp",
        "docker",
        "conda",
        "cudnn",
        "nccl",
        "gpu",
        "linux",
        "test",
        "work",
        "data",
    }
)
_GENERIC_USERS = frozenset({"root", "user", "users", "admin", "nobody", "home"}) | _REPORT_WORDS
_GENERIC_HOSTS = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"}) | _REPORT_WORDS

_WORD_CHARS = r"A-Za-z0-9_\-"
# A URL's scheme and authority (netloc): the authority ends at the first "/", "?" or "#"
# (RFC 3986), or where the text around the URL resumes. Its userinfo is everything before
# the *last* "@" in it, as urllib.parse.urlsplit splits it: a password may hold "@".
# "'" may be in a password (RFC 3986 sub-delims): it does not end the authority.
_URL_AUTHORITY = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<netloc>[^\s/?#\"<>`]*)")
# What may stand right before a home directory that starts a path: the start of the
# text, a space, a quote, "=", ":" (PATH-like lists), an opening bracket, a comma.
_PATH_START = r"(?<![^\s\"'`=:(\[{<,])"
_QUERY_PARAMETER = re.compile(
    r"(?P<key>[?&;](?P<name>[^=&;#\s\"'<>`]+)=)(?P<value>[^&;#\s\"'<>`]+)"
)
_SECRET_PARAMETER_WORDS = (
    "token",
    "secret",
    "password",
    "passwd",
    "signature",
    "credential",
    "auth",
    "apikey",
    "api_key",
    "api-key",
    "access_key",
    "sig",
)
_SECRET_PARAMETERS = frozenset({"key", "sig", "code", "pass", "pwd"})
# NAME=value in text (a command line, an error message); upper-case names only, which is
# how environment variables are written.
_ASSIGNMENT = re.compile(
    r"(?<![A-Za-z0-9_\-])(?P<name>[A-Z_][A-Z0-9_]*)=(?P<value>\"[^\"]*\"|'[^']*'|[^\s\"'`&;]+)"
)
# Tokens whose format says what they are, wherever they stand (Hugging Face, GitHub,
# GitLab, PyPI, Slack, AWS key ids), and HTTP authorisation headers.
_KNOWN_TOKEN = re.compile(
    r"(?<![A-Za-z0-9_\-])(?:hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_\-]{20,}|pypi-AgE[A-Za-z0-9_\-]{16,}"
    r"|xox[abprs]-[A-Za-z0-9\-]{10,}|AKIA[0-9A-Z]{16})(?![A-Za-z0-9_\-])"
    r"|(?P<scheme>\b(?:Bearer|Basic) )[A-Za-z0-9._~+/=\-]{12,}"
)
_TOKEN_HINTS = (
    "hf_",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "pypi-",
    "xox",
    "AKIA",
    "Bearer ",
    "Basic ",
)
# A secret-looking option and its value: --hf-token X, --password=X.
_SECRET_OPTION = re.compile(
    r"(?P<flag>(?<![A-Za-z0-9_\-])--?(?!-|no-)[A-Za-z0-9\-]*"
    r"(?:token|password|passwd|secret|api-key|apikey)(?:=|\s+))"
    r"(?P<value>[^\s\"'`-][^\s\"'`]*)",
    re.IGNORECASE,
)
# name=value in any case (hf_token=X in a config line or a command): the name must look
# secret (looks_secret on its upper case).
_LOWER_ASSIGNMENT = re.compile(
    r"(?<![A-Za-z0-9_\-])(?P<name>[a-z_][a-z0-9_]*)=(?P<value>\"[^\"]*\"|'[^']*'|[^\s\"'`&;]+)"
)
_GPU_ID = re.compile(
    r"\b(?P<prefix>(?:MIG-)?GPU-|MIG-)[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}"
    r"(?:/\d+/\d+)?"
)
_ID_KEYS = re.compile(r"uuid|serial", re.IGNORECASE)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

T = TypeVar("T")


def looks_secret(name: str) -> bool:
    """Whether a variable of this name probably holds a secret (HF_TOKEN, WANDB_API_KEY)."""
    upper = name.upper()
    if upper in _NOT_SECRET or not _ENV_NAME.match(name):
        return False
    parts = [p for p in upper.split("_") if p]
    return any(s in p for p in parts for s in _SECRET_SUBSTRINGS) or any(
        p in _SECRET_PARTS for p in parts
    )


@dataclass(frozen=True)
class RedactionRules:
    """Whose identity to remove. Built from the running process, or by hand in tests."""

    homes: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    run_key: str = ""  # keys the host pseudonyms (run_key())

    @classmethod
    def current(cls, environ: Mapping[str, str] | None = None) -> RedactionRules:
        """The user, home directory and host name of this process."""
        # Imported here: only a redacted report needs them (socket alone is ~3 ms).
        import getpass
        import socket

        environ = os.environ if environ is None else environ
        homes: list[str] = []
        home = environ.get("HOME") or _safe(lambda: str(Path.home()))
        if home:
            homes.append(home)
            real = _safe(lambda: os.path.realpath(home))
            if real:
                homes.append(real)
        users = [environ.get(k, "") for k in ("USER", "LOGNAME", "USERNAME")]
        if not any(users):
            users.append(_safe(getpass.getuser) or "")
        # The home directory's own name is the user name in all but odd setups.
        users += [os.path.basename(h.rstrip("/")) for h in homes]
        host = _safe(socket.gethostname) or ""
        hosts = [host, host.split(".", 1)[0]] if host else []
        return cls.build(homes, users, hosts, run_key(environ))

    @classmethod
    def build(
        cls, homes: Iterable[str], users: Iterable[str], hosts: Iterable[str], key: str = ""
    ) -> RedactionRules:
        """Rules with unusable values (/, generic names, one letter) left out."""
        clean_homes = {h.rstrip("/") for h in homes if h and h.rstrip("/")}
        clean_users = {u for u in users if len(u) >= 2 and u.lower() not in _GENERIC_USERS}
        clean_hosts = {h for h in hosts if len(h) >= 2 and h.lower() not in _GENERIC_HOSTS}
        return cls(
            _longest_first(clean_homes),
            _longest_first(clean_users),
            _longest_first(clean_hosts),
            key,
        )


def run_key(environ: Mapping[str, str] | None = None) -> str:
    """The key of this run's host pseudonyms: the first of RUN_KEY_VARIABLES set, else ""
    (a fixed key: pseudonyms then agree across runs too, and anyone can check a guess)."""
    environ = os.environ if environ is None else environ
    return next((environ[v] for v in RUN_KEY_VARIABLES if environ.get(v)), "")


def host_pseudonym(host: str, key: str = "") -> str:
    """``host-`` and 8 hex digits of an HMAC-SHA256 of the host's first label, lower case:
    the same for ``node7`` and ``node7.cluster`` and for every report keyed alike."""
    import hashlib
    import hmac

    label = host.split(".", 1)[0].lower().encode()
    digest = hmac.new(b"torch-doctor host:" + key.encode(), label, hashlib.sha256)
    return "host-" + digest.hexdigest()[:8]


def _longest_first(values: Iterable[str]) -> tuple[str, ...]:
    # /home/alice/work before /home/alice: the longer match must win.
    return tuple(sorted(values, key=lambda v: (-len(v), v)))


def _safe(function: Callable[[], object]) -> str | None:
    try:
        value = function()
    except (OSError, KeyError, ImportError, RuntimeError):
        return None
    return str(value) if value else None


class Redactor:
    """Applies the rules to any JSON-like value or dataclass; counts what it removed."""

    def __init__(self, rules: RedactionRules) -> None:
        self.rules = rules
        self.counts: Counter[str] = Counter()
        # (literal, pattern): a pattern can only match where its literal occurs, and an
        # `in` test is far cheaper than a regex scan over thousands of report strings.
        # The home directory only as a whole leading path prefix: /home/alice/x, not
        # /srv/home/alice/x nor /home/alicex.
        self._homes = [
            (h, re.compile(_PATH_START + re.escape(h) + r"(?=/|$|[\s\"'`),:;\]}>])"))
            for h in rules.homes
        ]
        self._users = [(u, _word_pattern(u, ignore_case=False)) for u in rules.users]
        self._hosts = [
            (h, _word_pattern(h, ignore_case=False), host_pseudonym(h, rules.run_key))
            for h in rules.hosts
        ]

    @property
    def kinds(self) -> list[str]:
        """The kinds of data removed so far, in KIND_LABELS order."""
        return [kind for kind in KIND_LABELS if self.counts[kind]]

    def text(self, value: str) -> str:
        # Each substitution runs only when the text holds what its pattern needs (a
        # report has thousands of strings, nearly all clean); the result is the same.
        out = value
        if "://" in out and "@" in out:
            out = self._sub(_URL_AUTHORITY, _without_userinfo, out, "url-credentials")
        if "=" in out:
            out = self._sub(_QUERY_PARAMETER, self._query_parameter, out, None)
            out = self._sub(_ASSIGNMENT, self._assignment, out, None)
        if any(hint in out for hint in _TOKEN_HINTS):
            out = self._sub(_KNOWN_TOKEN, _token, out, "access-token")
        if "-" in out and any(w in out.lower() for w in _SECRET_OPTION_WORDS):
            out = self._sub(_SECRET_OPTION, self._option, out, None)
        if "=" in out:
            out = self._sub(_LOWER_ASSIGNMENT, self._assignment, out, None)
        if "GPU-" in out or "MIG-" in out:
            out = self._sub(_GPU_ID, lambda m: m.group("prefix") + REDACTED, out, "gpu-identifier")
        for home, pattern in self._homes:
            if home in out:
                out = self._sub(pattern, lambda m: "~", out, "home-directory")
        for user, pattern in self._users:
            if user in out:
                out = self._sub(pattern, lambda m: USER_TOKEN, out, "user-name")
        for host, pattern, pseudonym in self._hosts:
            if host in out:
                out = self._sub(pattern, lambda m, p=pseudonym: p, out, "host-name")
        return out

    def _query_parameter(self, match: re.Match[str]) -> str:
        name = match.group("name").lower()
        secret = name in _SECRET_PARAMETERS or any(w in name for w in _SECRET_PARAMETER_WORDS)
        if not secret or match.group("value") == REDACTED:
            return match.group(0)
        self.counts["url-credentials"] += 1
        return match.group("key") + REDACTED

    def _option(self, match: re.Match[str]) -> str:
        if match.group("value") == REDACTED:
            return match.group(0)
        self.counts["access-token"] += 1
        return match.group("flag") + REDACTED

    def _assignment(self, match: re.Match[str]) -> str:
        if not looks_secret(match.group("name")) or match.group("value").strip("\"'") == REDACTED:
            return match.group(0)
        self.counts["secret-variable"] += 1
        return f"{match.group('name')}={REDACTED}"

    def _sub(self, pattern: re.Pattern[str], replace: Any, text: str, kind: str | None) -> str:
        result, count = pattern.subn(replace, text)
        if kind is not None and count and result != text:
            self.counts[kind] += count
        return result

    def value(self, value: T, key: str | None = None) -> T:
        """A copy of ``value`` with every string redacted; ``key`` is the name it is held under."""
        return self._walk(value, key)  # type: ignore[no-any-return]

    def _walk(self, value: Any, key: str | None) -> Any:
        # Plain strings are most of a report: tested first (a str enum is not exactly str).
        if type(value) is str:
            return self._string(value, key)
        if isinstance(value, enum.Enum) or value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, str):
            return self._string(value, key)
        if isinstance(value, Mapping):
            items = {
                (self.text(k) if isinstance(k, str) else k): self._walk(v, str(k))
                for k, v in value.items()
            }
            return type(value)(items) if isinstance(value, dict) else items
        if isinstance(value, tuple):
            return tuple(self._walk(v, key) for v in value)
        if isinstance(value, list):
            return [self._walk(v, key) for v in value]
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes = {
                f.name: self._walk(getattr(value, f.name), f.name)
                for f in dataclasses.fields(value)
                if f.init
            }
            return dataclasses.replace(value, **changes)
        return value

    def _string(self, value: str, key: str | None) -> str:
        if key is not None and value:
            secret_key, identifier_key = _key_kind(key)
            if secret_key and value != REDACTED:
                self.counts["secret-variable"] += 1
                return REDACTED
            if identifier_key:
                masked = self._mask_identifier(value)
                if masked != value:
                    self.counts["gpu-identifier"] += 1
                    return masked
        return self.text(value)

    @staticmethod
    def _mask_identifier(value: str) -> str:
        if value == REDACTED or value.endswith("-" + REDACTED):
            return value
        prefix = re.match(r"^(?:MIG-)?(?:GPU-)?", value)
        return (prefix.group(0) if prefix else "") + REDACTED


_VARIABLE_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_SECRET_OPTION_WORDS = ("token", "passw", "secret", "api-key", "apikey")


def _token(match: re.Match[str]) -> str:
    """A known token, or the credentials after "Bearer ": <redacted>."""
    scheme = match.group("scheme")
    return (scheme or "") + REDACTED


def _without_userinfo(match: re.Match[str]) -> str:
    """scheme://user:pass@host -> scheme://<redacted>@host (the last "@" ends userinfo)."""
    userinfo, at, host = match.group("netloc").rpartition("@")
    if not at or userinfo == REDACTED:
        return match.group(0)
    return f"{match.group('scheme')}{REDACTED}@{host}"


@lru_cache(maxsize=1024)
def _key_kind(key: str) -> tuple[bool, bool]:
    """Whether a value held under ``key`` is a secret, and whether it is a GPU identifier.

    Cached: the same few field and variable names hold thousands of strings.
    """
    return _is_variable_name(key) and looks_secret(key), _ID_KEYS.search(key) is not None


def _is_variable_name(key: str) -> bool:
    # Environment variables are upper case by convention; lower-case keys are field
    # names of facts (their values are still scanned as text).
    return _VARIABLE_NAME.match(key) is not None


def _word_pattern(word: str, *, ignore_case: bool) -> re.Pattern[str]:
    # A whole word or path component: not glued to letters, digits, "_" or "-".
    flags = re.IGNORECASE if ignore_case else 0
    return re.compile(rf"(?<![{_WORD_CHARS}]){re.escape(word)}(?![{_WORD_CHARS}])", flags)


def redact(value: T, rules: RedactionRules | None = None) -> tuple[T, list[str]]:
    """``value`` redacted (a copy), and the kinds of data that were removed."""
    redactor = Redactor(rules if rules is not None else RedactionRules.current())
    return redactor.value(value), redactor.kinds
