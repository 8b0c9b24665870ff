"""Identifier rules shared by the HTTP layer and the store.

Both layers check: the routes to answer with a precise 400, the store so that no caller can
ever turn an identifier into a path outside the data directory.
"""

from __future__ import annotations

import re

# Explicit ASCII classes: \d and \w also match non-ASCII digits and letters.
USER_ID_RE = re.compile(r"[0-9]{1,20}")
KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")


def is_valid_user_id(value: str) -> bool:
    # fullmatch, not match + "$": "$" also matches before a trailing newline.
    return USER_ID_RE.fullmatch(value) is not None


def is_valid_key(value: str) -> bool:
    return KEY_RE.fullmatch(value) is not None
