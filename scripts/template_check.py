"""Offline checks of the SAM template, run by `make template-check`.

1. `sam validate --lint` (SAM's own schema checks and cfn-lint on the *SAM* template);
2. translate the template to plain CloudFormation with `samtranslator`, as CloudFormation's
   transform would, and write it to build/template.translated.json;
3. cfn-lint on the translated template. Only this step sees what the transform generates, e.g. the
   bucket -> notification -> function -> bucket circular dependency (E3004) that steps 1 and a plain
   `cfn-lint template.yaml` both pass and CloudFormation rejects at deploy time.

Nothing here talks to AWS or to the network: SAM CLI gets fake credentials, telemetry off and an app
directory whose metadata.json says the weekly version check has just been done.

Importable: `translate(path)` returns the translated template, `lint_translated(doc)` the findings.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE = ROOT / "template.yaml"
DEFAULT_OUTPUT = ROOT / "build" / "template.translated.json"
SAM_APP_DIR = ROOT / ".tools" / "sam-app-dir"
REGION = "us-east-1"
# The transform only needs *some* S3 location for code; nothing reads it.
DUMMY_CODE_URI = "s3://otafleet-template-check/code.zip"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
# SAM CLI's version check runs when metadata.json's lastVersionCheck is older than 7 days.
_VERSION_CHECK_REFRESH_SECONDS = 24 * 3600

_CODE_PROPERTIES = {
    "AWS::Serverless::Function": "CodeUri",
    "AWS::Serverless::LayerVersion": "ContentUri",
}


class TemplateCheckError(Exception):
    """The template could not be read or translated."""


@dataclass(frozen=True)
class Finding:
    rule: str
    message: str
    where: str

    def __str__(self) -> str:
        return f"{self.rule} {self.message} ({self.where})"


# ------------------------------------------------------------------ loading


def load_template(template_path: Path | str = DEFAULT_TEMPLATE) -> dict[str, Any]:
    """The template as a plain dict, as cfn-lint decodes it (short-form intrinsics in their long form),
    the same loader the local stack uses (otafleet_local.template)."""
    from cfnlint.decode import decode

    path = Path(template_path)
    if not path.is_file():
        raise TemplateCheckError(f"cannot read {path}: no such file")
    data, matches = decode(str(path))
    if matches:
        raise TemplateCheckError(f"cannot read {path}: " + "; ".join(str(m.message) for m in matches))
    doc: Any = json.loads(json.dumps(data, default=str))  # plain types, without cfn-lint's line marks
    if not isinstance(doc, dict) or not isinstance(doc.get("Resources"), dict):
        raise TemplateCheckError(f"{path} is not a CloudFormation/SAM template (no Resources)")
    return doc


# ------------------------------------------------------------------ translating


class _NoManagedPolicies:
    """Stands in for samtranslator's ManagedPolicyLoader, which would list IAM policies on AWS."""

    def load(self) -> dict[str, str]:
        return {}


