"""Storage failures, translated out of botocore so callers need not import it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class StorageUnavailable(Exception):
    """AWS could not serve the request now (throttling, timeouts, service errors): try again later."""


class Conflict(Exception):
    """A conditional write lost: the record changed or already exists. For a transaction, `failed`
    holds the positions of the items whose condition failed."""

    def __init__(self, message: str = "", failed: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.failed = failed


class NotFound(Exception):
    """An object or record that should exist does not."""


_TRANSIENT = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "SlowDown",
    "InternalError",
    "RequestTimeout",
}


@contextmanager
def translated() -> Iterator[None]:
    """Map botocore exceptions onto StorageUnavailable / Conflict / NotFound."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code in ("ConditionalCheckFailedException", "TransactionConflictException"):
            raise Conflict(code) from err
        if code == "TransactionCanceledException":
            reasons = [r.get("Code") or "None" for r in err.response.get("CancellationReasons") or []]
            failed = tuple(i for i, r in enumerate(reasons) if r == "ConditionalCheckFailed")
            # A condition that failed, or another transaction on the same item at the same moment: both
            # mean "the record moved", and deciding again on fresh data is the answer.
            if failed or (reasons and set(reasons) <= {"None", "TransactionConflict"}):
                raise Conflict(code, failed) from err
            raise StorageUnavailable(f"{code}: {', '.join(reasons)}") from err
        if code in ("NoSuchKey", "NoSuchVersion", "404", "ResourceNotFoundException", "NoSuchBucket"):
            raise NotFound(code) from err
        if code in _TRANSIENT or err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500:
            raise StorageUnavailable(code) from err
        raise StorageUnavailable(f"{code}: {err}") from err
    except BotoCoreError as err:
        raise StorageUnavailable(type(err).__name__) from err
