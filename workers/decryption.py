"""What the worker tells its operator at start about SOPS: which age recipients each configured identity source
decrypts for (FERRY_SOPS_AGE_KEYS, and every `sops-age-keys` of its clusters file), or why one is unusable. Never a
key: only public recipients and paths."""

from __future__ import annotations

from pathlib import Path

from ferry.settings import Settings


def identity_sources(settings: Settings) -> dict[str, Path]:
    """Where this worker's identities are: `worker` for FERRY_SOPS_AGE_KEYS, `cluster NAME` and `cluster NAME
    environment ENV` for the clusters file's entries."""
    from activities.cluster import load_clusters

    sources: dict[str, Path] = {}
    if settings.worker.sops_age_keys is not None:
        sources["worker"] = settings.worker.sops_age_keys
    clusters = load_clusters(settings.clusters, str(settings.kubeconfig) if settings.kubeconfig else None)
    for name, entry in sorted(clusters.clusters.items()):
        if entry.sops_age_keys:
            sources[f"cluster {name}"] = Path(entry.sops_age_keys)
        for env, bounds in sorted((entry.environments or {}).items()):
            if bounds.sops_age_keys:
                sources[f"cluster {name} environment {env}"] = Path(bounds.sops_age_keys)
    return sources


def decryption_report(settings: Settings) -> list[str]:
    """One line per identity source: its path and the recipients it decrypts for, or what is wrong with it."""
    from activities.secrets import IdentitiesUnusable, ToolMissing, load
    from ferry.sops import short_recipient

    lines = []
    for where, path in identity_sources(settings).items():
        try:
            found = load(path)
        except (IdentitiesUnusable, ToolMissing) as err:
            lines.append(f"SOPS identities ({where}) unusable: {err}")
            continue
        recipients = ", ".join(short_recipient(r) for r in found.recipients)
        lines.append(
            f"SOPS identities ({where}) at {path} decrypt for {len(found.recipients)} recipient(s): {recipients}"
        )
    return lines
