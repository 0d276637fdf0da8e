"""Near-duplicates by MinHash LSH (``datasketch``), signatures computed a batch of rows at a time.

A row's set is its shingles: character n-grams (default 5, over Unicode code points, so Chinese is
shingled as well as English) or word n-grams of its :func:`~openm1.data.ngram.normalize`'d key; a
text shorter than n is one shingle. Each shingle is hashed to 32 bits, and the signature is
datasketch's ``affine32`` MinHash of those hashes, bit for bit (``MinHash(hashfunc=...)`` with the
same seed gives the same ``hashvalues``; a test checks it), computed with numpy for a whole batch
instead of one ``update_batch`` per row.

Candidates come from datasketch's ``MinHashLSH`` and each is confirmed by the estimated Jaccard
similarity of the two signatures, so a band collision below the threshold is not called a
duplicate. Since a false candidate costs only that comparison while a missed one is a duplicate
kept, the bands are datasketch's optimum with false negatives weighted 0.9 and false positives 0.1
(at threshold 0.7 and 128 permutations: 20 bands of 6, so a pair at Jaccard 0.7 is a candidate with
probability 0.92 and one at 0.8 with 0.998; equal weights would give 14 bands of 9 and 0.44, 0.87).

Memory: held for every row added (the kept rows, in dedup; the ``--against`` rows, in separate), and
nothing for the others: the LSH's hash tables (one entry per band and row, the price of finding
candidates in constant time; compact ones, see :class:`BandTable`) and the row's signature
(``num_perm`` x 4 bytes, for the confirmation). Measured by ``bench/data_throughput.py``: see
``docs/data.md``. Rows are read, signed and written a batch at a time.
"""

from __future__ import annotations

import zlib
from array import array

import numpy as np

from openm1.data import require

SHINGLES = ("char", "word")

# Fixed 64-bit multipliers for the window hash, made odd: any fixed odd constants do.
_MULT = np.array(
    [
        0x910A2DEC89025CC1,
        0xBEEB8DA1658EEC67,
        0xF893A2EEFB32555E,
        0x71C18690EE42C90B,
        0x71BB54D8D101B5B9,
        0xC34D0BFF90150280,
        0xE099EC6CD7363CA5,
        0x85E7BB0F12278575,
        0xD0A40A6E0A5E4E7B,
        0x1A2F4C2A25C2A2D9,
        0x6C1C9F4E47BA6A59,
        0x3A1E0F8E4C7C0B1D,
        0xA54FF53A5F1D36F1,
        0x510E527FADE682D1,
        0x9B05688C2B3E6C1F,
        0x1F83D9ABFB41BD6B,
    ],
    dtype=np.uint64,
) | np.uint64(1)


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def _fmix32(h: np.ndarray) -> np.ndarray:
    # datasketch's pre-mix for the affine32 scheme (MurmurHash3's 32-bit finalizer)
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _units(normalized: str, shingle: str) -> np.ndarray:
    """The sequence a row is shingled over: code points, or 32-bit hashes (crc32) of words."""
    if shingle == "char":
        return np.frombuffer(normalized.encode("utf-32-le"), dtype=np.uint32)
    return np.fromiter((zlib.crc32(w.encode("utf-8")) for w in normalized.split()), dtype=np.uint32)


