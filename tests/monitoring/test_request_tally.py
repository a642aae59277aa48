"""The gateway's request metrics: tallied per process, written to the series once per flush."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Histogram

from vlarena.gateway.metrics import HTTP_IN_FLIGHT, HTTP_REQUEST_DURATION, HTTP_REQUESTS
from vlarena.gateway.observe import RequestTally, observe_many, request_id

BUCKETS = (0.001, 0.01, 0.1, 1.0)
VALUES = [0.0005, 0.001, 0.002, 0.01, 0.05, 0.1, 0.5, 3.0, 3.0, 0.0]


def _samples(histogram: Histogram) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for metric in histogram.collect()
        for s in metric.samples
    }


def test_a_batch_of_observations_equals_observing_them_one_by_one() -> None:
    one_by_one = Histogram("one", "h", buckets=BUCKETS, registry=CollectorRegistry())
    batched = Histogram("one", "h", buckets=BUCKETS, registry=CollectorRegistry())
    for value in VALUES:
        one_by_one.observe(value)
    observe_many(batched, VALUES)
    assert _samples(batched) == _samples(one_by_one)
    assert _samples(batched)[("one_bucket", "0.001")] == 3  # a value on a bound counts below it


class _Plain:
    """A histogram child without prometheus-client's internals: observed one by one."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def observe(self, value: float) -> None:
        self.values.append(value)


def test_a_histogram_without_the_known_internals_is_observed_value_by_value() -> None:
    plain = _Plain()
    observe_many(plain, VALUES)
    assert plain.values == VALUES


def test_requests_reach_the_series_only_when_the_tally_is_flushed() -> None:
    tally = RequestTally()
    route = "/test/tally/{id}"
    counter = HTTP_REQUESTS.labels(route, "GET", "200")
    timer = HTTP_REQUEST_DURATION.labels(route, "GET")
    before = counter._value.get()
    for _ in range(3):
        tally.record(route, "GET", 200, 0.002)
    tally.in_flight = 2
    assert counter._value.get() == before
    tally.flush()
    assert counter._value.get() == before + 3
    assert timer._sum.get() == 0.006
    assert HTTP_IN_FLIGHT._value.get() == 2
    tally.flush()  # nothing new: nothing added
    assert counter._value.get() == before + 3
    tally.in_flight = 0
    tally.flush()
    assert HTTP_IN_FLIGHT._value.get() == 0


def test_the_flusher_writes_once_more_when_it_stops() -> None:
    tally = RequestTally()
    route = "/test/flusher"
    counter = HTTP_REQUESTS.labels(route, "POST", "202")
    before = counter._value.get()

    async def run() -> None:
        task = asyncio.create_task(tally.flush_every(0.01))
        tally.record(route, "POST", 202, 0.1)
        await asyncio.sleep(0.05)
        assert counter._value.get() == before + 1  # flushed on its period
        tally.record(route, "POST", 202, 0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(run())
    assert counter._value.get() == before + 2


def test_new_request_ids_are_distinct_and_sixteen_hex_digits() -> None:
    ids = {request_id([]) for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)


def test_a_forked_process_draws_its_own_request_id_prefix() -> None:
    import os

    parent = request_id([])
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first new id, then out without running pytest's exit
        os.write(write, request_id([]))
        os._exit(0)
    os.close(write)
    child = os.read(read, 64)
    os.waitpid(pid, 0)
    assert len(child) == 16 and child[:8] != parent[:8]
