"""The daemon's pass driven in-process: a failing model answers INTERNAL, nothing else suffers."""

from __future__ import annotations

import numpy as np
import pytest

import ringbuf
from kernel_abi import ABI_VERSION, PAYLOADS, REQUEST, REQUESTS, ModelId, Status
from shmd import _config
from shmd import _metrics as met
from shmd._codec import encode_payload
from shmd.daemon import Daemon
from shmd.samples import SAMPLES


class _BrokenModel:
    """A runner whose model call fails, as a corrupt interpreter would."""

    version = 1

    def predict(self, batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("interpreter exploded")


def _request(model: ModelId, request_id: int) -> np.ndarray:
    rec = np.zeros(1, REQUESTS[model])
    rec["payload"] = encode_payload(model, SAMPLES[model.name.lower()])
    rec["request_id"] = request_id
    rec["model_id"] = model
    rec["abi_version"] = ABI_VERSION
    rec["payload_len"] = PAYLOADS[model].itemsize
    return rec.view(REQUEST)


def test_failing_model_answers_internal_and_the_pass_goes_on(prefix: str, capfd: pytest.CaptureFixture) -> None:
    # litert: a model called from Python (the compiled backend's run inside the pass).
    argv = ["--prefix", prefix, "--no-http", "--channels", "a,b", "--backend", "litert"]
    daemon = Daemon(_config.load(argv, environ={}))
    try:
        daemon.python_runners[int(ModelId.THREAT)] = _BrokenModel()
        a, b = daemon.channels
        sq_a, sq_b = ringbuf.Producer(a.sq), ringbuf.Producer(b.sq)
        cq_a, cq_b = ringbuf.Consumer(a.cq), ringbuf.Consumer(b.cq)
        sq_a.produce(np.concatenate([_request(ModelId.WORKLOAD, 1), _request(ModelId.THREAT, 2)]))
        sq_b.produce(_request(ModelId.THREAT, 3))
        n = daemon.step(0, 0)
        assert n == 3
        daemon.infer()
        daemon.step(n, 0)  # publishes this pass
        got_a, got_b = cq_a.consume(8), cq_b.consume(8)
        assert [(int(r["request_id"]), int(r["status"])) for r in got_a] == [(1, Status.OK), (2, Status.INTERNAL)]
        assert [(int(r["request_id"]), int(r["status"])) for r in got_b] == [(3, Status.INTERNAL)]
        assert 0 <= got_a[0]["outputs"][0] <= 1
        internal = met.REJECTED + Status.INTERNAL
        assert list(daemon.metrics.channel[:, internal]) == [1, 1]
        logged = capfd.readouterr().err
        assert "event=model_error model=threat error=\"RuntimeError('interpreter exploded')\"" in logged
    finally:
        daemon.close()
