"""Random valid NANP numbers for the blocklist benchmark, in bulk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

# -- numbers --------------------------------------------------------------------
from list_consts import NANP_BASE, VALID_NPA, Ints


def draw(rng: np.random.Generator, n: int) -> Ints:
    """n random valid NANP national numbers (duplicates possible)."""
    npa = rng.choice(VALID_NPA, size=n)
    nxx = rng.integers(200, 1000, size=n, dtype=np.int64)
    line = rng.integers(0, 10_000, size=n, dtype=np.int64)
    out: Ints = npa * 10_000_000 + nxx * 10_000 + line
    return out


def distinct_numbers(rng: np.random.Generator, n: int) -> tuple[Ints, Ints]:
    """n distinct numbers: (sorted, shuffled)."""
    pool: Ints = np.empty(0, dtype=np.int64)
    while len(pool) < n:
        fresh = draw(rng, n - len(pool) + n // 50 + 1000)  # ~0.4% collide at 50M
        pool = np.concatenate((pool, fresh))
        pool.sort()
        keep = np.empty(len(pool), dtype=bool)
        keep[0] = True
        np.not_equal(pool[1:], pool[:-1], out=keep[1:])
        pool = pool[keep]
    if len(pool) > n:
        mask = np.ones(len(pool), dtype=bool)
        mask[rng.choice(len(pool), len(pool) - n, replace=False)] = False
        pool = pool[mask]
    return pool, rng.permutation(pool)


def listed(sorted_numbers: Ints, candidates: Ints) -> npt.NDArray[np.bool_]:
    idx = np.minimum(np.searchsorted(sorted_numbers, candidates), len(sorted_numbers) - 1)
    found: npt.NDArray[np.bool_] = sorted_numbers[idx] == candidates
    return found


def unlisted(rng: np.random.Generator, sorted_lists: list[Ints], m: int) -> Ints:
    """m random valid numbers on none of the lists."""
    out: Ints = np.empty(0, dtype=np.int64)
    while len(out) < m:
        cand = draw(rng, m - len(out) + m // 10 + 100)
        for s in sorted_lists:
            cand = cand[~listed(s, cand)]
        out = np.concatenate((out, cand))
    return out[:m]


def write_list(path: Path, numbers: Ints, chunk: int = 1 << 22) -> None:
    """One 10-digit number a line, written in bulk (every number has 10 digits)."""
    with path.open("wb") as fh:
        for start in range(0, len(numbers), chunk):
            v = numbers[start : start + chunk].copy()
            text = np.empty((len(v), 11), dtype=np.uint8)
            text[:, 10] = ord("\n")
            for i in range(9, -1, -1):
                text[:, i] = v % 10 + ord("0")
                v //= 10
            fh.write(text.tobytes())


def keys_of(numbers: Ints) -> list[int]:
    """E.164 integer keys (+1 NPA NXX XXXX -> 1NPANXXXXXX) as Python ints."""
    keys: list[int] = (numbers + NANP_BASE).tolist()
    return keys


def e164(numbers: Ints) -> list[str]:
    return [f"+{k}" for k in keys_of(numbers)]


# -- CPU left to us ------------------------------------------------------------------
