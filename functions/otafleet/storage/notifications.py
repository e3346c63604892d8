"""Publishing to the stack's alarm topic (SNS): the only place that talks to SNS.

The client is created at the first publish (storage/clients.py), so a function that never publishes
(every update check but the one whose verdict halts a rollout) never pays for it.
"""

from __future__ import annotations

from collections.abc import Mapping

from otafleet.config import Settings
from otafleet.storage import clients
from otafleet.storage.errors import translated


def publish(settings: Settings, *, subject: str, message: str, attributes: Mapping[str, str]) -> str:
    """Publish one message to `settings.alarm_topic_arn` and return SNS's message id. `attributes` become
    String message attributes (subscription filter policies match on them). Raises StorageUnavailable (or
    NotFound) when SNS refuses or cannot be reached; ValueError when no topic is configured."""
    topic = settings.alarm_topic_arn
    if not topic:
        raise ValueError("no alarm topic configured")
    with translated():
        answer = clients.sns(settings).publish(
            TopicArn=topic,
            Subject=subject,
            Message=message,
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
            },
        )
    return str(answer.get("MessageId", ""))
