"""Client's compiled round trip: predict, predict_many and predict_records against a live daemon."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

from kernel_abi import ABI_VERSION, PAYLOADS, REQUESTS, RESPONSE, ModelId, Status
from shmd import InvalidFields, _codec, _exchange, _records
from shmd.client import Client, now_ns
from shmd.samples import SAMPLES

from ._daemon import DaemonProcess

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with DaemonProcess(f"cf{os.getpid()}", "--channels", "a") as d:
        yield d


def test_predict_agrees_with_predict_many_for_every_model(daemon: DaemonProcess) -> None:
    with Client("a", daemon.prefix) as c:
        for name, fields in SAMPLES.items():
            one = c.predict(name, fields, no_cache=True)
            many = c.predict_many(name, [fields, fields], no_cache=True)
            assert {k: v for k, v in one.items() if k != "cacheHit"} == {
                k: v for k, v in many[0].items() if k != "cacheHit"
            }, name
            c.predict(name, fields)  # fills the cache (NO_CACHE requests bypass it both ways)
            assert c.predict(name, fields)["cacheHit"], f"{name}: the repeat is answered from the cache"
        assert c.dropped == 0 and c.outstanding == 0


def test_predict_records_answers_in_order_with_per_record_status(daemon: DaemonProcess) -> None:
    mid = ModelId.WORKLOAD
    records = np.zeros(5, REQUESTS[mid])
    records["payload"] = _codec.encode_payloads(mid, [SAMPLES["workload"]] * 5)
    records["payload"]["current_cpu"] = [0.1, 0.2, 7.0, 0.4, 0.5]  # the third is out of range
    with Client("a", daemon.prefix) as c:
        out = c.predict_records("workload", records)
        assert out.dtype == RESPONSE and len(out) == 5
        assert out["status"].tolist() == [Status.OK, Status.OK, Status.INVALID_INPUT, Status.OK, Status.OK]
        assert (np.diff(out["request_id"].astype(np.int64)) == 1).all(), "answers are in submission order"
        assert out["request_id"].tolist() == records["request_id"].tolist(), "ids stamped into the caller's records"
        again = c.predict_records("workload", records)
        assert again["request_id"][0] == out["request_id"][-1] + 1, "every call takes fresh ids"
        assert np.array_equal(again["outputs"][[0, 1, 3, 4]], out["outputs"][[0, 1, 3, 4]])
        with pytest.raises(ValueError, match=r"^records must be a 1-d array of REQUEST records: itemsize=8"):
            c.predict_records("workload", np.zeros(3, np.uint64))
        # A caller's buffer, reused: whatever it held (here every byte 0xff, ids included) is no answer.
        buf = np.frombuffer(b"\xff" * (5 * RESPONSE.itemsize), RESPONSE).copy()
        assert c.predict_records("workload", records, out=buf) is buf
        assert buf["status"].tolist() == out["status"].tolist()
        assert np.array_equal(buf["outputs"][[0, 1, 3, 4]], out["outputs"][[0, 1, 3, 4]])
        assert buf["request_id"][0] == again["request_id"][-1] + 1
        with pytest.raises(ValueError, match=r"^out must be a writeable contiguous RESPONSE array of len\(records\)"):
            c.predict_records("workload", records, out=buf[:4])
        assert c.dropped == 0 and c.outstanding == 0


def test_predict_records_stamps_the_headers_in_compiled_code_for_its_batch_only(daemon: DaemonProcess) -> None:
    """model_id, abi_version and payload_len are written as the records are published (whatever they held),
    into the caller's records when they are writeable and contiguous, and never into a later call's."""
    mid = ModelId.WORKLOAD
    with Client("a", daemon.prefix) as c:
        threat = c.predict("threat", SAMPLES["threat"], no_cache=True)
        records = np.zeros(6, REQUESTS[mid])
        records["payload"] = _codec.encode_payloads(mid, [SAMPLES["workload"]] * 6)
        records[["model_id", "abi_version", "payload_len"]] = (int(ModelId.MEMORY), 0xFFFF, 3)
        out = c.predict_records("workload", records)
        assert out["status"].tolist() == [Status.OK] * 6
        assert records["model_id"].tolist() == [mid] * 6 and records["abi_version"].tolist() == [ABI_VERSION] * 6
        assert records["payload_len"].tolist() == [PAYLOADS[mid].itemsize] * 6
        again = c.predict("threat", SAMPLES["threat"], no_cache=True)
        assert again.keys() == threat.keys() and all(again[k] == threat[k] for k in threat if k != "cacheHit")
        # Records the exchange cannot write (every other row of a bigger array; read-only): sent as a copy.
        wide = np.zeros(12, REQUESTS[mid])
        wide["payload"] = _codec.encode_payloads(mid, [SAMPLES["workload"]] * 12)
        readonly = wide[:6].copy()
        readonly.flags.writeable = False
        for other in (wide[::2], readonly):
            got = c.predict_records("workload", other)
            assert got["status"].tolist() == [Status.OK] * 6
            assert np.array_equal(got["outputs"], out["outputs"])
            assert not other["model_id"].any() and not other["request_id"].any(), "the caller's records are untouched"
        assert c.dropped == 0 and c.outstanding == 0


def test_predict_records_reused_arrays_answer_what_they_hold_now_into_the_out_given(daemon: DaemonProcess) -> None:
    """Arrays reused call after call answer what they hold now, into the out given with each call."""
    mid = ModelId.WORKLOAD
    records = np.zeros(4, REQUESTS[mid])
    records["payload"] = _codec.encode_payloads(mid, [SAMPLES["workload"]] * 4)
    first, second = np.zeros(4, RESPONSE), np.zeros(4, RESPONSE)
    with Client("a", daemon.prefix) as c:
        c.predict_records("workload", records, out=first)
        before = first["outputs"].copy()
        records["payload"]["current_cpu"] = [0.9, 0.05, 0.9, 0.05]  # the same arrays, new contents
        assert c.predict_records("workload", records, out=first) is first
        assert not np.array_equal(first["outputs"], before), "the new payloads must change the answers"
        kept = first.copy()
        assert c.predict_records("workload", records, out=second) is second
        assert np.array_equal(second["outputs"], kept["outputs"]) and np.array_equal(first, kept)
        assert (second["request_id"] > kept["request_id"].max()).all(), "answers of the new call, into the new out"
        assert c.dropped == 0 and c.outstanding == 0


def test_reserve_and_commit_write_records_in_place(daemon: DaemonProcess) -> None:
    """The README's zero-copy example: records filled in the ring itself, answered through reap."""
    payload = _codec.encode_payloads(ModelId.WORKLOAD, [SAMPLES["workload"]] * 3)
    with Client("a", daemon.prefix) as c:
        views = c.reserve(3, "workload")
        assert sum(len(v) for v in views) == 3
        start = 0
        for v in views:
            v["payload"] = payload[start : start + len(v)]
            start += len(v)
        ids = [int(i) for v in views for i in v["request_id"]]
        assert c.commit(views) == 3
        got = []
        while len(got) < 3:
            assert c.wait(5.0) > 0, "no answer"
            got.extend(c.reap())
        assert sorted(int(r["request_id"]) for r in got) == sorted(ids)
        assert all(int(r["status"]) == Status.OK for r in got)


