"""A Hampel flag is a spike only when it stands alone.

The causal Hampel filter (gateway.conditioning) compares each sample with the median of the
samples before it, so a real step flags its first few samples until the median catches up,
just as a spike flags one. A spike is a single flagged sample between two unflagged ones of the
same tag; a run of two or more is a change of level, left alone. The verdict on a sample needs
the tag's next sample, which may come in a later tick: the state carries the open case.

`confirm_spikes` is the streaming kernel; `confirm_spikes_reference` computes the same from a
whole history with array operations (the tests hold them equal in any chunking).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from gateway.conditioning import OUT_OF_ORDER, SPIKE, UNUSABLE

NOT_USED = UNUSABLE | OUT_OF_ORDER


@njit(cache=True)
def confirm_spikes(
    tag: np.ndarray,
    flags: np.ndarray,
    prev_flagged: np.ndarray,
    open_t: np.ndarray,
    open_ok: np.ndarray,
    t: np.ndarray,
    confirmed_t: np.ndarray,
    confirmed_tag: np.ndarray,
) -> int:
    """Walk one tick's samples in order; write the times and tags of confirmed spikes into
    `confirmed_t` / `confirmed_tag` (as long as the batch) and return how many.

    Per tag: prev_flagged[k] whether its last used sample was flagged; open_ok[k] whether that
    sample is a candidate (flagged, and the one before it was not) with time open_t[k].
    Samples the chain did not use (unusable, out of order) are skipped."""
    n_out = 0
    for i in range(tag.shape[0]):
        f = flags[i]
        if f & NOT_USED:
            continue
        k = tag[i]
        spike = (f & SPIKE) != 0
        if open_ok[k] and not spike:
            confirmed_t[n_out] = open_t[k]
            confirmed_tag[n_out] = k
            n_out += 1
        open_ok[k] = spike and not prev_flagged[k]
        if open_ok[k]:
            open_t[k] = t[i]
        prev_flagged[k] = spike
    return n_out


def confirm_spikes_reference(tag: np.ndarray, t: np.ndarray, flags: np.ndarray) -> set[tuple[int, float]]:
    """(tag, time) of every confirmed spike in a whole history."""
    out: set[tuple[int, float]] = set()
    used = (flags & NOT_USED) == 0
    for k in np.unique(tag[used]):
        idx = np.flatnonzero(used & (tag == k))
        s = (flags[idx] & SPIKE) != 0
        before = np.concatenate(([False], s[:-1]))
        after = np.concatenate((s[1:], [True]))  # the last sample has no verdict yet
        lone = s & ~before & ~after
        out |= {(int(k), float(x)) for x in t[idx[lone]]}
    return out


class SpikeConfirmation:
    """Per-tag state of `confirm_spikes`, for a pipeline of `n_tags` tags."""

    def __init__(self, n_tags: int) -> None:
        self.prev_flagged = np.zeros(n_tags, np.bool_)
        self.open_t = np.zeros(n_tags)
        self.open_ok = np.zeros(n_tags, np.bool_)
        self.confirmed = np.zeros(n_tags, np.int64)

    def update(self, tag: np.ndarray, t: np.ndarray, flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(tag, time) arrays of the spikes confirmed by this tick's samples."""
        out_t = np.empty(len(tag))
        out_k = np.empty(len(tag), np.int64)
        n = confirm_spikes(
            np.ascontiguousarray(tag, np.int64),
            flags,
            self.prev_flagged,
            self.open_t,
            self.open_ok,
            t,
            out_t,
            out_k,
        )
        np.add.at(self.confirmed, out_k[:n], 1)
        return out_k[:n], out_t[:n]
