"""Turning a decision into the exact HTTP answer the stock clients understand (esp-http-update.md §2).

No I/O here: the caller fetches what an offer needs (a presigned URL, or the image's bytes) and hands
it over as a Payload.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from otafleet.decision import Decision, Outcome
from otafleet.models import Release

NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True)
class Answer:
    """An HTTP answer as the handler returns it: status, body bytes, headers."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def text(status: int, message: str, reason: str | None = None) -> Answer:
    headers = {"Content-Type": "text/plain; charset=utf-8", **NO_STORE}
    if reason:
        headers["X-Otafleet-Reason"] = reason
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="otafleet", charset="UTF-8"'
    return Answer(status, (message + "\n").encode(), headers)


def not_modified(reason: str) -> Answer:
    # 304 is the only portable "nothing to do"; it never carries a body.
    return Answer(304, b"", {"X-Otafleet-Reason": reason, **NO_STORE})


def redirect(url: str) -> Answer:
    # 302 is followed by both clients (308 never is); the body stays empty.
    return Answer(302, b"", {"Location": url, **NO_STORE})


def image(release: Release, body: bytes) -> Answer:
    return Answer(
        200,
        body,
        {
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{release.product}-{release.version}.bin"',
            # The client compares this with the MD5 of what it received: lower-case, of the exact body.
            # (BlobStore.read_release has checked the body against the release's MD5 already.)
            "x-MD5": release.md5,
            "x-version": release.version,
            **NO_STORE,
        },
    )


def probe(release: Release) -> Answer:
    return Answer(200, b"", {"x-version": release.version, "x-MD5": release.md5, **NO_STORE})


@dataclass(frozen=True)
class Payload:
    """What an offer hands over: a presigned URL to redirect to, or the verified image bytes."""

    url: str | None = None
    body: bytes | None = None


def offered(release: Release, payload: Payload) -> Answer:
    if payload.url is not None:
        return redirect(payload.url)
    assert payload.body is not None
    return image(release, payload.body)


def answer_for(decision: Decision, payload: Payload | None = None) -> Answer:
    if decision.outcome is Outcome.OFFER:
        assert decision.release is not None and payload is not None
        return offered(decision.release, payload)
    if decision.outcome is Outcome.PROBE:
        assert decision.release is not None
        return probe(decision.release)
    if decision.outcome is Outcome.NO_UPDATE:
        return not_modified(decision.reason)
    return text(decision.status, decision.detail, decision.reason)
