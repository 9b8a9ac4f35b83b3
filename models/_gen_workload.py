"""Synthetic workload: per-agent hourly cpu/memory/gpu series, windows of 10 + now -> next.

Each agent has a daily profile (a smooth sine peak or office hours), a weekend factor,
a slow trend, bursts lasting 1-4 hours, persistent AR(1) noise plus white sampling noise,
and a memory level from 64 MB to 16 GB with its own daily swing and optional leak; 60%
of agents have a GPU whose load follows the cpu profile and its bursts. Agents are drawn per call, so the train and
held-out splits (different seeds) share no agent.
"""

from __future__ import annotations

import numpy as np

from kernel_abi import WORKLOAD_PAYLOAD

_HOURS = 24 * 21  # three weeks per agent


def _profile(rng: np.random.Generator, n_agents: int, hour: np.ndarray) -> np.ndarray:
    peak = rng.uniform(8, 20, (n_agents, 1))
    peak[rng.random(n_agents) < 0.2] += 12  # night-batch agents
    sine = 0.5 * (1 + np.cos(2 * np.pi * (hour - peak) / 24))
    # Office hours start and end on the hour most agents share, as real schedules do.
    start = rng.choice([8, 9, 9, 9, 10], (n_agents, 1))
    end = start + rng.choice([8, 9], (n_agents, 1))
    office = 1 / (1 + np.exp(-3 * (hour - start))) / (1 + np.exp(-3 * (end - hour)))
    return np.where(rng.random((n_agents, 1)) < 0.5, sine, office)


def _ar1(rng: np.random.Generator, shape: tuple[int, int], sigma: np.ndarray) -> np.ndarray:
    eps = rng.normal(0, 1, shape) * sigma
    out = np.empty(shape)
    out[:, 0] = eps[:, 0]
    for t in range(1, shape[1]):
        out[:, t] = 0.6 * out[:, t - 1] + eps[:, t]
    return out


def _white(rng: np.random.Generator, n_agents: int, max_sigma: float) -> np.ndarray:
    # Sampling noise: does not persist, so a smoother beats the last value.
    return rng.normal(0, 1, (n_agents, _HOURS)) * rng.uniform(0.2 * max_sigma, max_sigma, (n_agents, 1))


def _bursts(rng: np.random.Generator, n_agents: int) -> np.ndarray:
    sig = np.zeros((n_agents, _HOURS))
    rate = rng.uniform(0.005, 0.05, n_agents)
    for a in range(n_agents):
        for t0 in np.flatnonzero(rng.random(_HOURS) < rate[a]):
            sig[a, t0 : t0 + rng.integers(1, 5)] += rng.uniform(0.1, 0.4)
    return sig


def generate(n: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``n`` payload records and labels next_cpu, next_memory (bytes), next_gpu."""
    rng = np.random.default_rng(seed)
    n_agents = max(20, n // 80)
    t = np.arange(_HOURS)[None, :] + rng.integers(0, 168, (n_agents, 1))
    hour, day = t % 24, (t // 24) % 7
    weekend = day >= 5
    prof = _profile(rng, n_agents, hour)
    wf = np.where(weekend, rng.uniform(0.1, 1.0, (n_agents, 1)), 1.0)
    bursts = _bursts(rng, n_agents)
    steps = np.arange(_HOURS)[None, :]

    cpu = (
        rng.uniform(0.03, 0.4, (n_agents, 1))
        + rng.uniform(0.1, 0.6, (n_agents, 1)) * prof * wf
        + rng.normal(0, 0.0004, (n_agents, 1)) * steps
        + bursts
        + _ar1(rng, (n_agents, _HOURS), rng.uniform(0.005, 0.02, (n_agents, 1)))
        + _white(rng, n_agents, 0.04)
    )
    has_gpu = rng.random((n_agents, 1)) < 0.6
    gpu = (
        rng.uniform(0.0, 0.3, (n_agents, 1))
        + rng.uniform(0.0, 0.6, (n_agents, 1)) * prof * wf
        + 0.7 * bursts
        + _ar1(rng, (n_agents, _HOURS), rng.uniform(0.005, 0.02, (n_agents, 1)))
        + _white(rng, n_agents, 0.04)
    ) * has_gpu
    leak = np.where(rng.random((n_agents, 1)) < 0.3, rng.uniform(0, 0.002, (n_agents, 1)), 0.0)
    mem = (
        np.exp(rng.uniform(np.log(2**26), np.log(2**34), (n_agents, 1)))
        * (1 + rng.uniform(0, 0.4, (n_agents, 1)) * prof * wf + leak * steps + 0.5 * bursts)
        * np.exp(
            _ar1(rng, (n_agents, _HOURS), rng.uniform(0.003, 0.01, (n_agents, 1)))
            + _white(rng, n_agents, 0.03)
        )
    )
    cpu, gpu = np.clip(cpu, 0, 1), np.clip(gpu, 0, 1)
    mem = np.round(mem).astype(np.uint64)

    agent = rng.integers(0, n_agents, n)
    pos = rng.integers(10, _HOURS - 1, n)
    win = pos[:, None] + np.arange(-10, 0)[None, :]
    rec = np.zeros(n, WORKLOAD_PAYLOAD)
    rec["agent_hash"] = rng.integers(0, 2**63, n_agents, dtype=np.uint64)[agent]
    rec["historical_cpu"] = cpu[agent[:, None], win]
    rec["historical_memory"] = mem[agent[:, None], win]
    rec["historical_gpu"] = gpu[agent[:, None], win]
    rec["current_cpu"] = cpu[agent, pos]
    rec["current_gpu"] = gpu[agent, pos]
    rec["current_memory"] = mem[agent, pos]
    rec["time_of_day"] = hour[agent, pos]
    rec["day_of_week"] = day[agent, pos]
    labels = {
        "next_cpu": cpu[agent, pos + 1].astype(np.float32),
        "next_memory": mem[agent, pos + 1].astype(np.float64),
        "next_gpu": gpu[agent, pos + 1].astype(np.float32),
    }
    return rec, labels
