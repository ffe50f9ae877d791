"""Error signatures (signatures.toml): the text users paste, mapped to the finding ids
whose checks confirm or rule out the cause. Loaded and matched here; judged by explain."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from doctor.knowledge import load
from doctor.probe.text import clean

__all__ = [
    "Match",
    "Signature",
    "SignatureError",
    "load_signatures",
    "match_signatures",
    "pasted_text",
]

MAX_QUOTE = 160

# What a terminal adds to the text people copy: colour and cursor sequences (CSI), window
# titles and hyperlinks (OSC), and the two-character escapes; Windows and old Mac line ends.
_TERMINAL_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x9b[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]"
)
_LINE_ENDS = re.compile(r"\r\n?")


class SignatureError(Exception):
    """signatures.toml is malformed (a defect of the package, said clearly)."""


@dataclass(frozen=True)
class Signature:
    id: str
    name: str
    pattern: re.Pattern[str]
    findings: tuple[str, ...]
    example: str
    source: str
    reviewed: str
    catalogue: str = ""  # shared/knowledge/catalogue.md's entry: for maintainers, never shown
    advice: str | None = None
    # The CUDA library the error is about ("cudnn"), or None: a finding confirms the error
    # only if it is about that library. A (?P<library>...) group in the pattern wins.
    library: str | None = None
    # The distribution whose code prints this error ("" when any program can): when it is
    # not installed in the inspected interpreter, the error came from another one.
    comes_from: str = "torch"


@dataclass(frozen=True)
class Match:
    signature: Signature
    quote: str  # the line of the pasted text that matched
    library: str | None = None  # the CUDA library the error names (Signature.library)


@cache
def load_signatures() -> tuple[Signature, ...]:
    signatures = []
    for number, entry in enumerate(load("signatures").get("signature", []), 1):
        try:
            signatures.append(
                Signature(
                    id=str(entry["id"]),
                    name=str(entry["name"]),
                    pattern=re.compile(str(entry["pattern"]), re.IGNORECASE),
                    findings=tuple(str(f) for f in entry.get("findings", [])),
                    example=str(entry["example"]),
                    source=str(entry["source"]),
                    reviewed=str(entry["reviewed"]),
                    catalogue=str(entry.get("catalogue", "")),
                    advice=entry.get("advice"),
                    library=entry.get("library"),
                    comes_from=str(entry.get("comes_from", "torch")),
                )
            )
        except (KeyError, TypeError, re.error) as exc:
            raise SignatureError(f"signatures.toml: signature #{number}: {exc!r}") from exc
    return tuple(signatures)


def match_signatures(text: str, signatures: Sequence[Signature] | None = None) -> list[Match]:
    """Every signature found in ``text``, in the order of the knowledge file."""
    text = pasted_text(text)
    found = []
    for signature in signatures if signatures is not None else load_signatures():
        hit = signature.pattern.search(text)
        if hit is not None:
            named = hit.groupdict().get("library")
            library = named or signature.library
            found.append(Match(signature, _quote(text, hit), library.lower() if library else None))
    return found


def pasted_text(text: str) -> str:
    """Pasted terminal output as the user read it: without the colour codes that split
    an error's words (``libcudnn.so.9: \\x1b[0mcannot open``), with ``\\n`` line ends,
    and without other control characters (the quotes shown come from this text)."""
    text = _LINE_ENDS.sub("\n", _TERMINAL_ESCAPES.sub("", text))
    return clean(text, cap=max(len(text), 1))


def _quote(text: str, hit: re.Match[str]) -> str:
    start = text.rfind("\n", 0, hit.start()) + 1
    end = text.find("\n", hit.end())
    line = text[start : end if end != -1 else len(text)].strip()
    if len(line) > MAX_QUOTE:
        line = line[: MAX_QUOTE - 1] + "…"
    return line
