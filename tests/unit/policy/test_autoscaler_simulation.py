"""Closed-loop simulations: reaction to a burst, and no flapping under noisy steady load."""

from __future__ import annotations

import random

import pytest

from jetpool_operator.core.autoscaler import (
    ScalerMemory,
    ScalingObservation,
    ScalingPolicy,
    decide,
)

from .support import at

POLICY = ScalingPolicy(max_replicas=50, target_backlog_per_replica=10)


def simulate(policy: ScalingPolicy, backlogs: list[int], tick: float = 1.0) -> list[int]:
    """Replicas after each 1 s tick, pods becoming ready instantly."""
    memory, current, out = ScalerMemory(), 0, []
    for i, backlog in enumerate(backlogs):
        obs = ScalingObservation(current_replicas=current, ready_replicas=current, backlog=backlog)
        decision = decide(policy, obs, memory, at(i * tick))
        current, memory = decision.replicas, decision.memory
        out.append(current)
    return out


def changes(replicas: list[int]) -> int:
    return sum(1 for a, b in zip([0, *replicas], replicas, strict=False) if a != b)


def noisy(seed: int, level: int, amplitude: float, seconds: int) -> list[int]:
    rng = random.Random(seed)
    return [round(level * (1 + rng.uniform(-amplitude, amplitude))) for _ in range(seconds)]


def test_a_burst_from_zero_reaches_32_replicas_on_the_first_tick() -> None:
    replicas = simulate(POLICY, [0, 0, 320, 320])
    assert replicas == [0, 0, 32, 32]


def test_a_step_limited_burst_grows_as_fast_as_pods_become_ready() -> None:
    policy = ScalingPolicy(max_replicas=50, scale_up_max_step=4, scale_up_max_percent=100)
    replicas = simulate(policy, [320] * 6)
    assert replicas == [4, 8, 16, 32, 32, 32]  # HPA default: 4, 8, 16, 32 every 15 s


@pytest.mark.parametrize("seed", range(20))
def test_noisy_steady_load_changes_replicas_only_a_few_times(seed: int) -> None:
    replicas = simulate(POLICY, noisy(seed, level=100, amplitude=0.2, seconds=600))
    assert changes(replicas) <= 4
    assert max(replicas) <= 12  # never beyond the top of the noise envelope


def test_the_same_noise_makes_a_policy_without_hysteresis_flap() -> None:
    naive = ScalingPolicy(max_replicas=50, tolerance=0, scale_down_delay_seconds=0)
    assert changes(simulate(naive, noisy(0, level=100, amplitude=0.2, seconds=600))) > 100


def test_a_real_drop_in_load_is_followed_after_the_delay() -> None:
    load = noisy(1, 200, 0.1, 120) + noisy(2, 50, 0.1, 120)
    replicas = simulate(POLICY, load)
    assert replicas[119] >= 20
    assert replicas[119 + int(POLICY.scale_down_delay_seconds) + 1] <= 6
