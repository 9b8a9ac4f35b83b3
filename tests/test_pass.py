"""``drain``, ``infer_compiled`` and ``finish`` driven on rings of the test's own, without a daemon."""

from __future__ import annotations

import time

import numpy as np
import pytest

import ringbuf
from kernel_abi import ABI_VERSION, PAYLOADS, REQUEST, REQUESTS, RESP_CACHE_HIT, ModelId, Status
from models import N_RAW_OUTPUTS, load_runner, postprocess
from models._data import GENERATORS
from shmd import _loop, _pass
from shmd import _metrics as met
from shmd._cache import CacheArrays
from shmd._metrics import MetricsArrays
from shmd._pass_layout import LOOP_COMPILED_PASSES, PASS_START

N = _loop.N_MODELS


def _requests(mid: ModelId, ids: list[int], seed: int = 0) -> np.ndarray:
    rec = np.zeros(len(ids), REQUESTS[mid])
    rec["payload"] = GENERATORS[mid](len(ids), seed)[0]
    rec["request_id"] = ids
    rec["model_id"] = mid
    rec["abi_version"] = ABI_VERSION
    rec["payload_len"] = PAYLOADS[mid].itemsize
    return rec.view(REQUEST)


class _Pass:
    """Two real channels and the five descriptors of a pass over them."""

    def __init__(self, prefix: str, backend: str, room: int = 16) -> None:
        self.channels = [ringbuf.Channel.create(prefix, name, sq_capacity=16) for name in ("a", "b")]
        self.table = ringbuf.ChannelTable(self.channels)
        self.rings = _pass.rings_of(self.table)
        self.batch = _pass.new_batch(room, 2)
        self.runners = {int(m): load_runner(m, backend=backend) for m in ModelId}
        self.models = _pass.new_models(self.batch, self.runners)
        self.cache = _pass.cache_of(CacheArrays.new(N, 64))  # ttl 0: no model caches
        self.counters = _pass.counters_of(MetricsArrays.new(N, 2))
        self.sq = [ringbuf.Producer(ch.sq) for ch in self.channels]
        self.cq = [ringbuf.Consumer(ch.cq) for ch in self.channels]

    def drain(self) -> int:
        return _loop.drain(self.rings, self.batch, self.models, self.cache, self.counters, 0)

    def finish(self, n: int) -> int:
        return _loop.finish(self.rings, self.batch, self.models, self.cache, self.counters, n)

    def close(self) -> None:
        for ch in self.channels:
            ch.unlink()
            ch.close()


@pytest.fixture
def compiled(prefix):
    p = _Pass(prefix, "compiled")
    yield p
    p.close()


def _expected(mid: ModelId, requests: np.ndarray) -> np.ndarray:
    """API outputs for ``requests`` through LiteRT: what the compiled pass must answer."""
    from models import encode_batch

    x, err = encode_batch(mid, requests.view(REQUESTS[mid])["payload"])
    assert not err.any()
    out = np.zeros((len(x), 4))
    postprocess(int(mid), load_runner(mid).predict(x), out)
    return out


def test_drain_answers_bad_records_and_queues_the_rest_per_model(compiled):
    good_w, good_t = _requests(ModelId.WORKLOAD, [1, 2]), _requests(ModelId.THREAT, [3])
    bad_version = _requests(ModelId.THREAT, [4])
    bad_version["abi_version"] = ABI_VERSION + 1
    unknown = _requests(ModelId.THREAT, [5])
    unknown["model_id"] = 9
    bad_field = _requests(ModelId.FAILURE, [6]).copy()
    bad_field.view(REQUESTS[ModelId.FAILURE])["payload"]["health_score"] = np.nan
    compiled.sq[0].produce(np.concatenate([good_w, bad_version, good_t]))
    compiled.sq[1].produce(np.concatenate([unknown, bad_field]))
    n = compiled.drain()
    b = compiled.batch
    assert n == 6 and list(b.alloc) == [4, 2] and list(b.offsets) == [0, 4, 6]
    assert list(b.counts[1:]) == [2, 1, 0, 0]  # workload 2, threat 1, in staging order
    assert list(b.rows[ModelId.WORKLOAD, :2]) == [0, 1] and b.rows[ModelId.THREAT, 0] == 3
    status = [(int(r["request_id"]), int(r["status"])) for r in b.responses[:n]]
    assert status == [(1, Status.OK), (2, Status.OK), (4, Status.BAD_VERSION), (3, Status.OK),
                      (5, Status.UNKNOWN_MODEL), (6, Status.INVALID_INPUT)]  # fmt: skip
    assert b.responses[5]["error_field"] == 2  # health_score: the failure payload's 2nd field
    assert list(compiled.counters.channel[:, met.REJECTED + Status.INVALID_INPUT]) == [0, 1]
    # Nothing is published or released by a drain.
    assert compiled.cq[0].ready() == 0 and compiled.sq[0].space() == 16 - 4
    assert b.state[PASS_START] == 1  # the next pass starts with the other channel


