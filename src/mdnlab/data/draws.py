"""Counter-based random draws: the noise and shuffles of every model of a stack, for a chunk of
steps, in a fixed number of torch operations whatever the number of models, with the same bits
on every device.

A draw is a function of (key, step, stream, element) alone, the key coming from one model's
(seed, DDP rank, epoch) (``keys``): a model alone and the same model in a stack of any size, a
run and the same run resumed at an epoch, a CPU and a GPU all draw the same words. Written in
torch integer operations rather than with ``torch.Generator``, whose state is sequential (one
generator and one call per model and step) and differs between CPU and CUDA.

Bits: SplitMix64 (Steele, Lea & Flood, OOPSLA 2014; passes TestU01's BigCrush), whose output is
a hash of a counter: word = mix(k + i·γ), mix being Stafford's 64-bit finaliser (variant 13).
Here k is the step key mix(key + (4·step + stream + 1)·γ₂), one per (model, step), and i the
element. Two (model, step) streams of n words overlap only if their step keys fall within n·γ of
each other, about 2n/2⁶⁴ per pair (~10⁻⁵ over a 256-model, 12 000-step run). The 64-bit
products wrap modulo 2⁶⁴ (two's complement), as torch's int64 multiply does on every backend;
tests hold the words to an exact big-integer reference.

Normals: Box–Muller, z = √(−2 ln u)·(cos θ, sin θ), with u = (k + 1)/2²⁴ from bits 40–63 of a
word and θ from bits 8–31: two normals a word, |z| ≤ 5.77. ln, √, cos and sin are computed here
from +, −, × and bit operations alone (series and Newton steps, each to float32 rounding), never
with torch.log, torch.sqrt, torch.cos or a division: IEEE arithmetic rounds those basic
operations identically on every device and in vectorised and scalar loops, where library
functions differ in the last bit (torch.sqrt on the CPU is not correctly rounded) and a GPU
compiler's division is approximate. ``compiled`` turns off the one thing that could still
differ, the fusion of a·b + c into one rounding. So the noise and the shuffles are
bit-identical across devices; the float arithmetic of the networks is not.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

NOISE, SHUFFLE = 0, 1  # streams: what a draw is for, each its own counter space
_STREAMS = 4
_U64 = (1 << 64) - 1


def _signed(value: int) -> int:
    """A 64-bit word as the int64 that holds the same bits."""
    value &= _U64
    return value - (1 << 64) if value >> 63 else value


_GAMMA = _signed(0x9E3779B97F4A7C15)  # SplitMix64's increment (2⁶⁴/φ, odd)
_GAMMA_STEP = _signed(0xD1B54A32D192ED03)  # another odd constant: the step's place in the key
_START = 0x243F6A8885A308D3  # the keys' chain starts here, not at mix(0) = 0
_C1, _C2 = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def mix_reference(x: int) -> int:
    """Stafford's mix13 on a Python integer: the exact reference the tests hold ``_mix`` to."""
    x &= _U64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _U64
    return x ^ (x >> 31)


def _mix(z: Tensor) -> Tensor:
    """mix13 on int64 words: xor-shifts (logical: masked after torch's arithmetic shift) and
    wrapping multiplies."""
    z = (z ^ ((z >> 30) & ((1 << 34) - 1))) * _C1
    z = (z ^ ((z >> 27) & ((1 << 37) - 1))) * _C2
    return z ^ ((z >> 31) & ((1 << 33) - 1))


def keys(seeds: Tensor, ranks: Tensor, epochs: Tensor) -> Tensor:
    """(S,) int64 keys of S models at their epochs: the finaliser chained over seed, DDP rank
    and epoch from a fixed start (π's digits), so nearby seeds and epochs get unrelated keys."""
    x = torch.full_like(seeds, _START, dtype=torch.int64)
    for part in (seeds, ranks, epochs):
        x = _mix(x + part.to(torch.int64) * _GAMMA)
    return x


def key_reference(seed: int, rank: int, epoch: int) -> int:
    """``keys`` for one model, on Python integers (the tests' reference)."""
    x = _START
    for part in (seed, rank, epoch):
        x = mix_reference(x + (int(part) & _U64) * 0x9E3779B97F4A7C15)
    return _signed(x)


def step_keys(keys: Tensor, steps: Tensor, stream: int) -> Tensor:
    """(S, T) keys of S models' ``keys`` at T ``steps`` of a ``stream``."""
    return _mix(keys.view(-1, 1) + (steps.view(1, -1) * _STREAMS + (stream + 1)) * _GAMMA_STEP)


def words(keys: Tensor, steps: Tensor, stream: int, count: int) -> Tensor:
    """(S, T, count) random 64-bit words (int64) for S models' ``keys`` at T ``steps``."""
    return _words_of(step_keys(keys, steps, stream).flatten(), count).view(len(keys), len(steps), count)


def _words_of(row_keys: Tensor, count: int) -> Tensor:
    """(R, count) words: element i of row r is mix(row_keys[r] + (i + 1)·γ)."""
    elements = torch.arange(1, count + 1, dtype=torch.int64, device=row_keys.device) * _GAMMA
    return _mix(row_keys.unsqueeze(1) + elements)


_LN2 = math.log(2.0)
_SQRT2 = math.sqrt(2.0)
_QUARTER_TURN = math.pi / 2


def _reciprocal(d: Tensor) -> Tensor:
    """1/d for d in [1 + √½, 1 + √2): the line through the ends, then three Newton steps
    y ← y(2 − d·y) (relative error 3% → 9·10⁻⁴ → 8·10⁻⁷ → 10⁻¹² before rounding)."""
    y = 1.0014 - 0.2434 * d
    for _ in range(3):
        y = y * (2.0 - d * y)
    return y


