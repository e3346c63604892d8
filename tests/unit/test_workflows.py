"""The GitHub Actions workflows users get with the project: what they promise, checked on their YAML.

actionlint (scripts/lint_workflows.sh, in `make test`) checks that they are valid workflows; these tests
check the structure: the PR workflow runs `make test`, deployments authenticate with OIDC and no stored
keys, production waits for staging and for an approval, stack settings come from samconfig.toml.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
CONFIGURE_AWS = "aws-actions/configure-aws-credentials"


def load(name: str) -> dict[str, Any]:
    doc: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    assert isinstance(doc, dict), name
    if True in doc:  # YAML 1.1 reads the key `on` as the boolean true
        doc["on"] = doc.pop(True)
    return doc


def triggers(doc: dict[str, Any]) -> dict[str, Any]:
    on = doc["on"]
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    assert isinstance(on, dict)
    return on


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = job.get("steps", [])
    return found


def uses(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in steps(job) if str(s.get("uses", "")).split("@")[0] == action]


def runs(job: dict[str, Any]) -> str:
    return "\n".join(str(s.get("run", "")) for s in steps(job))


@pytest.fixture(scope="module")
def ci() -> dict[str, Any]:
    return load("ci.yml")


@pytest.fixture(scope="module")
def deploy() -> dict[str, Any]:
    return load("deploy.yml")


@pytest.fixture(scope="module")
def samconfig() -> dict[str, Any]:
    with (ROOT / "samconfig.toml").open("rb") as f:
        return tomllib.load(f)


def all_workflows() -> list[Path]:
    return sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])


def test_the_workflows_exist() -> None:
    assert {p.name for p in all_workflows()} >= {"ci.yml", "deploy.yml"}


# ------------------------------------------------------------------ ci.yml


def test_ci_runs_on_pull_requests_and_pushes(ci: dict[str, Any]) -> None:
    on = triggers(ci)
    assert "pull_request" in on
    assert "push" in on
    assert "workflow_call" in on  # deploy.yml runs the same checks before deploying


def test_ci_runs_make_test_on_ubuntu_with_both_pythons(ci: dict[str, Any]) -> None:
    [job] = ci["jobs"].values()
    assert str(job["runs-on"]).startswith("ubuntu")
    assert re.search(r"^\s*make test\s*$", runs(job), re.MULTILINE)
    [setup] = uses(job, "actions/setup-python")
    versions = str(setup["with"]["python-version"]).split()
    assert "3.11" in versions  # the project's interpreter (the Makefile looks for python3.11)
    assert "3.13" in versions  # the Lambda runtime: `sam build` without a container needs python3.13
    assert versions[-1] == "3.11"  # the last one listed becomes the default python3


def test_ci_needs_no_aws(ci: dict[str, Any]) -> None:
    text = (WORKFLOWS / "ci.yml").read_text(encoding="utf-8")
    assert CONFIGURE_AWS not in text
    assert "id-token" not in text
    assert ci["permissions"] == {"contents": "read"}


# ------------------------------------------------------------------ deploy.yml


def test_deploy_runs_on_main_after_the_checks(deploy: dict[str, Any]) -> None:
    on = triggers(deploy)
    assert on["push"]["branches"] == ["main"]
    jobs = deploy["jobs"]
    assert jobs["test"]["uses"] == "./.github/workflows/ci.yml"
    assert jobs["build"]["needs"] == "test"


def test_staging_then_approved_production(deploy: dict[str, Any]) -> None:
    jobs = deploy["jobs"]
    assert jobs["staging"]["needs"] == "build"
    assert jobs["production"]["needs"] == "staging"
    # Required reviewers on the `production` environment are the manual approval.
    assert jobs["production"]["environment"] == "production"
    assert jobs["staging"]["environment"] == "staging"


@pytest.mark.parametrize(("job", "config_env"), [("staging", "staging"), ("production", "prod")])
def test_sam_deploy_uses_the_samconfig_environment(
    deploy: dict[str, Any], samconfig: dict[str, Any], job: str, config_env: str
) -> None:
    [step] = [s for s in steps(deploy["jobs"][job]) if "sam deploy" in str(s.get("run", ""))]
    command = " ".join(str(step["run"]).split())
    assert f"--config-env {config_env}" in command
    # A change set prompt would hang in CI: approval is the environment's job.
    assert "--no-confirm-changeset" in command
    # Stack name and parameters come from samconfig.toml, nowhere else.
    assert "--stack-name" not in command and "--parameter-overrides" not in command
    text = (WORKFLOWS / "deploy.yml").read_text(encoding="utf-8")
    assert samconfig[config_env]["global"]["parameters"]["stack_name"] not in text
    assert samconfig[config_env]["global"]["parameters"]["stack_name"]
    assert samconfig[config_env]["deploy"]["parameters"]["capabilities"] == "CAPABILITY_IAM"


def test_samconfig_environments_are_separate_stacks(samconfig: dict[str, Any]) -> None:
    names = {env: samconfig[env]["global"]["parameters"]["stack_name"] for env in ("default", "staging", "prod")}
    assert len(set(names.values())) == 3, names
    prefixes = {samconfig[env]["deploy"]["parameters"]["s3_prefix"] for env in ("staging", "prod")}
    assert len(prefixes) == 2


def test_production_deploys_the_build_that_staging_deployed(deploy: dict[str, Any]) -> None:
    jobs = deploy["jobs"]
    [upload] = uses(jobs["build"], "actions/upload-artifact")
    assert "sam build" in runs(jobs["build"])
    for name in ("staging", "production"):
        [download] = uses(jobs[name], "actions/download-artifact")
        assert download["with"]["name"] == upload["with"]["name"]
        assert download["with"]["path"] == upload["with"]["path"] == ".aws-sam/build"
        assert "sam build" not in runs(jobs[name])
        # sam deploy takes .aws-sam/build/template.yaml by itself; a --template-file there would make it
        # look for samconfig.toml in .aws-sam/build and miss the environments.
        assert "sam deploy" in runs(jobs[name]) and "--template-file" not in runs(jobs[name])


def test_deployments_are_never_cancelled_half_way(deploy: dict[str, Any]) -> None:
    assert deploy["concurrency"]["cancel-in-progress"] is False


# ------------------------------------------------------------------ credentials


def test_aws_access_is_oidc_only(deploy: dict[str, Any]) -> None:
    assert deploy["permissions"] == {"contents": "read"}  # id-token only where a role is assumed
    assuming = {name: job for name, job in deploy["jobs"].items() if uses(job, CONFIGURE_AWS)}
    assert set(assuming) == {"staging", "production"}
    for name, job in deploy["jobs"].items():
        permissions = job.get("permissions", {})
        if name in assuming:
            assert permissions.get("id-token") == "write", name
            [step] = uses(job, CONFIGURE_AWS)
            inputs = step["with"]
            assert re.fullmatch(r"\$\{\{\s*vars\.[A-Z0-9_]+\s*\}\}", inputs["role-to-assume"]), name
            assert inputs["aws-region"]
            assert not {"aws-access-key-id", "aws-secret-access-key", "aws-session-token"} & set(inputs), name
        else:
            assert "id-token" not in permissions, name


@pytest.mark.parametrize("path", all_workflows(), ids=lambda p: p.name)
def test_no_long_lived_aws_keys_anywhere(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"secrets\.[A-Za-z0-9_]*AWS", text, re.IGNORECASE)
    assert not re.search(r"AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY|SESSION_TOKEN)", text)
    assert not re.search(r"aws-(access-key-id|secret-access-key)", text)
    assert not re.search(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b", text)


@pytest.mark.parametrize("path", all_workflows(), ids=lambda p: p.name)
def test_permissions_are_explicit_and_never_write_all(path: Path) -> None:
    doc = load(path.name)
    assert doc.get("permissions") not in (None, "write-all")
    for name, job in doc["jobs"].items():
        assert job.get("permissions") != "write-all", name
        for scope, level in (job.get("permissions") or {}).items():
            assert level != "write" or scope == "id-token", (name, scope)


@pytest.mark.parametrize("path", all_workflows(), ids=lambda p: p.name)
def test_actions_are_pinned_to_a_major_version(path: Path) -> None:
    doc = load(path.name)
    for job in doc["jobs"].values():
        for step in steps(job):
            ref = step.get("uses")
            if ref is None or str(ref).startswith("./"):
                continue
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@(v\d+|[0-9a-f]{40})", ref), ref


@pytest.mark.parametrize("path", all_workflows(), ids=lambda p: p.name)
def test_checkouts_do_not_keep_the_token(path: Path) -> None:
    doc = load(path.name)
    for job in doc["jobs"].values():
        for step in uses(job, "actions/checkout"):
            assert step.get("with", {}).get("persist-credentials") is False