def shingle_hashes(normalized: list[str], shingle: str = "char", n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The 32-bit shingle hashes of each text, concatenated, and the offsets of each text's run.

    Returns ``(hashes [T] uint32, offsets [B + 1] int64)``: text i's shingles are
    ``hashes[offsets[i]:offsets[i + 1]]``, at least one per text. A window's hash mixes its n units
    with fixed multipliers, so it depends on the units and their order only.
    """
    if shingle not in SHINGLES:
        raise ValueError(f"unknown shingle {shingle!r}: one of {', '.join(SHINGLES)}")
    if not 1 <= n <= len(_MULT):
        raise ValueError(f"shingle size must be 1..{len(_MULT)}, got {n}")
    units = [_units(t, shingle) for t in normalized]
    lengths = np.fromiter((len(u) for u in units), dtype=np.int64, count=len(units))
    pad = np.zeros(n, dtype=np.uint32)
    # each text followed by n zeros, so no window runs into the next text (not even an empty text's)
    seq = (
        np.concatenate([x for u in units for x in (u, pad)]).astype(np.uint64)
        if units
        else np.zeros(0, np.uint64)
    )
    starts = np.concatenate([[0], np.cumsum(lengths + n)[:-1]]) if len(units) else np.zeros(0, np.int64)
    counts = np.maximum(lengths - n + 1, 1)  # a text shorter than n is one (zero-padded) shingle
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    # window start positions: starts[i] + 0..counts[i]-1
    pos = np.repeat(starts - offsets[:-1], counts) + np.arange(offsets[-1], dtype=np.int64)
    seq = np.concatenate([seq, np.zeros(n, np.uint64)])
    h = np.zeros(len(pos), dtype=np.uint64)
    for k in range(n):
        h += seq[pos + k] * _MULT[k]
    return (_fmix64(h) >> np.uint64(32)).astype(np.uint32), offsets


class MinHasher:
    """datasketch's affine32 MinHash (``num_perm`` permutations from ``seed``), for many rows at once."""

    def __init__(self, num_perm: int = 128, seed: int = 1, shingle: str = "char", n: int = 5):
        datasketch = require("datasketch", "MinHash deduplication")
        self.num_perm, self.seed, self.shingle, self.n = num_perm, seed, shingle, n
        proto = datasketch.MinHash(num_perm=num_perm, seed=seed, scheme="affine32")
        self.a, self.b = (np.asarray(x, dtype=np.uint32) for x in proto.permutations)
        shingle_hashes(["x"], shingle, n)  # validate the options now, not on the first batch

    def from_hashes(self, hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Signatures ``[B, num_perm]`` uint32 from :func:`shingle_hashes`' output."""
        B = len(offsets) - 1
        out = np.empty((B, self.num_perm), dtype=np.uint32)
        hv = _fmix32(hashes)
        a, b = self.a[:, None], self.b[:, None]
        # [num_perm, shingles] (reduced along the contiguous axis: 4x faster than the transpose), a
        # slice of rows at a time so the product stays about 4 MB, in cache
        budget = max(1, (1 << 20) // self.num_perm)
        i = 0
        while i < B:
            j = int(np.searchsorted(offsets, offsets[i] + budget, side="right")) - 1
            j = min(max(j, i + 1), B)
            lo, hi = offsets[i], offsets[j]
            phv = a * hv[None, lo:hi]
            phv += b
            out[i:j] = np.minimum.reduceat(phv, offsets[i:j] - lo, axis=1).T
            i = j
        return out

    def signatures(self, normalized: list[str]) -> np.ndarray:
        """``[len(normalized), num_perm]`` uint32 signatures of already normalised texts."""
        if not normalized:
            return np.empty((0, self.num_perm), dtype=np.uint32)
        return self.from_hashes(*shingle_hashes(normalized, self.shingle, self.n))


class BandTable:
    """One LSH band's hash table, in the storage interface ``MinHashLSH`` uses (``insert``, ``get``).

    datasketch's default storage maps each band value (a ``bytes``) to a ``set`` of keys: about 330
    bytes per band and row, 6.6 KB per row at 20 bands. Here a dict maps the band value's 64-bit
    hash to one int key, or a list once several rows share it: about 100 bytes per band and row.
    Two band values with the same 64-bit hash merely make an extra candidate, which the signature
    comparison then rejects.
    """

    __slots__ = ("_d",)

    def __init__(self) -> None:
        self._d: dict[int, int | list[int]] = {}

    def insert(self, band: bytes, key: int, **_) -> None:
        h = hash(band)
        v = self._d.get(h)
        if v is None:
            self._d[h] = key
        elif isinstance(v, list):
            v.append(key)
        else:
            self._d[h] = [v, key]

    def get(self, band: bytes) -> tuple[int, ...] | list[int]:
        v = self._d.get(hash(band))
        return () if v is None else v if isinstance(v, list) else (v,)

    def __len__(self) -> int:
        return len(self._d)


class MinHashIndex:
    """Rows added so far, findable by estimated Jaccard similarity >= ``threshold``.

    Holds a datasketch ``MinHashLSH`` (its bands and band keys; ``lsh.query`` works on it) whose hash
    tables are :class:`BandTable` s, and one signature per added row (see the module doc). The band
    keys are what ``MinHashLSH.insert`` and ``query`` compute (``bytes`` of each band, byte-swapped),
    made for a whole batch at once. The LSH's key table, which only serves to remove rows, is not
    filled: this index never removes. Keys in the LSH are positions in the signature store; ``rids``
    maps them back to row ids.
    """

    CHUNK = 65536

    def __init__(
        self,
        threshold: float = 0.7,
        num_perm: int = 128,
        seed: int = 1,
        shingle: str = "char",
        n: int = 5,
        weights: tuple[float, float] = (0.1, 0.9),
    ):
        if not 0.0 < threshold < 1.0:
            raise ValueError(
                f"MinHash threshold must be in (0, 1), got {threshold} (exact copies only: --method exact)"
            )
        datasketch = require("datasketch", "MinHash deduplication")
        self.threshold = threshold
        self.hasher = MinHasher(num_perm, seed, shingle, n)
        # weights: (false positive, false negative), see the module doc
        self.lsh = datasketch.MinHashLSH(threshold=threshold, num_perm=num_perm, weights=weights)
        # datasketch's own tables keep a set per bucket: 6.7 GB for 1M short rows at 20 bands
        self.lsh.hashtables = [BandTable() for _ in range(self.lsh.b)]
        self._tables = self.lsh.hashtables
        self._ranges = [(lo * 4, hi * 4) for lo, hi in self.lsh.hashranges]
        self._chunks: list[np.ndarray] = []
        self.rids = array("q")

    def __len__(self) -> int:
        return len(self.rids)

    def signatures(self, normalized: list[str]) -> np.ndarray:
        return self.hasher.signatures(normalized)

    def band_keys(self, sigs: np.ndarray) -> list[list[bytes]]:
        """Per row, the LSH key of each band, as ``MinHashLSH`` makes it: ``bytes(band.byteswap().data)``."""
        raw = np.ascontiguousarray(sigs, dtype=np.uint32).byteswap().tobytes()
        width = self.hasher.num_perm * 4
        return [[raw[o + lo : o + hi] for lo, hi in self._ranges] for o in range(0, len(raw), width)]

    def _add(self, sig: np.ndarray, keys: list[bytes], rid: int) -> None:
        key = len(self.rids)
        if key % self.CHUNK == 0:
            self._chunks.append(np.empty((self.CHUNK, self.hasher.num_perm), dtype=np.uint32))
        self._chunks[-1][key % self.CHUNK] = sig
        self.rids.append(rid)
        for h, table in zip(keys, self._tables, strict=True):
            table.insert(h, key)

    def _best(self, sig: np.ndarray, keys: list[bytes]) -> tuple[int, float] | None:
        cands: set[int] = set()
        for h, table in zip(keys, self._tables, strict=True):
            found = table.get(h)
            if found:
                cands.update(found)
        if not cands:
            return None
        order = sorted(cands)  # ties go to the earliest row
        stored = np.stack([self._chunks[k // self.CHUNK][k % self.CHUNK] for k in order])
        jac = (stored == sig[None, :]).mean(axis=1)
        i = int(jac.argmax())
        if jac[i] < self.threshold:
            return None
        return self.rids[order[i]], float(jac[i])

    def add(self, sigs: np.ndarray, rids: list[int]) -> None:
        """Add rows (signatures ``[B, num_perm]`` and their row ids)."""
        for sig, keys, rid in zip(sigs, self.band_keys(sigs), rids, strict=True):
            self._add(sig, keys, rid)

    def search(self, sigs: np.ndarray) -> list[tuple[int, float] | None]:
        """Each row's best added row with estimated Jaccard >= threshold, as (row id, Jaccard), or None."""
        return [self._best(sig, keys) for sig, keys in zip(sigs, self.band_keys(sigs), strict=True)]

    def dedup(self, sigs: np.ndarray, rids: list[int]) -> list[tuple[int, float] | None]:
        """Each row in order: its match among the rows added so far (earlier rows of this batch
        included), or None, and then the row is added."""
        out: list[tuple[int, float] | None] = []
        for sig, keys, rid in zip(sigs, self.band_keys(sigs), rids, strict=True):
            m = self._best(sig, keys)
            if m is None:
                self._add(sig, keys, rid)
            out.append(m)
        return out
