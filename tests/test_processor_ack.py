"""The processor's batch ack through a broker restart: retried while the broker answers no one, then left
to redelivery (the restart test in test_streaming.py meets this only when the timing falls so)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import nats.errors
import pytest

from streaming.processor import ack_batch


class _Message:
    def __init__(self, failures: int):
        self.failures, self.calls = failures, 0
        self.metadata = SimpleNamespace(sequence=SimpleNamespace(stream=42))

    async def ack_sync(self, timeout: float):
        self.calls += 1
        if self.calls <= self.failures:
            raise nats.errors.NoRespondersError
        return self


def test_an_ack_the_restarting_broker_does_not_answer_is_retried_until_confirmed():
    last = _Message(failures=2)
    assert asyncio.run(ack_batch(last, within_s=5.0, retry_s=0.01)) is True
    assert last.calls == 3


def test_an_ack_never_confirmed_is_given_up_after_ack_wait_and_left_to_redelivery(caplog):
    last = _Message(failures=10**6)
    assert asyncio.run(ack_batch(last, within_s=0.05, retry_s=0.01)) is False
    assert 2 <= last.calls < 10**6
    assert "ack of stream seq 42 not confirmed (NoRespondersError); the batch will be redelivered" in caplog.text


def test_a_stopping_processor_does_not_wait_out_the_ack():
    last, stopping = _Message(failures=10**6), asyncio.Event()
    stopping.set()
    assert asyncio.run(ack_batch(last, within_s=60.0, stopping=stopping, retry_s=0.01)) is False
    assert last.calls == 1


def test_a_fault_that_is_not_the_broker_being_away_is_raised_not_retried():
    class _Refused(_Message):
        async def ack_sync(self, timeout: float):
            self.calls += 1
            raise nats.errors.BadSubjectError

    last = _Refused(failures=0)
    with pytest.raises(nats.errors.BadSubjectError):
        asyncio.run(ack_batch(last, within_s=5.0, retry_s=0.01))
    assert last.calls == 1


class _JetStream:
    """``publish_async`` whose acks fail with the given errors, one per publish, then succeed."""

    def __init__(self, errors: list[BaseException]):
        self.errors, self.published = list(errors), []

    async def publish_async(self, subject, payload, stream=None, headers=None):
        self.published.append((subject, stream, headers))
        future = asyncio.get_running_loop().create_future()
        if self.errors:
            future.set_exception(self.errors.pop(0))
        else:
            future.set_result(None)
        return future


def _publish(js: _JetStream, messages, stream=None):
    from streaming.processor import Processor

    asyncio.run(Processor._publish(SimpleNamespace(js=js), messages, stream=stream))


def test_publishes_the_restarting_broker_did_not_acknowledge_are_sent_again_with_their_ids():
    from nats.js.errors import NoStreamResponseError

    js = _JetStream([NoStreamResponseError(), asyncio.TimeoutError()])
    messages = [("deadletter.airport", b"a", {"Nats-Msg-Id": "dead/1"}), ("deadletter.airport", b"b", {"Nats-Msg-Id": "dead/2"})]
    _publish(js, messages, stream="DEADLETTER")
    assert [h["Nats-Msg-Id"] for _, _, h in js.published] == ["dead/1", "dead/2", "dead/1", "dead/2"]
    assert {stream for _, stream, _ in js.published} == {"DEADLETTER"}


def test_a_publish_the_broker_refuses_is_raised_not_retried():
    from nats.js.errors import APIError

    js = _JetStream([APIError(code=400, description="wrong last sequence")])
    with pytest.raises(APIError):
        _publish(js, [("predictions.x", b"p", {"Nats-Msg-Id": "prediction/x"})])
    assert len(js.published) == 1
