"""Caps on what enters workflow history: object ids and records bounded in count and size."""

from __future__ import annotations

MAX_IDS = 50  # object ids kept per list in anything that enters history (events, reconcile results)
# ... and entries (object ids, field paths) across all lists of one record, each at most MAX_ENTRY characters and
# MAX_RECORD_CHARS in all: 1,000 objects drifting on 10 fields make one record of a few KB, not ~1 MB, whatever
# the names' lengths, so the 50 events an environment keeps stay far below the 512 KiB a continue-as-new input may
# carry (bench/history.py measures the worst case: every list and string at its cap).
MAX_ENTRIES = 200
MAX_ENTRY = 256
MAX_RECORD_CHARS = 2048


_MORE = "... and "


def _more(line: str) -> int:
    """How many entries a '... and N more' line counts (0 for any other line)."""
    if not line.startswith(_MORE):
        return 0
    count = line[len(_MORE) :].split(" ", 1)[0]
    return int(count) if count.isdigit() else 0


def cap_ids(items: list[str], limit: int = MAX_IDS, chars: int | None = None) -> list[str]:
    """The first `limit` ids (and no more than `chars` characters of them), then one line saying how many more:
    history never grows with the bundle. Idempotent: a list capped before is left as it is."""
    more = _more(items[-1]) if items else 0
    real = items[:-1] if more else items
    kept: list[str] = []
    used = 0
    for item in real[:limit]:
        entry = item[:MAX_ENTRY]
        if chars is not None and used + len(entry) > chars:
            break
        kept.append(entry)
        used += len(entry)
    more += len(real) - len(kept)
    return [*kept, f"{_MORE}{more} more"] if more else kept


def cap_objects(
    objects: dict[str, list[str]], limit: int = MAX_IDS, budget: int = MAX_ENTRIES, chars: int = MAX_RECORD_CHARS
) -> dict[str, list[str]]:
    """At most `limit` keys and `limit` entries per list, `budget` entries and `chars` characters in all (then each
    list kept keeps at least its count; keys past the characters are counted). Idempotent, like cap_ids."""
    keys = [k for k in objects if not k.startswith(_MORE)]
    capped: dict[str, list[str]] = {}
    left = budget - min(len(keys), limit)
    room = chars
    for key in keys[:limit]:
        name = key[:MAX_ENTRY]
        if len(name) > room:
            break
        room -= len(name)
        items = cap_ids(list(objects[key]), min(limit, max(left, 0)), chars=room)
        real = items[:-1] if items and _more(items[-1]) else items
        left -= len(real)
        room -= sum(len(i) for i in real)
        capped[name] = items
    more = len(keys) - len(capped) + sum(_more(k) for k in objects)
    if more > 0:
        capped[f"{_MORE}{more} more"] = []
    return capped
