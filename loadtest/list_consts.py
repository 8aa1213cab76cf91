"""Paths, limits and targets shared by the blocklist benchmark modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
EXE = ROOT / ".venv" / "bin" / "robocall-shield"
NANP_BASE = 10_000_000_000  # E.164 key of +1 000 000 0000
MB = 1024 * 1024

TARGET_BUILD_S = 90.0
TARGET_BUILD_NUMBERS = 50_000_000
TARGET_MEMORY_MB = 150.0
TARGET_MISS_US = 0.3
TARGET_HIT_US = 5.0

BUILD_TIMEOUT_S = 900.0  # far above the target, so a miss is measured, not cut
PROXY_READY_S = 180.0  # start-up verifies sha256 of every artefact file
RELOAD_VISIBLE_S = 60.0
MEMORY_RATE, MEMORY_SECONDS = 200, 8  # the traffic that makes the proxy read the store
MISSES, HITS = 1_000_000, 100_000

Ints = npt.NDArray[np.int64]
VALID_NPA: Ints = np.array([a for a in range(200, 1000) if a % 100 != 11], dtype=np.int64)