def test_compiled_pass_answers_like_litert_and_releases_after_publishing(compiled):
    w, t = _requests(ModelId.WORKLOAD, [1, 2, 3], seed=1), _requests(ModelId.THREAT, [4, 5], seed=2)
    m = _requests(ModelId.MEMORY, [6], seed=3)
    compiled.sq[0].produce(np.concatenate([w, t]))
    compiled.sq[1].produce(m)
    n = compiled.drain()
    assert n == 6
    assert _loop.infer_compiled(compiled.batch, compiled.models)  # every model is in the bank
    compiled.finish(n)
    got_a, got_b = compiled.cq[0].consume(8), compiled.cq[1].consume(8)
    assert [int(r["request_id"]) for r in got_a] == [1, 2, 3, 4, 5] and int(got_b[0]["request_id"]) == 6
    assert all(r["status"] == Status.OK for r in (*got_a, *got_b))
    np.testing.assert_allclose(np.stack([r["outputs"] for r in got_a[:3]]), _expected(ModelId.WORKLOAD, w),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(np.stack([r["outputs"] for r in got_a[3:]]), _expected(ModelId.THREAT, t),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(got_b[0]["outputs"], _expected(ModelId.MEMORY, m)[0], rtol=1e-5, atol=1e-5)
    assert compiled.sq[0].space() == 16 and compiled.sq[1].space() == 16  # released
    model = compiled.counters.model
    assert model[ModelId.WORKLOAD, met.INFERENCES] == 3 and model[ModelId.THREAT, met.BATCHES] == 1
    assert list(compiled.counters.channel[:, met.COMPLETED]) == [5, 1]


def test_a_models_rows_are_encoded_together_and_keep_their_features_past_hits_and_bad_rows(compiled):
    """Each model's records are encoded at once after the drain, then invalid ones and cache
    hits are answered and the rest move up: every kept row's features must still be its
    own record's, and a bad record is counted on its own channel (the second here)."""
    w = _requests(ModelId.WORKLOAD, [1, 2, 3, 4, 5], seed=4).copy()
    t = _requests(ModelId.THREAT, [6, 7], seed=5)
    bad = w[1:2].copy()
    bad.view(REQUESTS[ModelId.WORKLOAD])["payload"]["current_gpu"] = np.inf
    compiled.cache.ttl_ns[ModelId.WORKLOAD] = 10**12
    compiled.sq[0].produce(w[2:3])  # record 3 first, alone: cached
    n = compiled.drain()
    _loop.infer_compiled(compiled.batch, compiled.models)
    compiled.finish(n)
    first = compiled.cq[0].consume(1)[0]
    compiled.sq[0].produce(np.concatenate([w[0:1], t[0:1], w[2:3], w[3:4]]))
    compiled.sq[1].produce(np.concatenate([t[1:2], bad, w[4:5]]))
    n = compiled.drain()
    b = compiled.batch
    assert n == 7 and list(b.counts[1:3]) == [3, 2]  # workload 1, 4, 5 (3 hit, 2 bad); threat 6, 7
    assert [int(b.reqs[j]["request_id"]) for j in b.rows[ModelId.WORKLOAD, :3]] == [1, 4, 5]
    from models import encode_batch

    want, _ = encode_batch(ModelId.WORKLOAD, w[[0, 3, 4]].view(REQUESTS[ModelId.WORKLOAD])["payload"])
    got = b.features[ModelId.WORKLOAD, :3, : want.shape[1]]
    assert got.tobytes() == want.tobytes()
    assert list(compiled.counters.channel[:, met.REJECTED + Status.INVALID_INPUT]) == [0, 1]
    assert _loop.infer_compiled(b, compiled.models)
    compiled.finish(n)
    got_a, got_b = compiled.cq[0].consume(8), compiled.cq[1].consume(8)
    by_id = {int(r["request_id"]): r for r in (*got_a, *got_b)}
    assert by_id[3]["flags"] & RESP_CACHE_HIT and list(by_id[3]["outputs"]) == list(first["outputs"])
    assert by_id[2]["status"] == Status.INVALID_INPUT and by_id[2]["error_field"] == 6  # current_gpu
    np.testing.assert_allclose(np.stack([by_id[i]["outputs"] for i in (1, 4, 5)]),
                               _expected(ModelId.WORKLOAD, w[[0, 3, 4]]), rtol=1e-5, atol=1e-5)  # fmt: skip


def test_drain_shares_the_room_between_channels(prefix):
    p = _Pass(prefix, "compiled", room=8)
    try:
        p.sq[0].produce(_requests(ModelId.WORKLOAD, list(range(1, 11))))
        p.sq[1].produce(_requests(ModelId.WORKLOAD, list(range(11, 14))))
        n = p.drain()
        assert n == 8 and list(p.batch.alloc) == [5, 3]  # b's 3 fit; a gets the rest of the room
        p.finish(n)
        assert p.cq[0].ready() == 5 and p.cq[1].ready() == 3 and p.sq[0].space() == 16 - 5
    finally:
        p.close()


def test_each_channels_run_of_records_sheds_at_its_own_level_and_every_record_is_decided(prefix):
    """``_admit`` decides a channel's records in one run: the shedding level is that channel's
    (the higher-priority one tolerates twice the queueing), and a record answered mid-run
    (a deadline, a bad version) does not end the run for the records behind it."""
    p = _Pass(prefix, "compiled")
    try:
        max_queue = 10 * 10**9  # low level sheds after 10 s queued, the high one after 20 s
        # room 32: the lower level may take room / LOWER_SHARE a pass, and must get all 3 of its records
        p.batch = _pass.new_batch(32, 2, max_queue_ns=max_queue, priorities=[0, 1])
        p.models = _pass.new_models(p.batch, p.runners)
        now = time.monotonic_ns()  # CLOCK_MONOTONIC, the pass's clock
        queued = _requests(ModelId.THREAT, [1, 2, 3, 4, 5, 6]).copy()
        queued["submit_ns"] = now - 15 * 10**9  # 1.5x the low level's bound: sheds on a only
        queued["deadline_ns"][1] = 1  # long past
        queued["abi_version"][4] = ABI_VERSION + 1
        p.sq[0].produce(queued[:3])
        p.sq[1].produce(queued[3:])
        n = p.drain()
        assert n == 6 and list(p.batch.offsets) == [0, 3, 6]
        status = {int(r["request_id"]): int(r["status"]) for r in p.batch.responses[:n]}
        assert status == {1: Status.OVERLOADED, 2: Status.DEADLINE_EXCEEDED, 3: Status.OVERLOADED,
                          4: Status.OK, 5: Status.BAD_VERSION, 6: Status.OK}  # fmt: skip
        assert p.batch.counts[ModelId.THREAT] == 2
        assert [int(p.batch.reqs[j]["request_id"]) for j in p.batch.rows[ModelId.THREAT, :2]] == [4, 6]
        assert list(p.counters.channel[:, met.REJECTED + Status.OVERLOADED]) == [2, 0]
        assert list(p.counters.channel[:, met.REJECTED + Status.BAD_VERSION]) == [0, 1]
    finally:
        p.close()


def test_step_runs_the_bank_inside_and_leaves_other_backends_to_python(prefix):
    for backend, inside in (("compiled", True), ("litert", False)):
        p = _Pass(f"{prefix}{backend[0]}", backend)
        try:
            p.sq[0].produce(_requests(ModelId.FAILURE, [1, 2]))
            _pass.set_wait(p.batch, 0, 0)
            n = _loop.step(p.rings, p.batch, p.models, p.cache, p.counters, 0)
            if inside:  # drained, run and published in one call: nothing left for Python
                assert n == 0 and p.cq[0].ready() == 2 and p.counters.loop[LOOP_COMPILED_PASSES] == 1
            else:
                assert n == 2 and p.cq[0].ready() == 0  # waits for Python's model call
                cnt = p.batch.counts[ModelId.FAILURE]
                raw = p.runners[ModelId.FAILURE].predict(p.batch.features[ModelId.FAILURE, :cnt, :39])
                p.batch.raw[ModelId.FAILURE, :cnt, : N_RAW_OUTPUTS[ModelId.FAILURE]] = raw
                assert _loop.step(p.rings, p.batch, p.models, p.cache, p.counters, n) == 0
                assert p.cq[0].ready() == 2
        finally:
            p.close()


def test_daemon_with_the_compiled_backend_answers_like_litert(prefix):
    """Real ``shmd serve --backend compiled`` and ``--backend litert``: the same answers, within rounding."""
    from shmd.client import Client
    from shmd.samples import SAMPLES
    from tests._daemon import DaemonProcess

    # The HTTP fuzz's record: valid, gaps of 1.7e308 between timestamps. Its features were NaN
    # and the compiled pass raised ZeroDivisionError: the daemon's loop stopped.
    huge_gaps = {**SAMPLES["memory"], "accessTimestamps": [0.0, 1.7e308] * 10}
    answers = {}
    for backend in ("litert", "compiled"):
        with (
            DaemonProcess(prefix, "--channels", "a", "--backend", backend) as proc,
            Client("a", prefix=prefix, timeout=30) as client,
        ):
            answers[backend] = {
                m.name: client.predict_many(m.name.lower(), [SAMPLES[m.name.lower()]] * 2, no_cache=True)
                for m in ModelId
            }
            answers[backend]["huge_gaps"] = client.predict_many("memory", [huge_gaps], no_cache=True)
            assert client.predict("threat", SAMPLES["threat"])  # still serving
        assert proc.proc.returncode == 0 and f"backend={backend}" in proc.log()
    for name, want in answers["litert"].items():
        for got, ref in zip(answers["compiled"][name], want, strict=True):
            assert got.keys() == ref.keys()
            for key, value in ref.items():
                if isinstance(value, str | bool):  # enums and flags: identical
                    assert got[key] == value, (name, key)
                else:
                    assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-5), (name, key)