def _with_dummy_code_uris(template: Mapping[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(dict(template))
    resources: dict[str, Any] = doc.get("Resources", {})
    for resource in resources.values():
        prop = _CODE_PROPERTIES.get(resource.get("Type", "")) if isinstance(resource, dict) else None
        if prop is None:
            continue
        props = resource.setdefault("Properties", {})
        value = props.get(prop)
        if value is None or (isinstance(value, str) and not value.startswith("s3://")):
            props[prop] = DUMMY_CODE_URI
    function_globals = doc.get("Globals", {}).get("Function")
    if isinstance(function_globals, dict) and isinstance(function_globals.get("CodeUri"), str):
        function_globals["CodeUri"] = DUMMY_CODE_URI
    return doc


def translate_document(template: Mapping[str, Any]) -> dict[str, Any]:
    """Translate an already-loaded SAM template to CloudFormation, offline."""
    import boto3
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    doc = _with_dummy_code_uris(template)
    # The session only supplies the region (ARN partitions, pseudo parameters); it is never used to call AWS.
    session = boto3.session.Session(region_name=REGION, **_boto_credentials())
    translator = Translator(None, Parser(), boto_session=session)
    policies = _NoManagedPolicies()
    try:
        result: dict[str, Any] = translator.translate(doc, parameter_values={}, get_managed_policy_map=policies.load)
    except InvalidDocumentException as exc:
        causes = "; ".join(str(cause) for cause in exc.causes)
        raise TemplateCheckError(f"SAM transform failed: {causes}") from exc
    finally:
        translator.metrics.publish()  # to its dummy publisher; otherwise it warns at exit
    # Round-trip through JSON: plain types only, as CloudFormation would see them.
    translated: dict[str, Any] = json.loads(json.dumps(result))
    return translated


def translate(template_path: Path | str = DEFAULT_TEMPLATE) -> dict[str, Any]:
    """Load `template_path` and translate it to CloudFormation, offline."""
    return translate_document(load_template(template_path))


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "aws_session_token": FAKE_CREDENTIALS["AWS_SESSION_TOKEN"],
    }


# ------------------------------------------------------------------ linting


def lint_translated(translated: Mapping[str, Any], *, filename: str = "template.translated.json") -> list[Finding]:
    """cfn-lint findings (errors and warnings) on a translated, plain CloudFormation template."""
    from cfnlint.api import lint
    from cfnlint.config import ManualArgs

    text = json.dumps(translated, indent=2)
    matches = lint(text, config=ManualArgs(regions=[REGION]))
    return [Finding(m.rule.id, str(m.message), f"{filename}:{m.linenumber}") for m in matches]


def write_translated(translated: Mapping[str, Any], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(translated, indent=2, sort_keys=False) + "\n", encoding="utf-8")


# ------------------------------------------------------------------ sam validate


def prepare_sam_app_dir(app_dir: Path = SAM_APP_DIR) -> Path:
    """An app dir whose metadata.json makes SAM CLI skip its weekly version check (a PyPI request).

    SAM CLI reads `lastVersionCheck` as a float epoch (an int is ignored and triggers the check) and
    checks again once it is older than 7 days; keep an installation id so it never writes one.
    """
    app_dir.mkdir(parents=True, exist_ok=True)
    path = app_dir / "metadata.json"
    data: dict[str, Any] = {}
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            data = loaded
    except (OSError, ValueError):
        pass
    now = time.time()
    last = data.get("lastVersionCheck")
    stale = not isinstance(last, float) or not (now - _VERSION_CHECK_REFRESH_SECONDS < last <= now + 60)
    if stale or not isinstance(data.get("installationId"), str) or data.get("telemetryEnabled") is not False:
        data.setdefault("installationId", str(uuid.uuid4()))
        data["telemetryEnabled"] = False
        data["lastVersionCheck"] = float(now)
        path.write_text(json.dumps(data, indent=4) + "\n", encoding="utf-8")
    return app_dir


def sam_environment(app_dir: Path = SAM_APP_DIR) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE")}
    env.update(FAKE_CREDENTIALS)
    env.update(
        {
            "SAM_CLI_TELEMETRY": "0",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "__SAM_CLI_APP_DIR": str(prepare_sam_app_dir(app_dir)),
        }
    )
    return env


def sam_validate(sam: Path | str, template_path: Path) -> tuple[bool, str]:
    """Run `sam validate --lint`; (passed, combined output)."""
    cmd = [str(sam), "validate", "--lint", "--template-file", str(template_path), "--region", REGION]
    try:
        proc = subprocess.run(
            cmd,
            cwd=template_path.parent,
            env=sam_environment(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"cannot run {sam}: {exc}"
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


# ------------------------------------------------------------------ CLI


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sam", help="SAM CLI executable; without it `sam validate --lint` is skipped")
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the translation")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    template: Path = args.template.resolve()
    failed = False

    if args.sam:
        ok, output = sam_validate(args.sam, template)
        if ok:
            print(f"sam validate --lint: ok ({template.name})")
        else:
            failed = True
            print(f"sam validate --lint FAILED for {template}:\n{output}", file=sys.stderr)
    else:
        print("sam validate --lint: skipped (no --sam given)")

    try:
        translated = translate(template)
    except TemplateCheckError as exc:
        print(f"template check FAILED: {exc}", file=sys.stderr)
        return 1
    output_path: Path = args.output
    write_translated(translated, output_path)
    print(f"translated template: {output_path} ({len(translated.get('Resources', {}))} resources)")

    findings = lint_translated(translated, filename=str(output_path))
    if findings:
        failed = True
        print(f"cfn-lint on the translated template: {len(findings)} finding(s)", file=sys.stderr)
        for finding in findings:
            print(f"  {finding}", file=sys.stderr)
        if any(f.rule == "E3004" for f in findings):
            print(
                "  E3004 is a circular dependency CloudFormation will reject at deploy time. The usual cause:"
                " a function triggered by the bucket refers to the bucket (!Ref/!GetAtt/${FirmwareBucket})."
                " Refer to the bucket by its computed name instead.",
                file=sys.stderr,
            )
    else:
        print("cfn-lint on the translated template: no findings")

    if failed:
        print("template check FAILED", file=sys.stderr)
        return 1
    print("template check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