def test_predict_many_answers_each_item_with_its_own_prediction(daemon: DaemonProcess) -> None:
    items = [dict(SAMPLES["workload"], currentCpu=x, agentId=f"agent-{i}") for i, x in enumerate((0.05, 0.5, 0.95))]
    with Client("a", daemon.prefix) as c:
        alone = [c.predict("workload", f, no_cache=True) for f in items]
        together = c.predict_many("workload", items, no_cache=True)
    assert len({a["predictedCpu"] for a in alone}) == 3, "the items must differ for this test to mean anything"
    assert together == alone


def test_a_batch_larger_than_the_rings_answers_every_item_in_order(daemon: DaemonProcess) -> None:
    """Rows get their ids as they are published, ring-full by ring-full (the rings hold 1024)."""
    n = 1100
    items = [dict(SAMPLES["workload"], currentCpu=i / n, agentId=f"agent-{i}") for i in range(n)]
    with Client("a", daemon.prefix) as c:
        together = c.predict_many("workload", items, no_cache=True)
        edges = [0, 1, 511, 1023, 1024, n - 1]
        alone = {i: c.predict("workload", items[i], no_cache=True) for i in edges}
        assert c.dropped == 0 and c.outstanding == 0
    assert len({together[i]["predictedCpu"] for i in edges}) == len(edges), "items must differ to mean anything"
    assert {i: together[i] for i in edges} == alone


def test_an_item_the_packer_refuses_is_named_and_nothing_is_left_behind(daemon: DaemonProcess) -> None:
    """msgspec accepts a lone surrogate, the packer (which hashes it) does not: the general codec names it."""
    bad = 70
    items = [dict(SAMPLES["workload"], currentCpu=i / 100) for i in range(96)]
    items[bad] = dict(items[bad], agentId="agent-\ud800")
    with Client("a", daemon.prefix) as c:
        with pytest.raises(InvalidFields) as raised:
            c.predict_many("workload", items, no_cache=True)
        assert (raised.value.item, raised.value.field) == (bad, "agentId")
        c.predict("workload", SAMPLES["workload"], no_cache=True)
        assert c.dropped == 0 and c.outstanding == 0


