"""Routing policies: each policy's order, its spread over many picks, and the
latency average the least-latency policy reads."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from modelbench.gateway.policies import (
    POLICIES,
    TYPICAL_ANSWER_TOKENS,
    LatencyAverage,
    Policy,
    Router,
)


@dataclass
class FakeReplica:
    """A replica with every property the policies read set by hand."""

    id: str
    weight: float = 1.0
    outstanding: int = 0
    available: bool = True
    latency_ms: float | None = None


def ids(replicas: list[FakeReplica]) -> list[str]:
    return [r.id for r in replicas]


def three() -> list[FakeReplica]:
    return [FakeReplica("a"), FakeReplica("b"), FakeReplica("c")]


@pytest.mark.parametrize("policy", POLICIES)
def test_unavailable_replicas_are_never_returned(policy: Policy) -> None:
    router = Router(policy, rng=random.Random(0))
    replicas = [
        FakeReplica("a", available=False),
        FakeReplica("b"),
        FakeReplica("c", available=False),
        FakeReplica("d"),
    ]
    for i in range(20):
        assert sorted(ids(router.order(replicas, key=f"k{i}"))) == ["b", "d"]


@pytest.mark.parametrize("policy", POLICIES)
def test_none_available_gives_an_empty_order(policy: Policy) -> None:
    router = Router(policy)
    assert router.order([FakeReplica("a", available=False)], key="k") == []
    assert router.order([]) == []


def test_unknown_policy_lists_the_policies() -> None:
    with pytest.raises(ValueError) as error:
        Router("fastest")  # type: ignore[arg-type]
    message = str(error.value)
    assert "'fastest'" in message
    for policy in POLICIES:
        assert policy in message


def test_round_robin_rotates_the_whole_order() -> None:
    router = Router("round-robin")
    replicas = three()
    assert ids(router.order(replicas)) == ["a", "b", "c"]
    assert ids(router.order(replicas)) == ["b", "c", "a"]
    assert ids(router.order(replicas)) == ["c", "a", "b"]
    assert ids(router.order(replicas)) == ["a", "b", "c"]


def test_round_robin_cycles_evenly() -> None:
    router = Router("round-robin")
    replicas = three()
    firsts = Counter(router.order(replicas)[0].id for _ in range(30))
    assert firsts == {"a": 10, "b": 10, "c": 10}


def test_least_outstanding_picks_the_idle_one() -> None:
    router = Router("least-outstanding")
    replicas = [FakeReplica("a", outstanding=3), FakeReplica("b"), FakeReplica("c", outstanding=1)]
    for _ in range(5):
        assert ids(router.order(replicas)) == ["b", "c", "a"]


def test_least_outstanding_ties_take_turns() -> None:
    router = Router("least-outstanding")
    replicas = [FakeReplica("a", outstanding=2), FakeReplica("b"), FakeReplica("c")]
    orders = [ids(router.order(replicas)) for _ in range(4)]
    assert [order[0] for order in orders] == ["b", "c", "b", "c"]
    assert all(order[-1] == "a" for order in orders)


def test_least_latency_prefers_unmeasured_then_fastest() -> None:
    router = Router("least-latency")
    replicas = [
        FakeReplica("slow", latency_ms=300.0),
        FakeReplica("fast", latency_ms=100.0),
        FakeReplica("new-busy", outstanding=2),
        FakeReplica("new-idle", outstanding=0),
        FakeReplica("medium", latency_ms=200.0),
    ]
    assert ids(router.order(replicas)) == ["new-idle", "new-busy", "fast", "medium", "slow"]


def test_least_latency_breaks_equal_latency_by_outstanding() -> None:
    router = Router("least-latency")
    replicas = [
        FakeReplica("a", latency_ms=100.0, outstanding=4),
        FakeReplica("b", latency_ms=100.0, outstanding=1),
        FakeReplica("c", latency_ms=90.0, outstanding=9),
    ]
    assert ids(router.order(replicas)) == ["c", "b", "a"]


def test_weighted_first_pick_follows_the_weights() -> None:
    router = Router("weighted", rng=random.Random(1234))
    replicas = [FakeReplica("heavy", weight=9.0), FakeReplica("light", weight=1.0)]
    firsts = Counter(router.order(replicas)[0].id for _ in range(10_000))
    assert firsts["heavy"] / 10_000 == pytest.approx(0.9, abs=0.02)
    assert firsts["light"] / 10_000 == pytest.approx(0.1, abs=0.02)


def test_weighted_rest_by_weight_and_zero_never_first() -> None:
    router = Router("weighted", rng=random.Random(7))
    replicas = [
        FakeReplica("zero", weight=0.0),
        FakeReplica("small", weight=1.0),
        FakeReplica("big", weight=5.0),
    ]
    seen_first = set()
    for _ in range(1_000):
        order = ids(router.order(replicas))
        seen_first.add(order[0])
        assert order[-1] == "zero"
        assert len(order) == 3
        if order[0] == "big":
            assert order == ["big", "small", "zero"]
        else:
            assert order == ["small", "big", "zero"]
    assert seen_first == {"big", "small"}


def test_weighted_all_zero_still_returns_candidates() -> None:
    router = Router("weighted")
    replicas = [FakeReplica("a", weight=0.0), FakeReplica("b", weight=0.0)]
    assert ids(router.order(replicas)) == ["a", "b"]


def test_pinned_keeps_the_declared_order() -> None:
    router = Router("pinned")
    replicas = three()
    for _ in range(3):
        assert ids(router.order(replicas)) == ["a", "b", "c"]


def test_pinned_skips_an_unavailable_first_replica() -> None:
    router = Router("pinned")
    replicas = [FakeReplica("a", available=False), FakeReplica("b"), FakeReplica("c")]
    assert ids(router.order(replicas)) == ["b", "c"]


def first_choices(router: Router, replicas: list[FakeReplica], keys: list[str]) -> dict[str, str]:
    return {key: router.order(replicas, key=key)[0].id for key in keys}


KEYS = [f"session-{i}" for i in range(1_000)]


def test_affinity_same_key_same_replica() -> None:
    replicas = three()
    first = first_choices(Router("affinity"), replicas, KEYS)
    # A second router (another gateway process) agrees: the hash is stable, not hash().
    again = first_choices(Router("affinity"), replicas, KEYS)
    assert first == again
    # Load on the replicas does not move a key.
    replicas[0].outstanding = 50
    assert first_choices(Router("affinity"), replicas, KEYS) == first


def test_affinity_spreads_keys() -> None:
    counts = Counter(first_choices(Router("affinity"), three(), KEYS).values())
    assert set(counts) == {"a", "b", "c"}
    assert all(count >= 200 for count in counts.values()), counts


def test_affinity_moves_only_the_keys_of_a_replica_that_goes_away() -> None:
    router = Router("affinity")
    replicas = three()
    before = first_choices(router, replicas, KEYS)
    replicas[1].available = False
    after = first_choices(router, replicas, KEYS)
    moved = {key for key in KEYS if before[key] != after[key]}
    assert moved == {key for key in KEYS if before[key] == "b"}
    assert moved  # b had keys to lose
    assert "b" not in after.values()
    # When b comes back, its keys return to it.
    replicas[1].available = True
    assert first_choices(router, replicas, KEYS) == before


def test_affinity_failover_order_is_where_the_key_would_go_next() -> None:
    router = Router("affinity")
    replicas = three()
    for key in KEYS[:100]:
        order = ids(router.order(replicas, key=key))
        assert sorted(order) == ["a", "b", "c"]
        without_first = [r for r in replicas if r.id != order[0]]
        assert ids(router.order(without_first, key=key)) == order[1:]


def test_affinity_without_key_is_least_outstanding() -> None:
    router = Router("affinity")
    replicas = [FakeReplica("a", outstanding=2), FakeReplica("b", outstanding=1), FakeReplica("c")]
    assert ids(router.order(replicas)) == ["c", "b", "a"]


def test_latency_average_is_none_until_observed() -> None:
    average = LatencyAverage()
    assert (average.ttft_ms, average.tpot_ms, average.score_ms) == (None, None, None)


def test_latency_average_math() -> None:
    average = LatencyAverage(alpha=0.25)
    average.observe(ttft_ms=100.0, tpot_ms=10.0, num_tokens=50)
    # The first observation is taken as is.
    assert average.ttft_ms == 100.0
    assert average.tpot_ms == 10.0
    assert average.score_ms == 100.0 + 10.0 * TYPICAL_ANSWER_TOKENS
    average.observe(ttft_ms=200.0, tpot_ms=30.0, num_tokens=50)
    # 100 + 0.25 * (200 - 100) = 125; 10 + 0.25 * (30 - 10) = 15.
    assert average.ttft_ms == pytest.approx(125.0)
    assert average.tpot_ms == pytest.approx(15.0)
    assert average.score_ms == pytest.approx(125.0 + 15.0 * 16)
    average.observe(ttft_ms=25.0, tpot_ms=None, num_tokens=1)
    # 125 + 0.25 * (25 - 125) = 100; no per-token time from a one-token answer.
    assert average.ttft_ms == pytest.approx(100.0)
    assert average.tpot_ms == pytest.approx(15.0)
    assert average.score_ms == pytest.approx(100.0 + 240.0)


def test_latency_average_ignores_per_token_time_below_two_tokens() -> None:
    average = LatencyAverage()
    average.observe(ttft_ms=80.0, tpot_ms=5.0, num_tokens=1)
    assert average.tpot_ms is None
    assert average.score_ms == 80.0


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5])
def test_latency_average_alpha_must_be_a_fraction(alpha: float) -> None:
    with pytest.raises(ValueError, match=rf"alpha must be in \(0, 1\], got {alpha}"):
        LatencyAverage(alpha=alpha)


def test_latency_average_rejects_negative_times() -> None:
    with pytest.raises(ValueError, match="ttft_ms must be >= 0, got -1.0"):
        LatencyAverage().observe(ttft_ms=-1.0, tpot_ms=None, num_tokens=0)
    with pytest.raises(ValueError, match="tpot_ms must be >= 0, got -2.0"):
        LatencyAverage().observe(ttft_ms=1.0, tpot_ms=-2.0, num_tokens=3)


def test_policies_are_the_documented_names() -> None:
    assert POLICIES == (
        "round-robin",
        "least-outstanding",
        "least-latency",
        "weighted",
        "pinned",
        "affinity",
    )


def test_least_latency_unmeasured_replicas_take_turns() -> None:
    router = Router("least-latency")
    replicas = [FakeReplica("measured", latency_ms=50.0), FakeReplica("x"), FakeReplica("y")]
    orders = [ids(router.order(replicas)) for _ in range(4)]
    assert [order[0] for order in orders] == ["x", "y", "x", "y"]
    assert all(order[-1] == "measured" for order in orders)
