"""Memory's address searches (bit masks of vector compares) against the scalar loops they replaced."""

from __future__ import annotations

import math

import numpy as np

from kernel_abi import ModelId
from models import encode_batch
from models._data import GENERATORS
from models._encode import M_LINE_DELTA, M_LINE_MAX
from models._encode_rows import ROW_ENCODERS, new_scratch
from models._spec import ADDR_LINE, ADDR_TOL


def _same(x: float, y: float) -> bool:
    return abs(x - y) <= ADDR_TOL


def _searches(h: np.ndarray, cur: float, ty: np.ndarray) -> list[float]:
    """Features 24..33 and 58..61 of one record as the scalar loops computed them (39a1ee7's encoder)."""
    a = [float(v) for v in h] + [float(cur)]
    s = [a[j + 1] - a[j] for j in range(20)]
    c0 = cur + s[19]
    period = next((pp for pp in range(1, 9) if all(_same(s[j], s[j + pp]) for j in range(8, 20 - pp))), 0)
    c1 = cur + s[20 - period] if period > 0 else c0
    occ = next((j for j in range(19, -1, -1) if _same(a[j], cur)), -1)
    c2 = a[occ + 1] if occ >= 0 else c0
    out = [period / 8.0, 1.0 if occ >= 0 else 0.0, (20 - occ) / 20.0 if occ >= 0 else 0.0]
    out += [1.0 if _same(c0, c1) else 0.0, 1.0 if _same(c0, c2) else 0.0, 1.0 if _same(c1, c2) else 0.0]
    out += [sum(_same(s[j], s[j - lag]) for j in range(4, 20)) / 16.0 for lag in range(1, 5)]
    out += [sum(ty[j] == ty[j - lag] for j in range(4, 20)) / 16.0 for lag in range(1, 5)]
    return out


def _near_tolerance_records(n: int, seed: int) -> np.ndarray:
    """Records whose addresses repeat, drift by exactly the tolerance or one ulp beyond it, and whose
    strides repeat with periods 1..9: every search answer and both sides of every comparison."""
    rec = GENERATORS[ModelId.MEMORY](n, seed)[0].copy()
    rng = np.random.default_rng(seed)
    base = np.float32(0.5)
    tol_up, tol_down = np.nextafter(ADDR_TOL, 1.0), np.nextafter(ADDR_TOL, 0.0)
    steps = np.array([0.0, ADDR_TOL, tol_up, tol_down, ADDR_LINE, 2 * ADDR_LINE])
    for i in range(n):
        kind = i % 3
        if kind == 0:  # a periodic stride pattern with small drifts
            period = rng.integers(1, 10)
            pattern = rng.integers(-3, 4, period) * ADDR_LINE
            walk = np.cumsum(np.resize(pattern, 21) + rng.choice(steps, 21) * (rng.random(21) < 0.2))
            seq = (base + walk).astype(np.float32)
        elif kind == 1:  # a few addresses revisited, some one tolerance away
            pool = base + rng.choice(steps, 4)
            seq = rng.choice(pool, 21).astype(np.float32)
        else:  # generated trace, with the current address near an earlier one
            seq = np.append(rec["access_history"][i], rec["access_history"][i, rng.integers(0, 20)])
            seq[20] = np.float32(seq[20] + rng.choice(steps))
        rec["access_history"][i] = seq[:20]
        rec["current_address"][i] = seq[20]
        rec["access_types"][i] = rng.integers(0, 2 if i % 2 else 3, 20)
    return rec


def test_memory_searches_are_the_scalar_loops():
    rec = _near_tolerance_records(600, 3)
    x, err = encode_batch(ModelId.MEMORY, rec)
    assert not err.any()
    rows = np.zeros((len(rec), 70), np.float32)
    row_err = np.zeros(len(rec), np.int32)
    ROW_ENCODERS[ModelId.MEMORY](rec, np.arange(len(rec)), len(rec), rows, row_err, new_scratch(len(rec)))
    assert rows.tobytes() == x.tobytes()
    cols = list(range(24, 34)) + list(range(58, 62))
    periods, visits = set(), 0
    for i in range(len(rec)):
        want = np.array(_searches(rec["access_history"][i], rec["current_address"][i], rec["access_types"][i]),
                        np.float32)  # fmt: skip
        assert x[i, cols].tobytes() == want.tobytes(), (i, x[i, cols], want)
        periods.add(float(want[0]))
        visits += want[1] > 0
    assert len(periods) >= 8 and 100 < visits < len(rec) - 50  # the records exercise every answer


def test_line_distance_table_is_libm_s_log1p_of_every_whole_line_distance():
    """Features 0..23 of whole-line distances come from M_LINE_DELTA in the row encoder: every entry
    must be the definition's float32 (libm's log1p of k lines over log1p(2**16)), for all 0..2**16."""
    k = np.arange(M_LINE_MAX + 1)
    want = np.array([math.log1p(v) / math.log1p(2.0**16) for v in k]).astype(np.float32)
    assert M_LINE_DELTA.dtype == np.float32 and M_LINE_DELTA.tobytes() == want.tobytes()


def test_row_encoder_takes_the_table_on_the_line_grid_and_the_definition_off_it():
    """Generated addresses are on the line grid (whole-line distances: the table); one address off
    it by 2**-24 in one record of the batch, and +-0.0 addresses (distances +0.0 and -0.0, both
    encoded +0.0) in another: every row as the per-record encoder gives it, bit for bit."""
    rec = GENERATORS[ModelId.MEMORY](64, 9)[0].copy()
    addr = np.concatenate([rec["access_history"].ravel(), rec["current_address"]]).astype(np.float64)
    assert (addr / ADDR_LINE == np.round(addr / ADDR_LINE)).all()  # all on the grid: the table's case
    rec["access_history"][7, 5] += np.float32(2.0**-24)
    rec["access_history"][11, 3:6] = [0.0, -0.0, 0.0]
    x, err = encode_batch(ModelId.MEMORY, rec)
    assert not err.any()
    rows = np.zeros((len(rec), 70), np.float32)
    row_err = np.zeros(len(rec), np.int32)
    ROW_ENCODERS[ModelId.MEMORY](rec, np.arange(len(rec)), len(rec), rows, row_err, new_scratch(len(rec)))
    assert not row_err.any()
    assert rows.tobytes() == x.tobytes(), np.argwhere(rows != x)
    assert not np.signbit(x[11, 3:5]).any() and x[11, 3] == 0.0
