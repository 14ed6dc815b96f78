"""Routes one session's publish responses through the fast reader, and the rest through asyncua.

asyncua's publish loop awaits `session.publish(acks)` for each response, then calls the callback
registered for the response's subscription id and acknowledges its sequence number. For our own
session only (instance attributes, nothing global in asyncua changes) `FastPublishPath` replaces
both: `publish` tries `decode_data_changes` on the response's bytes and, when that reads it,
returns a minimal PublishResponse whose notification data is the `DataChanges` itself (not
empty, so the loop acknowledges it as usual); the subscription's callback hands those readings
to the driver at once and keeps the Subscription's liveness clock. Every other response
(keep-alives, status changes, shapes the fast reader does not know, a subscription that is not
ours) is decoded by asyncua from the untouched bytes and goes to asyncua's own callback.

If asyncua's internals ever stop matching (the attributes below are not public API), `install`
says so in the log and returns None: the driver then runs on asyncua's path alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asyncua import Client, ua
from asyncua.common.subscription import Subscription
from asyncua.ua.ua_binary import struct_from_binary
from asyncua.ua.uaerrors import UaStructParsingError

from drivers.opcua_publish_decoder import DataChanges, FastReading, decode_data_changes

log = logging.getLogger(__name__)

Deliver = Callable[[list[FastReading]], None]
PublishCallback = Callable[[ua.PublishResult], Awaitable[None] | None]


class FastPublishPath:
    def __init__(self, session: Any, subs: list[Subscription], deliver: Deliver) -> None:
        self._session = session
        self._deliver = deliver
        self._subs = {sub.subscription_id: sub for sub in subs if sub.subscription_id is not None}
        self.fast_responses = 0  # responses read by the fast reader
        self.generic_responses = 0  # responses asyncua decoded

    @classmethod
    def install(cls, client: Client, subs: list[Subscription], deliver: Deliver) -> FastPublishPath | None:
        session = getattr(client.uaclient, "session", None)
        callbacks = getattr(session, "_subscription_callbacks", None)
        if session is None or not isinstance(callbacks, dict) or not hasattr(session, "_send_request"):
            log.warning(
                "opcua: this asyncua's session internals are not the expected ones; publish responses "
                "are decoded by asyncua alone (correct, slower)"
            )
            return None
        path = cls(session, subs, deliver)
        for sub_id, sub in path._subs.items():
            callbacks[sub_id] = path._callback_for(sub)
        session.publish = path.publish
        return path

    async def publish(self, acks: list[ua.SubscriptionAcknowledgement]) -> ua.PublishResponse:
        """UaSession.publish, reading the simple responses the fast way."""
        request = ua.PublishRequest()
        request.Parameters.SubscriptionAcknowledgements = acks if acks else []
        data = await self._session._send_request(request, timeout=0)
        changes = decode_data_changes(bytes(data))
        if changes is None or changes.subscription_id not in self._subs:
            self.generic_responses += 1
            try:
                return struct_from_binary(ua.PublishResponse, data)
            except Exception as ex:
                log.exception("opcua: error parsing a publish response from the server")
                raise UaStructParsingError from ex
        self.fast_responses += 1
        response = ua.PublishResponse()
        response.Parameters.SubscriptionId = changes.subscription_id
        response.Parameters.NotificationMessage.SequenceNumber = changes.sequence_number
        response.Parameters.NotificationMessage.NotificationData = [changes]  # type: ignore[list-item]
        return response

    def _callback_for(self, sub: Subscription) -> PublishCallback:
        generic = sub.publish_callback

        def on_publish(result: ua.PublishResult) -> Awaitable[None] | None:
            data = result.NotificationMessage.NotificationData
            if data and isinstance(data[0], DataChanges):
                changes = data[0]
                sub.last_publish_at = time.monotonic()  # the silent-subscription check reads it
                sub.last_sequence_number = changes.sequence_number
                self._deliver(changes.readings)
                return None
            return generic(result)

        return on_publish
