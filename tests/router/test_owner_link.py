"""The front ↔ queue owner link's pieces on their own: frames, coalescing, metrics merge."""

from __future__ import annotations

import asyncio

from embedserve.router.metrics import Metrics, merge, snapshot
from embedserve.router.owner_link import Abort, FramedLink, Message, Release, encode_frame


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)


def _link() -> tuple[FramedLink, list[list[Message]]]:
    received: list[list[Message]] = []
    return FramedLink(received.append, lambda exc: None), received


def test_frames_split_and_joined_anyhow_arrive_whole_and_in_order() -> None:
    link, received = _link()
    stream = encode_frame([Abort(1), Release(2)]) + encode_frame([Abort(3)])
    for cut in range(len(stream) + 1):  # every split point, including inside the length
        received.clear()
        link.data_received(stream[:cut])
        link.data_received(stream[cut:])
        assert received == [[Abort(1), Release(2)], [Abort(3)]]


def test_messages_sent_in_one_iteration_go_out_as_one_frame() -> None:
    async def scenario() -> list[bytes]:
        link, _ = _link()
        transport = _Transport()
        link.connection_made(transport)  # type: ignore[arg-type]
        for call_id in range(5):
            link.send(Abort(call_id))
        await asyncio.sleep(0)
        link.send(Abort(99))
        await asyncio.sleep(0)
        return transport.writes

    writes = asyncio.run(scenario())
    assert writes == [encode_frame([Abort(i) for i in range(5)]), encode_frame([Abort(99)])]


def test_merged_snapshots_add_up_counters_histograms_and_gauges() -> None:
    front_a, front_b, owner = Metrics(512), Metrics(512), Metrics(512)
    front_a.request_count.inc(method="single")
    front_b.request_count.inc(2, method="single")
    front_b.request_count.inc(method="batch")
    front_a.request_input_length.observe(7)
    front_b.request_input_length.observe(300)
    owner.queue_size.set(4)
    owner.batch_next_size.observe(3)
    total = Metrics(512)
    for part in (snapshot(front_a), snapshot(front_b), snapshot(owner)):
        merge(total, part)
    assert total.request_count.value(method="single") == 3
    assert total.request_count.value(method="batch") == 1
    assert total.request_input_length.observations == 2 and total.request_input_length.maximum == 300
    assert total.queue_size.current == 4
    assert total.batch_next_size.observations == 1
    assert total.render().count("te_request_count{") == 2
