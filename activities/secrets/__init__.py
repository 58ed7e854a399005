"""SOPS decryption on the worker (the sops and age-keygen binaries, the worker's age identities). The only package
that runs sops."""

from activities.secrets.binaries import AGE_VERSION, SOPS_VERSION, ToolMissing, age_keygen_path, sops_path
from activities.secrets.decrypt import Decrypted, DecryptionFailed, decrypted, find_sops_files
from activities.secrets.identities import Identities, IdentitiesUnusable, load

__all__ = [
    "AGE_VERSION",
    "SOPS_VERSION",
    "Decrypted",
    "DecryptionFailed",
    "Identities",
    "IdentitiesUnusable",
    "ToolMissing",
    "age_keygen_path",
    "decrypted",
    "find_sops_files",
    "load",
    "sops_path",
]
