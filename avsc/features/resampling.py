"""Polyphase resampling: ``scipy.signal.resample_poly`` to the bit, without ``scipy.signal``.

``resample_poly(x, up, down)`` filters the zero-stuffed signal with a Kaiser-windowed sinc
(beta 5, ``20 max(up, down) + 1`` taps, scaled by ``up``) and keeps every ``down``-th sample;
scipy's ``upfirdn`` sums each output's terms from the oldest input sample to the newest, one
rounded multiply and add at a time (in float32 for float32 samples). Here the taps that a
block of consecutive outputs applies to the input samples under it are one sparse matrix
(CSR: a row per output, a column per input sample, each row's taps in input order), and the
input is cut into overlapping columns, one per block. ``scipy.sparse``'s ``csr_matvecs`` then
runs each output's sum in that very order, one multiply and add per term, for every block at
once: the same bits as ``resample_poly`` (44.1 -> 16 kHz in a fifth of its time, 48 -> 16 kHz
in a third), and no import of ``scipy.signal`` (about 1 s).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: at least this many outputs per block (a multiple of ``up``): a block's input columns
#: overlap by the filter's length, so short blocks would copy the input many times over
BLOCK_OUTPUTS = 256


def _lowpass_fir(numtaps: int, cutoff: float) -> np.ndarray:
    """``scipy.signal.firwin(numtaps, cutoff, window=("kaiser", 5.0))`` (cutoff relative to
    Nyquist), in float64: the windowed sinc, scaled to unit gain at DC."""
    m = np.arange(numtaps) - 0.5 * (numtaps - 1)
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(numtaps, 5.0)
    return h / np.sum(h)


@lru_cache(maxsize=16)
def _plan(up: int, down: int):
    """For ``up / down`` in float32: the CSR matrix of one block of outputs, the offset of
    its first input sample relative to ``block index * stride``, the block's width in input
    samples, its outputs and its stride in input samples."""
    import scipy.sparse

    dtype = np.float32
    max_rate = max(up, down)
    half_len = 10 * max_rate
    h = _lowpass_fir(2 * half_len + 1, 1.0 / max_rate).astype(dtype)
    h *= up  # as resample_poly: in x's dtype, float32
    n_pre_pad = down - half_len % down
    n_pre_remove = (half_len + n_pre_pad) // down  # outputs that belong to the filter delay
    hp = np.concatenate([np.zeros(n_pre_pad, dtype), h])
    groups = -(-BLOCK_OUTPUTS // up)
    block, stride = groups * up, groups * down
    # output j (full index m = j + n_pre_remove) = sum over input samples i of
    # hp[m down - i up] x[i], for 0 <= m down - i up < len(hp), oldest i first
    t = (n_pre_remove + np.arange(block)) * down
    i_lo = -((len(hp) - 1 - t) // up)  # ceil((t - len(hp) + 1) / up)
    i_hi = t // up
    first = int(i_lo.min())
    width = int(i_hi.max()) - first + 1
    counts = i_hi - i_lo + 1
    rows = np.repeat(np.arange(block), counts)
    cols = np.concatenate([np.arange(a, b + 1) for a, b in zip(i_lo, i_hi, strict=True)])
    taps = hp[np.repeat(t, counts) - cols * up]
    keep = taps != 0  # the zero padding of the filter adds nothing to a sum
    w = scipy.sparse.csr_matrix(
        (taps[keep], (rows[keep], cols[keep] - first)), shape=(block, width), dtype=dtype
    )
    w.sort_indices()  # each row's taps from the oldest input sample to the newest
    return w, first, width, block, stride


def resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """``scipy.signal.resample_poly(x, up, down, axis=-1)`` of finite float32 ``x`` (``up``
    and ``down`` coprime), the same bits. (The filter's zero taps are left out of the sums,
    which changes nothing for finite samples; in float64 the filter here, numpy's Kaiser
    window, can differ from scipy's in the last bit: float64 samples are refused.)"""
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"resample_poly: float32 samples expected, not {x.dtype}")
    w, first, width, block, stride = _plan(int(up), int(down))
    lead_shape, n_in = x.shape[:-1], x.shape[-1]
    n_out = -(-n_in * up // down)
    x2 = x.reshape(-1, n_in)
    channels = x2.shape[0]
    blocks = max(1, -(-n_out // block))
    lead = max(0, -first)  # zeros before the signal, where the filter reaches into the past
    length = max(lead + n_in, lead + first + (blocks - 1) * stride + width)
    xp = np.zeros((channels, length), x.dtype)
    xp[:, lead : lead + n_in] = x2
    base = xp[:, lead + first :]
    item = xp.itemsize
    cols = np.lib.stride_tricks.as_strided(
        base, shape=(width, channels, blocks), strides=(item, length * item, stride * item)
    )
    cols = np.ascontiguousarray(cols).reshape(width, channels * blocks)
    y = w @ cols  # (block, channels * blocks): csr_matvecs, each sum in input order
    y = y.reshape(block, channels, blocks).transpose(1, 2, 0).reshape(channels, -1)
    return np.ascontiguousarray(y[:, :n_out]).reshape(*lead_shape, n_out)
