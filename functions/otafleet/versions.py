"""Version order, for downgrade policy and reports (never for deciding whether to update: that is equality).

Rules, in order:
- A leading `v`/`V` is ignored: `v1.6.0` orders like `1.6.0`.
- `git describe` strings `<tag>-<n>-g<hash>[-dirty]` order by tag first, then by the number of
  commits since the tag; a bare tag counts as 0 commits. Tags that are not numeric (`DOOR-7-g14f53a1`)
  order only against the same tag.
- Dotted numbers compare numerically, part by part, missing parts counting as 0: `1.10` > `1.9`,
  `1.2` == `1.2.0`.
- A semver pre-release (`1.0.0-rc.1`) sorts before its release; pre-release identifiers compare
  numerically when both are numbers, else as text, numbers first (semver 2.0 §11). `+build` is ignored.
- Anything else cannot be ordered: `compare` answers None, and callers treat that as "not a downgrade".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_DESCRIBE = re.compile(r"^(?P<tag>.+?)-(?P<n>\d+)-g(?P<hash>[0-9a-fA-F]{4,40})(?:-dirty)?$")
_SEMVER = re.compile(r"^(?P<nums>\d+(?:\.\d+)*)(?:-(?P<pre>[0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


@dataclass(frozen=True)
class ParsedVersion:
    """A version string taken apart for ordering (parse_version)."""

    numbers: tuple[int, ...] | None  # None: a tag with no numeric form, ordered only against itself
    tag: str
    prerelease: tuple[int | str, ...] = ()
    distance: int = 0


def parse(version: str) -> ParsedVersion:
    text = version.strip()
    distance = 0
    described = _DESCRIBE.match(text)
    if described:
        text, distance = described["tag"], int(described["n"])
    bare = text[1:] if text[:1] in ("v", "V") and text[1:2].isdigit() else text
    semver = _SEMVER.match(bare)
    if not semver:
        return ParsedVersion(numbers=None, tag=text, distance=distance)
    numbers = tuple(int(part) for part in semver["nums"].split("."))
    pre: tuple[int | str, ...] = ()
    if semver["pre"]:
        pre = tuple(int(p) if p.isdigit() else p for p in semver["pre"].split("."))
    return ParsedVersion(numbers=numbers, tag=text, prerelease=pre, distance=distance)


def _cmp(a: Any, b: Any) -> int:
    return int(a > b) - int(a < b)


def _cmp_prerelease(a: tuple[int | str, ...], b: tuple[int | str, ...]) -> int:
    if not a or not b:
        return _cmp(not a, not b)  # a release sorts after any of its pre-releases
    for x, y in zip(a, b, strict=False):
        if isinstance(x, int) and isinstance(y, int):
            c = _cmp(x, y)
        elif isinstance(x, int) or isinstance(y, int):
            c = -1 if isinstance(x, int) else 1
        else:
            c = _cmp(x, y)
        if c:
            return c
    return _cmp(len(a), len(b))


def compare(a: str, b: str) -> int | None:
    """-1, 0 or 1 like a < b, a == b, a > b; None when the two cannot be ordered."""
    if a == b:
        return 0
    pa, pb = parse(a), parse(b)
    if pa.numbers is None or pb.numbers is None:
        if pa.tag == pb.tag:
            return _cmp(pa.distance, pb.distance) or None
        return None
    width = max(len(pa.numbers), len(pb.numbers))
    na = pa.numbers + (0,) * (width - len(pa.numbers))
    nb = pb.numbers + (0,) * (width - len(pb.numbers))
    return _cmp(na, nb) or _cmp_prerelease(pa.prerelease, pb.prerelease) or _cmp(pa.distance, pb.distance)


def is_downgrade(current: str | None, target: str) -> bool:
    """True only when `target` is known to be older than `current`."""
    return current is not None and compare(target, current) == -1
