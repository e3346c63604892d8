"""DynamoDB and S3 adapters: the only modules that talk to boto3."""

from otafleet.storage.errors import Conflict, StorageUnavailable

__all__ = ["Conflict", "StorageUnavailable"]
