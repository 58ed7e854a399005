"""`ferry secrets encrypt|recipients|status`: SOPS files for age recipients, with the real sops and age-keygen.

Bad input (a missing file, a recipient that is not an age public key, a file already encrypted, a file sops would
not parse) is one line on stderr and exit 2; a setup problem (sops not built, identities unreadable) exit 1. No
plaintext is ever printed: what is written is checked to be SOPS-encrypted first, and sops's own message passes
through a redactor of the file's values. No private key is printed: `recipients` prints public keys and a path.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.common import CommandError, emit, settings_from
from ferry.redact import Redactor
from ferry.sops import (
    DOTENV_SUFFIXES,
    JSON_SUFFIXES,
    MAX_RECIPIENT,
    MAX_SOPS_FILE_BYTES,
    YAML_SUFFIXES,
    SopsRefused,
    inspect,
    is_plain_secret,
    short_recipient,
    store_of,
)

if TYPE_CHECKING:
    from workers.secrets import IdentitySource

BAD_INPUT = 2  # as argparse's own usage errors
_RECIPIENT = re.compile(r"^age1[0-9a-z]{20,}$")  # bech32: lower-case letters and digits
_PRIVATE = "AGE-SECRET-KEY-"


class BadInput(Exception):
    """An input `ferry secrets` refuses: one line, exit 2."""


def _exit_2_on_bad_input(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except BadInput as err:
            print(f"ferry: {err}", file=sys.stderr)
            return BAD_INPUT

    return run


def _read(name: str) -> bytes:
    path = Path(name)
    if not path.exists():
        raise BadInput(f"{name}: no such file")
    if not path.is_file():
        raise BadInput(f"{name}: not a regular file")
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SOPS_FILE_BYTES + 1)
    except OSError as err:
        raise BadInput(f"{name}: {err.strerror or err}") from None
    if len(data) > MAX_SOPS_FILE_BYTES:
        raise BadInput(f"{name}: more than {MAX_SOPS_FILE_BYTES} bytes, more than a worker decrypts")
    return data


def _check_recipients(given: list[str]) -> list[str]:
    """The recipients, each checked (``--recipient a,b`` as sops's ``--age`` takes them, or repeated)."""
    recipients = [r.strip() for item in given for r in item.split(",") if r.strip()]
    for recipient in recipients:
        if recipient.strip().upper().startswith(_PRIVATE):
            # NB: never echoed: it is a private key given by mistake
            raise BadInput("--recipient: that is an age private key, not a recipient: give its public key (age1…)")
        if len(recipient) > MAX_RECIPIENT or not _RECIPIENT.match(recipient):
            raise BadInput(f"--recipient {recipient[:16]!r}…: not an age recipient (age1… public key)")
    return list(dict.fromkeys(recipients))


def _check_parses(name: str, text: str) -> None:
    """sops's parse errors can quote the file: a file it would not parse is refused here, naming only a line."""
    lower = name.lower()
    if lower.endswith(YAML_SUFFIXES):
        import yaml

        try:
            list(yaml.safe_load_all(text))
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            at = f" line {mark.line + 1}" if mark is not None else ""
            raise BadInput(f"{name}:{at}: YAML does not parse: {getattr(err, 'problem', None) or 'syntax'}") from None
    elif lower.endswith(JSON_SUFFIXES):
        try:
            json.loads(text)
        except ValueError as err:
            raise BadInput(f"{name}: line {getattr(err, 'lineno', '?')}: JSON does not parse") from None
    elif lower.endswith(DOTENV_SUFFIXES):
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#") and "=" not in line:
                raise BadInput(f"{name}: line {number}: not KEY=VALUE (a dotenv file)")


def _values(text: str) -> list[str]:
    """What a message about ``text`` may not carry: each line, and what follows each ``:`` or ``=``."""
    out: list[str] = []
    for line in text.splitlines():
        out.append(line.strip())
        for sep in (":", "="):
            if sep in line:
                out.append(line.split(sep, 1)[1].strip().strip("\"'"))
    return out


def _write(target: Path, data: bytes, mode: int) -> None:
    """``data`` to ``target`` atomically (a temporary file beside it, renamed), with ``mode``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _encrypted(path: Path, text: str, recipients: list[str]) -> bytes:
    from workers.secrets import EncryptFailed, ToolMissing, encrypt_file

    try:
        out = encrypt_file(path, recipients)
    except ToolMissing as err:
        raise CommandError(str(err)) from None
    except EncryptFailed as err:
        raise BadInput(Redactor.of(_values(text)).text(str(err))) from None
    if store_of(path.name, out.decode(errors="replace")) is None:  # NB: what leaves here is ciphertext, or nothing
        raise CommandError(f"{path}: sops wrote no SOPS file: nothing written")
    return out


@_exit_2_on_bad_input
def cmd_encrypt(args: argparse.Namespace) -> int:
    recipients = _check_recipients(args.recipient)
    data = _read(args.file)
    path = Path(args.file)
    text = data.decode(errors="replace")
    found = store_of(path.name, text)
    if found is not None:
        raise BadInput(f"{args.file}: already SOPS-encrypted ({found}): `ferry secrets status {args.file}`")
    _check_parses(path.name, text)
    out = _encrypted(path, text, recipients)
    if args.in_place:
        _write(path, out, path.stat().st_mode & 0o777)
        print(f"{args.file}: encrypted for {len(recipients)} age recipient(s)", file=sys.stderr)
    elif args.output:
        target = Path(args.output)
        if not target.parent.is_dir():
            raise BadInput(f"-o {args.output}: {target.parent} is not a directory")
        _write(target, out, path.stat().st_mode & 0o777)
        print(f"{args.output}: {args.file} encrypted for {len(recipients)} age recipient(s)", file=sys.stderr)
    else:
        sys.stdout.buffer.write(out)
        sys.stdout.flush()
    return 0


def _sources(args: argparse.Namespace) -> list[IdentitySource]:
    """The worker's identity sources with their recipients (workers.secrets.worker_sources); CommandError (exit 1)
    when the clusters file cannot be read. Never a key."""
    from workers.secrets import IdentitiesUnusable, worker_sources

    try:
        return worker_sources(settings_from(args), args.identities)
    except IdentitiesUnusable as err:
        raise CommandError(str(err)) from None


def _source_lines(sources: list[IdentitySource]) -> list[str]:
    lines = []
    for s in sources:
        lines.append(f"{s.where}: {s.path}" + (f": unusable: {s.error}" if s.error else ""))
        lines += [f"  {r}" for r in s.recipients]
    return lines


def cmd_recipients(args: argparse.Namespace) -> int:
    """The recipients each of the worker's identity sources decrypts for, and where it is read; never a key.
    Exit 1 when none is configured or one is unusable."""
    sources = _sources(args)
    if not sources:
        raise CommandError(
            "no age identities configured: set FERRY_SOPS_AGE_KEYS (a 0600 identity file or a directory of them), "
            "`sops-age-keys` in the clusters file, or give --identities PATH"
        )
    data = [
        {"where": s.where, "path": s.path, "recipients": list(s.recipients)} | ({"error": s.error} if s.error else {})
        for s in sources
    ]
    emit({"sources": data}, args.json, "\n".join(_source_lines(sources)))
    return 1 if any(s.error for s in sources) else 0


def _status(name: str, text: str) -> tuple[dict[str, Any], str, int]:
    try:
        found = inspect(name, text)
    except SopsRefused as err:
        store = store_of(name, text)
        return {"file": name, "encrypted": True, "store": store, "refused": str(err)}, f"refused: {err}", 1
    if found is None:
        plain = _plain_secret_note(name, text)
        data = {"file": name, "encrypted": False, "plain_secret": bool(plain)}
        return data, f"{name}: not SOPS-encrypted{plain}", 1
    lines = [f"{name}: SOPS-encrypted ({found.store}) for {len(found.recipients)} age recipient(s)"]
    lines += [f"  {short_recipient(r)}" for r in found.recipients]
    if found.other_keys:
        lines.append(f"  also for {', '.join(found.other_keys)} keys (the worker decrypts with age only)")
    data = {"file": name, "encrypted": True, "store": found.store, "recipients": list(found.recipients)}
    return data | {"other_keys": list(found.other_keys)}, "\n".join(lines), 0


def _plain_secret_note(name: str, text: str) -> str:
    if not name.lower().endswith(YAML_SUFFIXES + JSON_SUFFIXES):
        return ""
    import yaml

    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        return ""
    if any(isinstance(d, dict) and is_plain_secret(d) for d in docs):
        return " (a Kubernetes Secret with data in the clear: `ferry release` refuses it)"
    return ""


def _decryptable(data: dict[str, Any], text: str, sources: list[IdentitySource]) -> tuple[str, int]:
    """Which of the worker's identity sources hold one of the file's recipients (the worker decrypts with any)."""
    holders = [(s, r) for s in sources for r in s.recipients if r in data.get("recipients", [])]
    data["decryptable_with"] = [{"where": s.where, "path": s.path, "recipient": r} for s, r in holders]
    if holders:
        found = "; ".join(f"{s.where} ({s.path}) for {short_recipient(r)}" for s, r in holders)
        return f"{text}\ndecrypted by the identities of {found}", 0
    where = ", ".join(f"{s.where} ({s.path})" for s in sources)
    return f"{text}\nnone of its recipients is held by the identities of {where}: the worker cannot decrypt it", 1


@_exit_2_on_bad_input
def cmd_status(args: argparse.Namespace) -> int:
    """Exit 0 when FILE is SOPS-encrypted for age recipients (and, when the worker's identities are configured,
    one of them is theirs), 1 when not (or the worker would refuse it)."""
    data, text, code = _status(args.file, _read(args.file).decode(errors="replace"))
    sources = _sources(args) if code == 0 else []
    if sources:
        text, code = _decryptable(data, text, sources)
    emit(data, args.json, text)
    return code
