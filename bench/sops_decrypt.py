"""Decryption's cost on the worker, per reconcile: N SOPS-encrypted Secrets (encrypted with the real sops for one
age recipient) through activities.secrets.decrypted, the first time (a sops process per file) and again (an
iteration's check of the same release: remembered in memory, no sops), with a plain release of the same N Secrets
beside it (no decryption at all: the scan only). Prints JSON.

    .venv/bin/python bench/sops_decrypt.py --files 1,20,100 > bench/results/sops-decrypt.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from activities.secrets import AGE_VERSION, SOPS_VERSION
from activities.secrets.decrypt import _PLAINTEXTS, _scanned, decrypted
from activities.secrets.encrypt import encrypt, new_identity

SECRET = "apiVersion: v1\nkind: Secret\nmetadata: {{name: s{i}}}\nstringData: {{password: pw-{i}-{pad}}}\n"


def _release(root: Path, count: int, recipient: str | None) -> Path:
    root.mkdir(parents=True)
    for i in range(count):
        path = root / f"s{i}.yaml"
        path.write_text(SECRET.format(i=i, pad="x" * 32))
        if recipient is not None:
            path.write_bytes(encrypt(path, [recipient]))
    return root


def _timed(root: Path, keys: Path, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        with decrypted(root, True, keys, "bench"):
            pass
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", default="1,20,100")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ferry-bench-sops-"))
    keys = work / "age.key"
    recipient = new_identity(keys)
    rows = []
    for count in (int(n) for n in args.files.split(",")):
        encrypted = _release(work / f"enc-{count}", count, recipient)
        plain = _release(work / f"plain-{count}", count, None)
        cold = []
        scan: list[float] = []
        for _ in range(args.repeat):
            _PLAINTEXTS.clear()
            _scanned.cache_clear()
            cold += _timed(encrypted, keys, 1)
            scan += _timed(plain, keys, 1)  # the first look at a plain release: its files read, none decrypted
        warm = _timed(encrypted, keys, args.repeat)
        cold_ms, warm_ms = statistics.median(cold), statistics.median(warm)
        rows.append(
            {
                "files": count,
                "first_decrypt_ms": round(cold_ms, 1),
                "first_decrypt_ms_per_file": round(cold_ms / count, 2),
                "remembered_ms": round(warm_ms, 2),
                "plain_release_first_scan_ms": round(statistics.median(scan), 2),
                "first_over_remembered": round(cold_ms / warm_ms, 1),
            }
        )
    print(
        json.dumps(
            {
                "benchmark": "sops-decrypt",
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "sops": SOPS_VERSION,
                "age": AGE_VERSION,
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "repeat": args.repeat,
                "what": "activities.secrets.decrypted: scan, recipients check, private copy, sops per file, cleanup",
                "results": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
