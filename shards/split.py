"""The held-out split by source image, shared by the detector and the exports.

A row's split is a hash of its ``source_id`` (salted), so a real photo and every artifact image made
from it always fall on the same side: nothing of a held-out photo is seen in training. The same
``val_fraction`` and salt give the same split in ``detector.train``, ``detector.eval`` and
``shards.export``.
"""

from __future__ import annotations

import hashlib
from typing import Literal

DEFAULT_SALT = "flawforge"
DEFAULT_VAL_FRACTION = 0.2


def split_of(source_id: str, val_fraction: float = DEFAULT_VAL_FRACTION, salt: str = DEFAULT_SALT
             ) -> Literal["train", "val"]:
    """``val`` when the hash of ``source_id`` maps below ``val_fraction`` in [0, 1), else ``train``."""
    digest = hashlib.sha256(f"{salt}\x00{source_id}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"
