"""AsyncCache semantics, driven by a manual clock and a fixed random source."""

from __future__ import annotations

import asyncio

import pytest

from app.cache import AsyncCache


class FakeClock:
    def __init__(self, start: float = 500.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Loader:
    """Counts calls; returns ``value`` or raises ``error``; optionally waits for ``gate``."""

    def __init__(self, value: object = "v1") -> None:
        self.value = value
        self.error: Exception | None = None
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> object:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.value


def make_cache(clock: FakeClock, **kwargs: object) -> AsyncCache[str, object]:
    options: dict[str, object] = {"ttl": 10.0, "jitter": 0.0, "clock": clock}
    options.update(kwargs)
    return AsyncCache("test", **options)  # type: ignore[arg-type]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_hit_miss_and_ttl() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    load = Loader("v1")

    assert await cache.get("k", load) == "v1"
    clock.advance(9.99)
    assert await cache.get("k", load) == "v1"
    assert load.calls == 1
    assert (cache.stats.hits, cache.stats.misses, cache.stats.loads) == (1, 1, 1)

    clock.advance(0.01)  # exactly at expiry: stale
    load.value = "v2"
    assert cache.peek("k") is None
    assert await cache.get("k", load) == "v2"
    assert load.calls == 2


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.5, 0.999999])
async def test_jitter_only_shortens_and_stays_within_bounds(draw: float) -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=100.0, jitter=0.2, rng=lambda: draw)
    await cache.get("k", Loader())
    lifetime = 100.0 * (1 - 0.2 * draw)
    assert 80.0 < lifetime <= 100.0

    clock.advance(lifetime - 1e-6)
    assert cache.peek("k") == "v1"
    clock.advance(2e-6)
    assert cache.peek("k") is None


def test_jitter_must_be_a_fraction() -> None:
    with pytest.raises(ValueError):
        AsyncCache("bad", ttl=1.0, jitter=1.0)


async def test_lru_eviction_is_counted() -> None:
    clock = FakeClock()
    cache = make_cache(clock, max_entries=2)
    await cache.get("a", Loader("A"))
    await cache.get("b", Loader("B"))
    await cache.get("a", Loader("unused"))  # a is now the most recently used
    await cache.get("c", Loader("C"))

    assert len(cache) == 2
    assert cache.stats.evictions == 1
    assert cache.peek("b") is None
    assert cache.peek("a") == "A"
    assert cache.peek("c") == "C"
    assert cache.max_entries == 2


async def test_concurrent_misses_share_one_load() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    load = Loader("shared")
    load.gate = asyncio.Event()

    waiters = [asyncio.ensure_future(cache.get("k", load)) for _ in range(100)]
    await settle()
    load.gate.set()
    results = await asyncio.gather(*waiters)

    assert results == ["shared"] * 100
    assert load.calls == 1
    assert cache.stats.misses == 100
    assert cache.stats.loads == 1


async def test_errors_are_not_cached() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    load = Loader()
    load.error = RuntimeError("backend down")

    with pytest.raises(RuntimeError):
        await cache.get("k", load)
    assert len(cache) == 0

    load.error = None
    assert await cache.get("k", load) == "v1"
    assert load.calls == 2
    assert cache.stats.load_errors == 1


async def test_stale_value_is_served_within_grace_then_the_error() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=10.0, grace_period=30.0)
    load = Loader("good")
    await cache.get("k", load)

    load.error = RuntimeError("outage")
    clock.advance(10.0 + 29.0)  # expired 29 s ago, within the 30 s grace
    assert await cache.get("k", load) == "good"
    assert cache.stats.stale_served == 1

    clock.advance(1.0)  # grace is over
    with pytest.raises(RuntimeError):
        await cache.get("k", load)
    assert cache.stats.stale_served == 1
    assert cache.stats.load_errors == 2


async def test_no_grace_means_errors_surface_at_once() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=10.0)
    load = Loader("good")
    await cache.get("k", load)
    clock.advance(10.0)
    load.error = RuntimeError("outage")
    with pytest.raises(RuntimeError):
        await cache.get("k", load)


async def test_invalidation_during_a_load_keeps_its_result_out() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    load = Loader("old")
    load.gate = asyncio.Event()

    waiter = asyncio.ensure_future(cache.get("k", load))
    await settle()
    cache.invalidate("k")
    load.gate.set()
    assert await waiter == "old"  # the caller that asked still gets an answer
    assert len(cache) == 0

    load.gate = None
    load.value = "new"
    assert await cache.get("k", load) == "new"
    assert load.calls == 2


async def test_a_get_after_invalidation_starts_a_fresh_load() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    slow = Loader("old")
    slow.gate = asyncio.Event()
    first = asyncio.ensure_future(cache.get("k", slow))
    await settle()

    cache.invalidate("k")
    assert await cache.get("k", Loader("new")) == "new"
    slow.gate.set()
    assert await first == "old"
    assert cache.peek("k") == "new"  # the outdated load did not overwrite it


async def test_callable_ttl_uses_the_loaded_value() -> None:
    clock = FakeClock()
    cache = make_cache(clock)

    def ttl(value: object) -> float:
        assert isinstance(value, dict)
        return float(value["ttl"])

    await cache.get("short", Loader({"ttl": 3}), ttl=ttl)
    await cache.get("never", Loader({"ttl": 0}), ttl=ttl)
    assert cache.peek("never") is None  # zero TTL: not stored at all
    clock.advance(2.9)
    assert cache.peek("short") == {"ttl": 3}
    clock.advance(0.2)
    assert cache.peek("short") is None


async def test_cancelled_waiter_does_not_cancel_the_shared_load() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    load = Loader("value")
    load.gate = asyncio.Event()

    leaving = asyncio.ensure_future(cache.get("k", load))
    staying = asyncio.ensure_future(cache.get("k", load))
    await settle()
    leaving.cancel()
    await settle()
    load.gate.set()

    assert await staying == "value"
    assert leaving.cancelled()
    assert load.calls == 1
    assert cache.peek("k") == "value"


async def test_a_lone_cancelled_waiter_still_lets_the_load_finish() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    load = Loader("value")
    load.gate = asyncio.Event()

    leaving = asyncio.ensure_future(cache.get("k", load))
    await settle()
    leaving.cancel()
    await settle()
    load.gate.set()
    await settle()

    assert cache.peek("k") == "value"
    assert load.calls == 1


async def test_set_invalidate_where_and_clear() -> None:
    clock = FakeClock()
    cache: AsyncCache[tuple[str, str | None], str] = AsyncCache("test", ttl=10.0, clock=clock)
    cache.set(("ref", "1"), "a")
    cache.set(("ref", None), "b")
    cache.set(("other", None), "c")

    assert cache.invalidate_where(lambda key: key[0] == "ref") == 2
    assert len(cache) == 1
    cache.clear()
    assert len(cache) == 0
    assert cache.stats.invalidations == 3


async def test_keys_are_independent() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    load = Loader("x")
    assert [await cache.get(key, load) for key in ["a", "b", "a", "b"]] == ["x"] * 4
    assert load.calls == 2
