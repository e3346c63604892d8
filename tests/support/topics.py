"""An SNS topic with an SQS queue subscribed, on moto: what operators' subscription to the alarm topic
receives."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3


@dataclass
class Subscription:
    """An SQS queue subscribed to the topic (SNS's JSON envelope, not raw delivery)."""

    topic_arn: str
    queue_url: str
    sqs: Any

    def received(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while batch := self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages"):
            for message in batch:
                out.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return out


def subscribe(region: str) -> Subscription:
    sns, sqs = boto3.client("sns", region_name=region), boto3.client("sqs", region_name=region)
    topic_arn = sns.create_topic(Name="otafleet-alarms")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="operators")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return Subscription(topic_arn, queue_url, sqs)
