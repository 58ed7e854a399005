"""Taking known secret values out of text: what an error message, a log line or a reason may not carry.

A reconcile that decrypted a release knows every plaintext value it holds; anything it reports (an API server's
message, a tool's stderr, an exception) passes through ``Redactor.text`` first, which replaces each value, and
the base64 form a Secret's ``data`` gives it, with ``[redacted]``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

REDACTED = "[redacted]"
# Shorter values would blank ordinary words in every message: a value of 3 characters or fewer is not redacted from
# messages (it is still never recorded itself: history names values by keyed hash). docs/secrets.md says so.
MIN_REDACTED = 4


def _forms(value: str) -> set[str]:
    forms = {value, base64.b64encode(value.encode()).decode()}
    # as a JSON string shows it (an API server's message is JSON): quotes, backslashes, newlines escaped
    forms |= {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    try:  # a data: value is base64 of the secret: its decoded text is the secret too
        decoded = base64.b64decode(value, validate=True).decode()
        if decoded.isprintable():
            forms.add(decoded)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    for line in value.splitlines():  # a multi-line value (a key, a certificate) leaks line by line too
        forms.add(line.strip())
    return {f for f in forms if len(f) >= MIN_REDACTED}


@dataclass
class Redactor:
    """Every form of the values it was given, longest first (a value inside another is replaced after it)."""

    values: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, values: Iterable[str]) -> Redactor:
        forms: set[str] = set()
        for value in values:
            forms |= _forms(value)
        return cls(sorted(forms, key=lambda f: (-len(f), f)))

    def text(self, text: str) -> str:
        for value in self.values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def __bool__(self) -> bool:
        return bool(self.values)