def _log_u(k: Tensor) -> Tensor:
    """ln(k·2⁻²⁴) for integers k in [1, 2²⁴] (float32): k = m·2ᵉ with m in [√½, √2), then
    ln m = 2 atanh s = 2s(1 + s²/3 + s⁴/5 + s⁶/7 + s⁸/9), s = (m − 1)/(m + 1), |s| < 0.172."""
    bits = k.to(torch.float32).view(torch.int32)  # k ≤ 2²⁴: exact in float32
    m = ((bits & 0x7FFFFF) | 0x3F800000).view(torch.float32)  # mantissa in [1, 2)
    big = m > _SQRT2
    m = torch.where(big, m * 0.5, m)
    exponent = (bits >> 23) - (127 + 24) + big.to(torch.int32)
    s = (m - 1.0) * _reciprocal(m + 1.0)
    z = s * s
    series = 1.0 + z * (1.0 / 3 + z * (1.0 / 5 + z * (1.0 / 7 + z * (1.0 / 9))))
    return exponent.to(torch.float32) * _LN2 + 2.0 * s * series


def _sqrt(r: Tensor) -> Tensor:
    """√r for r ≥ 0 (float32): 1/√r from the exponent halved in the bits (the "magic number"
    start, within 4%), three Newton steps y ← y(3/2 − r·y²/2) (relative error 4% → 2·10⁻³ →
    5·10⁻⁶ → 4·10⁻¹¹ before rounding), then √r = r·(1/√r)."""
    y = (0x5F3759DF - (r.view(torch.int32) >> 1)).view(torch.float32)
    half = 0.5 * r
    for _ in range(3):
        y = y * (1.5 - half * y * y)
    return torch.where(r > 0, r * y, torch.zeros_like(r))


def _cos_sin(v: Tensor) -> tuple[Tensor, Tensor]:
    """(cos θ, sin θ) for θ = 2π(v + ½)/2²⁴ − π/4, v a 24-bit integer: the top two bits pick
    the quarter turn, the rest an angle φ in [−π/4, π/4) whose sine and cosine are Taylor
    series to φ¹⁰ (error below 2·10⁻⁹), turned by exact swaps and sign flips."""
    quarter = v >> 22
    phi = ((v & 0x3FFFFF).to(torch.float32) * (1.0 / 2**22) + (0.5 / 2**22 - 0.5)) * _QUARTER_TURN
    p = phi * phi
    sin = phi * (1.0 + p * (-1.0 / 6 + p * (1.0 / 120 + p * (-1.0 / 5040 + p * (1.0 / 362880)))))
    cos = 1.0 + p * (-0.5 + p * (1.0 / 24 + p * (-1.0 / 720 + p * (1.0 / 40320 + p * (-1.0 / 3628800)))))
    odd = (quarter & 1).bool()
    x, y = torch.where(odd, sin, cos), torch.where(odd, cos, sin)
    sign_x = 1.0 - 2.0 * ((quarter ^ (quarter >> 1)) & 1).to(torch.float32)
    sign_y = 1.0 - 2.0 * (quarter >> 1).to(torch.float32)
    return sign_x * x, sign_y * y


def normals(keys: Tensor, steps: Tensor, count: int, kernel: Callable | None = None) -> Tensor:
    """(S, T, count) float32 standard normals for S models' ``keys`` at T ``steps`` (the noise
    stream). ``kernel`` is ``normal_pairs`` (the default) or its compiled form (``compiled``)."""
    return normals_of(step_keys(keys, steps, NOISE).flatten(), count, kernel).view(len(keys), len(steps), count)


def normals_of(row_keys: Tensor, count: int, kernel: Callable | None = None) -> Tensor:
    """(R, count) normals, one row per step key: with h = 16⌈count/32⌉ words, normal i < h is
    r·cos θ of word i and normal h + i is r·sin θ of the same word. (h is a multiple of 16
    because Inductor's CPU code for the bit casts below writes past its buffers in a loop's
    tail, corrupting the heap: torch 2.13, any length not a multiple of 8.)"""
    return (kernel or normal_pairs)(row_keys, 16 * math.ceil(count / 32))[:, :count].contiguous()


def normal_pairs(row_keys: Tensor, n_words: int) -> Tensor:
    """(R, 2·n_words) normals: the cosines of n_words words' Box–Muller pairs, then their sines."""
    w = _words_of(row_keys, n_words)
    radius = _sqrt(-2.0 * _log_u(((w >> 40) & 0xFFFFFF) + 1))
    cos, sin = _cos_sin((w >> 8) & 0xFFFFFF)
    return torch.cat([radius * cos, radius * sin], dim=1)


def permutations(keys: Tensor, passes: Tensor, n: int) -> Tensor:
    """(S, P, n) random permutations of range(n), one per model and pass (the shuffle
    stream): a stable argsort of 63-bit random sort keys, uniform up to ties (~n²/2⁶⁴)."""
    return torch.argsort(words(keys, passes, SHUFFLE, n) & ((1 << 63) - 1), dim=2, stable=True)


def compiled(device: torch.device) -> Callable[[Tensor, int], Tensor]:
    """``normal_pairs`` through torch.compile, fused into one kernel (~10× faster on a CPU at
    S = 256) with the same bits: the CPU compiler already keeps a·b + c as two roundings
    (-ffp-contract=off); on a GPU ``emulate_precision_casts`` turns off Triton's fp fusion, which
    would merge them. The first call compiles (seconds; ~30 s with a cold compiler cache)."""
    options = {} if torch.device(device).type == "cpu" else {"emulate_precision_casts": True}
    return torch.compile(normal_pairs, dynamic=False, options=options)
