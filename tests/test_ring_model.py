"""ringbuf against a reference deque: any interleaving of produce/consume/reserve+commit."""

from __future__ import annotations

import os
import secrets
from collections import deque

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import kernel_abi as abi
from ringbuf import Channel, Consumer, Producer, remove_leftovers


class RingModel(RuleBasedStateMachine):
    """One SQ ring driven from both ends; ``self.model`` holds the request ids in flight."""

    @initialize(log2_capacity=st.integers(1, 4))
    def open(self, log2_capacity: int) -> None:
        self.prefix = f"t{os.getpid()}h{secrets.token_hex(4)}"
        self.channel = Channel.create(self.prefix, "m", sq_capacity=1 << log2_capacity, cq_capacity=2)
        self.capacity = 1 << log2_capacity
        self.prod = Producer(self.channel.sq)
        self.cons = Consumer(self.channel.sq)
        self.model: deque[int] = deque()
        self.next_id = 1

    def _records(self, n: int) -> np.ndarray:
        rec = np.zeros(n, abi.REQUEST)
        rec["request_id"] = np.arange(self.next_id, self.next_id + n)
        rec["payload"][:, 0] = rec["request_id"] % 251  # a payload byte tied to the id
        return rec

    @rule(n=st.integers(0, 20))
    def produce(self, n: int) -> None:
        free = self.capacity - len(self.model)
        accepted = self.prod.produce(self._records(n))
        assert accepted == min(n, free)  # exact "full" answer: never more, never fewer
        self.model.extend(range(self.next_id, self.next_id + accepted))
        self.next_id += accepted

    @rule(n=st.integers(0, 20))
    def reserve_commit(self, n: int) -> None:
        views = self.prod.reserve(n)
        k = sum(len(v) for v in views)
        assert k == min(n, self.capacity - len(self.model))
        assert len(views) <= 2
        rec, start = self._records(k), 0
        for v in views:
            v[:] = rec[start : start + len(v)]  # written in place, straight into the slots
            start += len(v)
        self.prod.commit(k)
        self.model.extend(range(self.next_id, self.next_id + k))
        self.next_id += k

    @rule(m=st.integers(0, 20))
    def consume(self, m: int) -> None:
        got = self.cons.consume(m)
        expected = [self.model.popleft() for _ in range(min(m, len(self.model)))]
        assert list(got["request_id"]) == expected  # FIFO, no loss, no duplicate; empty when empty
        assert list(got["payload"][:, 0]) == [i % 251 for i in expected]

    @rule(m=st.integers(1, 20))
    def peek_then_release_part(self, m: int) -> None:
        out = np.zeros(m, abi.REQUEST)
        n = self.cons.peek(out)
        assert n == min(m, len(self.model))
        assert list(out["request_id"][:n]) == list(self.model)[:n]
        half = n // 2  # releasing part of a peek leaves the rest in place
        self.cons.release(half)
        for _ in range(half):
            self.model.popleft()

    @invariant()
    def counts_agree(self) -> None:
        if not hasattr(self, "model"):
            return
        assert self.cons.ready() == len(self.model)
        assert self.prod.space() + self.cons.ready() == self.capacity
        assert not self.prod.corrupt and not self.cons.corrupt

    def teardown(self) -> None:
        if hasattr(self, "channel"):
            del self.prod, self.cons
            self.channel.close()
            self.channel.unlink()
            assert remove_leftovers(self.prefix) == []


RingModel.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestRingModel = pytest.mark.timeout(120)(RingModel.TestCase)