def test_exchange_descriptor_refuses_arrays_the_compiled_code_would_misread(daemon: DaemonProcess) -> None:
    """predict's exchange gets addresses, not arrays: describe() checks what numba's unboxing would have."""
    with Client("a", daemon.prefix) as c:
        good = [*c._rings, c._one_row, c._one_resp_row, c._scratch, c._words]
        assert _exchange.describe(*good).shape == (12, 3)
        readonly = c._words.copy()
        readonly.flags.writeable = False
        for k, bad in ((11, c._words.astype(np.int32)), (8, c._scratch[:, ::2]), (11, readonly), (2, c._rings[0])):
            with pytest.raises(TypeError, match=f"exchange array {k}:"):
                _exchange.describe(*good[:k], bad, *good[k + 1 :])
        with pytest.raises(TypeError, match="12 arrays"):
            _exchange.describe(*good[:-1])


def test_predict_between_submit_and_reap_leaves_those_answers_to_reap(daemon: DaemonProcess) -> None:
    """Answers to submit()ted records met while predict() waits are reap()'s, not kept aside forever."""
    with Client("a", daemon.prefix) as c:
        records = _records.build_requests(ModelId.WORKLOAD, [SAMPLES["workload"]] * 3, submit_ns=now_ns())
        records["request_id"] = c.new_ids(3)
        assert c.submit(records) == 3
        assert "predictedCpu" in c.predict("workload", SAMPLES["workload"], no_cache=True)
        got: list[int] = []
        while len(got) < 3:
            assert c.wait(5.0) > 0, f"answers to the submitted records lost: got {got}"
            got += [int(r["request_id"]) for r in c.reap()]
        assert sorted(got) == records["request_id"].tolist()
        assert c.outstanding == 0 and c.dropped == 0 and not c._results


def test_a_batch_waits_by_its_own_learnt_time_not_a_single_calls() -> None:
    """A batch spins until its expected time (per record, learnt from batches) plus the bound; single
    calls keep their window, learnt from single calls only; a client that may not spin never does."""
    spin_max = 50_000
    words = _exchange.new_words(spin_max)
    single = int(_exchange.wait_spin(words, 1, 0, 0))
    assert single == _exchange.spin_window(words) <= spin_max
    _exchange._learn(words, 0, 10**9)  # an empty exchange (attach) teaches nothing
    assert words[_exchange.RECORD_NS] == 0 and words[_exchange.ANSWER_NS] == spin_max // 2
    _exchange._learn(words, 256, 256 * 600)  # a batch of 256 answered in 153.6 µs
    assert words[_exchange.RECORD_NS] == 600 and words[_exchange.ANSWER_NS] == spin_max // 2
    assert int(_exchange.wait_spin(words, 256, 0, 0)) == 256 * 600 + spin_max
    assert int(_exchange.wait_spin(words, 256, 0, 100_000)) == 256 * 600 - 100_000 + spin_max, "what is left of it"
    assert int(_exchange.wait_spin(words, 256, 0, 10**9)) == spin_max, "late: the bound, then sleep"
    assert int(_exchange.wait_spin(words, 1, 0, 0)) == single, "a batch's time does not move a single call's"
    _exchange._learn(words, 256, 10**9)  # one preempted batch moves it by at most (4x - 1x) / 8
    assert words[_exchange.RECORD_NS] == 600 + (4 * 600 - 600) // 8
    _exchange._learn(words, 1, 10_000)
    assert words[_exchange.ANSWER_NS] == spin_max // 2 + (10_000 - spin_max // 2) // 8
    one_cpu = _exchange.new_words(0)
    _exchange._learn(one_cpu, 256, 256 * 600)
    assert int(_exchange.wait_spin(one_cpu, 256, 0, 0)) == 0, "with one CPU, spinning keeps the daemon off it"


def test_predict_records_learns_the_batch_time(daemon: DaemonProcess) -> None:
    mid = ModelId.WORKLOAD
    records = np.zeros(64, REQUESTS[mid])
    records["payload"] = _codec.encode_payloads(mid, [SAMPLES["workload"]] * 64)
    with Client("a", daemon.prefix) as c:
        answer_ns = int(c._words[_exchange.ANSWER_NS])
        c.predict_records("workload", records)
        assert c._words[_exchange.RECORD_NS] > 0
        assert c._words[_exchange.ANSWER_NS] == answer_ns, "a batch's time is not a single call's"
