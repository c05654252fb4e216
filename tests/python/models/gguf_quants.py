"""GGUF blocks for tests: ``quantize(weight, type_name)`` gives a float
matrix in any block type the engine runs, as uint8 ``[rows, row_bytes]``.

The ``gguf`` package quantizes Q4_0 ... Q8_0 (as ggml does); it has no
quantizer for the K types, so they are made here: a simple min/scale search
per sub-block (not llama.cpp's refined one), laid out byte for byte as
ggml-common.h says. What matters to the tests is that the bytes are valid
blocks; the reference they are compared with dequantizes the same bytes
with ``gguf.quants.dequantize``.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import quantize as gguf_quantize


def quantize(weight: np.ndarray, type_name: str) -> np.ndarray:
    """``weight`` [rows, cols] float32 -> uint8 [rows, row_bytes] blocks of ``type_name``."""
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    if type_name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"):
        return gguf_quantize(weight, GGMLQuantizationType[type_name])
    rows, cols = weight.shape
    assert cols % 256 == 0, "K types need columns in multiples of 256"
    blocks = weight.reshape(rows * cols // 256, 256)
    maker = {"Q4_K": _q45_k, "Q5_K": _q45_k, "Q6_K": _q6_k}[type_name]
    out = maker(blocks, bits=5 if type_name == "Q5_K" else 4)
    return out.reshape(rows, -1)


def _half(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float16).view(np.uint8).reshape(*values.shape, 2)


def _q45_k(blocks: np.ndarray, bits: int) -> np.ndarray:
    n = blocks.shape[0]
    top = (1 << bits) - 1
    sub = blocks.reshape(n, 8, 32)
    low = np.minimum(sub.min(axis=2), 0.0)  # [n, 8]
    scale = (sub.max(axis=2) - low) / top
    d = np.maximum(scale.max(axis=1), 1e-12) / 63
    dmin = np.maximum((-low).max(axis=1), 1e-12) / 63
    sc = np.clip(np.round(scale / d[:, None]), 0, 63).astype(np.uint8)
    mn = np.clip(np.round(-low / dmin[:, None]), 0, 63).astype(np.uint8)
    d = d.astype(np.float16).astype(np.float32)
    dmin = dmin.astype(np.float16).astype(np.float32)
    step = np.maximum(d[:, None] * sc, 1e-12)
    q = np.clip(np.round((sub + (dmin[:, None] * mn)[:, :, None]) / step[:, :, None]), 0, top)
    q = q.astype(np.uint8).reshape(n, 256)
    scales = np.zeros((n, 12), np.uint8)
    for j in range(4):
        scales[:, j] = (sc[:, j] & 63) | ((sc[:, j + 4] >> 4) << 6)
        scales[:, j + 4] = (mn[:, j] & 63) | ((mn[:, j + 4] >> 4) << 6)
        scales[:, j + 8] = (sc[:, j + 4] & 0xF) | ((mn[:, j + 4] & 0xF) << 4)
    qs = np.zeros((n, 128), np.uint8)
    for j in range(4):
        qs[:, 32 * j : 32 * j + 32] = (q[:, 64 * j : 64 * j + 32] & 0xF) | (
            (q[:, 64 * j + 32 : 64 * j + 64] & 0xF) << 4
        )
    parts = [_half(d), _half(dmin), scales]
    if bits == 5:
        qh = np.zeros((n, 32), np.uint8)
        for s in range(8):  # sub-block s: bit s of qh[l]
            qh |= ((q[:, 32 * s : 32 * s + 32] >> 4) & 1).astype(np.uint8) << s
        parts.append(qh)
    parts.append(qs)
    return np.concatenate([p.reshape(n, -1) for p in parts], axis=1)


def _q6_k(blocks: np.ndarray, bits: int) -> np.ndarray:
    del bits
    n = blocks.shape[0]
    sub = blocks.reshape(n, 16, 16)
    amax = np.abs(sub).max(axis=2)  # [n, 16]
    scale = amax / 31
    d = np.maximum(scale.max(axis=1), 1e-12) / 127
    sc = np.clip(np.round(scale / d[:, None]), -128, 127).astype(np.int8)
    d = d.astype(np.float16).astype(np.float32)
    step = np.where(sc == 0, 1e-12, d[:, None] * sc)
    q = np.clip(np.round(sub / step[:, :, None]), -32, 31).astype(np.int16) + 32
    q = q.astype(np.uint8).reshape(n, 256)
    ql = np.zeros((n, 128), np.uint8)
    qh = np.zeros((n, 64), np.uint8)
    for h in range(2):
        b = 128 * h
        q1, q2 = q[:, b : b + 32], q[:, b + 32 : b + 64]
        q3, q4 = q[:, b + 64 : b + 96], q[:, b + 96 : b + 128]
        ql[:, 64 * h : 64 * h + 32] = (q1 & 0xF) | ((q3 & 0xF) << 4)
        ql[:, 64 * h + 32 : 64 * h + 64] = (q2 & 0xF) | ((q4 & 0xF) << 4)
        qh[:, 32 * h : 32 * h + 32] = (
            (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)
        )
    return np.concatenate([ql, qh, sc.view(np.uint8), _half(d).reshape(n, 2)], axis=1)
