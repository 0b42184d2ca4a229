"""PostgreSQL advisory lock keys shared by the import and the API.

An ingestion takes, per file kind, the exclusive transaction-level lock below (one customers file and
one loans file load at a time; always loans first, so two jobs cannot deadlock). The loans transaction
opens first thing in a job and commits last, so its lock spans the whole job: create-loan takes the same
key *shared* (try, never wait) before deciding for a customer an import can change, and answers 503 with
Retry-After when it cannot: a decision made while an import runs could miss the history the import is
about to commit.
"""

from __future__ import annotations

from typing import Literal

FileKind = Literal["customers", "loans"]

INGESTION_LOCK_KEYS: dict[FileKind, int] = {"customers": 0x6372_6564_6974_01, "loans": 0x6372_6564_6974_02}
IMPORT_RUNNING_KEY = INGESTION_LOCK_KEYS["loans"]
