"""The one exception the data layer raises for bad input (it always names the file), the "did you
mean" hint every unknown-name message shares, and the short, redacted excerpt any message may quote
from a file. Torch-free: the command line imports it."""

import re

EXCERPT_CHARS = 40  # at most this much of a file's content is ever quoted in a message


def did_you_mean(word: object, choices, cutoff: float = 0.6) -> str:
    """``". Did you mean 'x'?"`` for the closest of ``choices`` (difflib), or "" when none is close."""
    import difflib

    word = str(word)[:200]  # a huge value is never compared whole (difflib is quadratic)
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=cutoff)
    return f". Did you mean {close[0]!r}?" if close else ""


_TOKEN = re.compile(r"[A-Za-z0-9+/=_\-]{16,}")  # key-like runs (API keys, base64 lines, hashes)
_CREDENTIALS = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):[^@/\s]*@")


def redact(text: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://user:***@host`` wherever it appears in ``text``."""
    return _CREDENTIALS.sub(r"\1:***@", text)


def excerpt(value: object, limit: int = EXCERPT_CHARS, secrets: bool = True) -> str:
    """A short, redacted quotation of something read from a file or typed by a user, for messages:
    at most ``limit`` characters, ``user:password@`` masked, (``secrets``: what a file said) every
    key-like run of 16 or more letters, digits or ``+/=_-`` cut to its first two characters, control
    characters escaped, and the original length said when it was cut. Never more than about
    ``limit`` + 30 characters."""
    s = value if isinstance(value, str) else _short_str(value, limit * 4)
    n = len(s)
    s = s[: limit * 4]  # never scan a huge value whole
    s = redact(s)
    if secrets:
        s = _TOKEN.sub(lambda m: m.group(0)[:2] + "…", s)
    s = s.encode("unicode_escape").decode("ascii", "replace") if any(ord(c) < 32 for c in s) else s
    cut = len(s) > limit or n > limit * 4
    return repr(s[:limit]) + (f"… ({n} characters)" if cut else "")


def _short_str(value: object, limit: int) -> str:
    """``str(value)`` of at most about ``limit`` characters, without building the whole text of a
    huge nested value (``reprlib``)."""
    import reprlib

    if isinstance(value, (dict, list, tuple, set)):
        r = reprlib.Repr()
        r.maxlevel, r.maxdict, r.maxlist, r.maxtuple, r.maxset, r.maxstring, r.maxother = 3, 8, 8, 8, 8, limit, limit
        return r.repr(value)
    return str(value)[: limit + 1] if not isinstance(value, BaseException) else str(value)


def shown(value: object, limit: int = 80) -> str:
    """A value a user wrote, for a message: ``repr`` of a string or the text of anything else, cut at
    about ``limit`` characters (a 50 MB value is never echoed whole), credentials redacted."""
    if isinstance(value, str):
        return excerpt(value, limit, secrets=False)
    text = redact(_short_str(value, limit))
    return text if len(text) <= limit else text[:limit] + "…"


class ConfigError(ValueError):
    """A configuration is invalid; the message names the key path."""


class DataError(Exception):
    """A missing or corrupt dataset file, or an inconsistency in it. ``str()`` names the path.

    ``quoted``: what was read from the file that is wrong, shown as a short redacted
    :func:`excerpt` in ``str()`` but never in ``public`` (what run trackers store)."""

    def __init__(self, path, problem: str, quoted: object = None) -> None:
        self.path = str(path)
        self.problem = problem
        self.public = f"{self.path}: {problem}"
        super().__init__(self.public + ("" if quoted is None else f" (read: {excerpt(quoted)})"))


class RedactedStream:
    """A text stream that masks ``user:password@`` in everything written to it (:func:`redact`): the
    CLI puts one over stdout and stderr, so no line lvas or a library prints (MLflow's "View run ...
    at: http://user:PASSWORD@host", a driver's error) shows a password. Everything else is the
    wrapped stream's."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text) if isinstance(text, str) and "@" in text else text)
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)
