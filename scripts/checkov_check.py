"""checkov on the offline-translated SAM template, run by `make test`.

The template is translated to plain CloudFormation by scripts/template_check.py (as CloudFormation's
transform would do it), so checkov sees the roles, permissions and stage that SAM generates. The check
passes when checkov reports no failed check and no parsing error, and every check the template suppresses
(`Metadata: checkov: skip: [{id, comment}]` on the resource) comes with a written reason.

Offline: no Bridgecrew/Prisma download (`--skip-download`, `BC_SKIP_MAPPING`), no PyPI version check
(`CKV_SKIP_PACKAGE_UPDATE_CHECK`), no API key passed on. checkov lives in its own tool environment
(`uv tool install checkov==…`, linked as .tools/bin/checkov), since it pins many packages.

Importable: `run_checkov(path)` returns the parsed report, `evaluate(report)` the verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKOV = ROOT / ".tools" / "bin" / "checkov"
DEFAULT_TEMPLATE = ROOT / "template.yaml"
DEFAULT_TRANSLATED = ROOT / "build" / "template.translated.json"
# What checkov records as the comment of a suppression that has none.
_NO_COMMENT = {"", "no comment provided"}
_SCRUBBED_ENV = ("BC_API_KEY", "PRISMA_API_URL", "BC_API_URL", "CKV_API_KEY")


class CheckovError(Exception):
    """checkov could not be run, or its output could not be read."""


@dataclass(frozen=True)
class Check:
    check_id: str
    resource: str
    name: str
    comment: str = ""

    def __str__(self) -> str:
        text = f"{self.check_id} {self.resource}: {self.name}"
        return f"{text} -- {self.comment}" if self.comment else text


@dataclass
class Verdict:
    passed: int = 0
    failed: list[Check] = field(default_factory=list)
    skipped: list[Check] = field(default_factory=list)
    parsing_errors: list[str] = field(default_factory=list)
    version: str = "?"

    @property
    def unexplained(self) -> list[Check]:
        """Suppressions without a written reason."""
        return [c for c in self.skipped if c.comment.strip().lower() in _NO_COMMENT]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.parsing_errors and not self.unexplained


def ensure_translated(template: Path, translated: Path) -> Path:
    """The translated template, (re)made with scripts/template_check.py when missing or older than the
    template."""
    if translated.exists() and translated.stat().st_mtime >= template.stat().st_mtime:
        return translated
    sys.path.insert(0, str(ROOT))
    try:
        from scripts import template_check
    finally:
        sys.path.remove(str(ROOT))
    template_check.write_translated(template_check.translate(template), translated)
    return translated


def checkov_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env.update(
        {
            "BC_SKIP_MAPPING": "TRUE",
            "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true",
            "LOG_LEVEL": "WARNING",
            "NO_COLOR": "1",
        }
    )
    return env


def run_checkov(translated: Path, checkov: Path | str = DEFAULT_CHECKOV, *, timeout: float = 300) -> dict[str, Any]:
    """checkov's JSON report on the translated template (passed, failed and skipped checks)."""
    command = [
        str(checkov),
        "--file",
        str(translated),
        "--framework",
        "cloudformation",
        "--skip-download",
        "--compact",
        "--output",
        "json",
    ]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=checkov_environment(),
            cwd=translated.parent,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CheckovError(f"cannot run {checkov}: {exc}") from exc
    # checkov exits 1 when a check fails; anything else non-zero is its own failure.
    if done.returncode not in (0, 1):
        raise CheckovError(f"{checkov} exited {done.returncode}:\n{done.stderr.strip() or done.stdout.strip()}")
    try:
        report = json.loads(done.stdout)
    except ValueError as exc:
        raise CheckovError(f"checkov printed no JSON report: {exc}\n{done.stdout[:2000]}{done.stderr[:2000]}") from exc
    if isinstance(report, list):  # one report per framework; only cloudformation was asked for
        report = next((r for r in report if r.get("check_type") == "cloudformation"), {})
    if not isinstance(report, dict):
        raise CheckovError(f"unexpected checkov report: {str(report)[:500]}")
    return report


def _check(entry: Mapping[str, Any]) -> Check:
    result = entry.get("check_result")
    comment = result.get("suppress_comment") if isinstance(result, Mapping) else None
    return Check(
        check_id=str(entry.get("check_id", "?")),
        resource=str(entry.get("resource", "?")),
        name=str(entry.get("check_name", "")),
        comment=" ".join(str(comment or entry.get("suppress_comment") or "").split()),
    )


def evaluate(report: Mapping[str, Any]) -> Verdict:
    """The verdict on a checkov JSON report. A report with no results at all (checkov answers an empty
    scan with a bare summary) counts as passing only when it also scanned nothing."""
    summary = report.get("summary") or {}
    results = report.get("results") or {}
    verdict = Verdict(
        passed=int(summary.get("passed", len(results.get("passed_checks") or []))),
        failed=[_check(c) for c in results.get("failed_checks") or []],
        skipped=[_check(c) for c in results.get("skipped_checks") or []],
        parsing_errors=[str(e) for e in results.get("parsing_errors") or []],
        version=str(summary.get("checkov_version", "?")),
    )
    if int(summary.get("parsing_errors", 0) or 0) and not verdict.parsing_errors:
        verdict.parsing_errors.append(f"{summary['parsing_errors']} parsing error(s)")
    if int(summary.get("resource_count", 1) or 0) == 0:
        verdict.parsing_errors.append("checkov found no resources in the translated template")
    return verdict


def render(verdict: Verdict) -> str:
    lines = [
        f"checkov {verdict.version} on the translated template: {verdict.passed} passed, "
        f"{len(verdict.failed)} failed, {len(verdict.skipped)} skipped (suppressed in template.yaml)"
    ]
    lines += [f"  FAILED  {c}" for c in verdict.failed]
    lines += [f"  skipped {c}" for c in verdict.skipped]
    lines += [f"  parsing error: {e}" for e in verdict.parsing_errors]
    lines += [f"  suppression without a reason: {c.check_id} {c.resource}" for c in verdict.unexplained]
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--checkov", default=str(DEFAULT_CHECKOV), help="checkov executable")
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE)
    parser.add_argument("--translated", type=Path, default=DEFAULT_TRANSLATED, help="translated template (JSON)")
    parser.add_argument("--json", action="store_true", help="print checkov's report as JSON instead")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        translated = ensure_translated(args.template.resolve(), args.translated.resolve())
        report = run_checkov(translated, Path(args.checkov).resolve())
    except Exception as exc:
        print(f"checkov check FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    verdict = evaluate(report)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(verdict), file=sys.stdout if verdict.ok else sys.stderr)
    if not verdict.ok:
        print(
            "checkov check FAILED: fix the template, or suppress the check on the resource with a reason",
            file=sys.stderr,
        )
        return 1
    print("checkov check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
