"""The variables the functions read are the ones the template sets and events/env.local.json provides
(`sam local start-api --env-vars events/env.local.json` passes only variables the template declares)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from otafleet import config
from otafleet.decision import Policy
from otafleet.rhythm import SilencePolicy
from otafleet_local import template

ROOT = Path(__file__).resolve().parents[2]
# Set by the Lambda runtime itself, never by the template.
RUNTIME = {"AWS_REGION", "AWS_DEFAULT_REGION"}
_READ = re.compile(r"""(?:environ\.get|environ\[|_int|_float)\(?\s*["']([A-Z][A-Z0-9_]+)["']""")


def variables_read() -> set[str]:
    found: set[str] = set()
    for source in (ROOT / "functions").rglob("*.py"):
        found |= set(_READ.findall(source.read_text()))
    return found - RUNTIME


def test_scan_sees_the_settings() -> None:
    read = variables_read()
    # the scan itself must find what config.py reads, or the checks below prove nothing
    assert {"DEVICES_TABLE", "CATALOG_TABLE", "FIRMWARE_BUCKET", "PRESIGN_EXPIRY_SECONDS", "MAX_INLINE_BYTES"} <= read


FUNCTIONS = tuple(template.resources("AWS::Serverless::Function"))
# Variables only some functions may have, because only code those functions run reads them: the alarm
# topic is for rollout notices, which only the functions that halt or advance rollouts announce (the
# publish function has no sns:Publish either).
ONLY_FOR = {"ALARM_TOPIC_ARN": {"UpdateFunction", "ControllerFunction"}}


def variables_of(function: str) -> set[str]:
    """What `function` must be given: everything the shared code reads, less what is only for others."""
    return {name for name in variables_read() if function in ONLY_FOR.get(name, {function})}


def test_every_function_is_checked() -> None:
    assert set(FUNCTIONS) == {"UpdateFunction", "PublishFunction", "ControllerFunction", "AdminFunction"}


def test_template_declares_every_variable_the_functions_read() -> None:
    for function in FUNCTIONS:
        declared = set(template.function_properties(function)["Environment"]["Variables"])
        missing = variables_of(function) - declared
        assert not missing, f"{function} reads {sorted(missing)} but template.yaml does not set them"


def test_variables_only_for_some_functions_are_given_to_those_only() -> None:
    assert set(ONLY_FOR) <= variables_read()  # a name the code no longer reads would exempt nothing
    for name, functions in ONLY_FOR.items():
        assert functions <= set(FUNCTIONS), name
        for function in FUNCTIONS:
            declared = set(template.function_properties(function)["Environment"]["Variables"])
            assert (name in declared) is (function in functions), (function, name)


def test_env_local_json_names_every_variable_for_both_functions() -> None:
    env = json.loads((ROOT / "events" / "env.local.json").read_text())
    for function in FUNCTIONS:
        declared = set(template.function_properties(function)["Environment"]["Variables"])
        given = set(env[function])
        needed = variables_of(function)
        assert needed <= given, f"{function}: env.local.json lacks {sorted(needed - given)}"
        assert given <= declared, f"{function}: SAM ignores {sorted(given - declared)} (not declared in the template)"


# Settings with a template parameter: the parameter, its default, the Settings default and the value
# events/env.local.json gives must say the same.
TUNED = {
    "FAILURE_OFFER_LIMIT": ("FailureOfferLimit", "failure_offer_limit"),
    "ENROLL_PER_HOUR": ("EnrollPerHour", "enroll_per_hour"),
    "ENROLL_TRUST_HOURS": ("EnrollTrustHours", "enroll_trust_hours"),
    "UNASSIGNED_TTL_DAYS": ("UnassignedTtlDays", "unassigned_ttl_days"),
    "SILENCE_FACTOR": ("SilenceFactor", "silence_factor"),
    "SILENCE_FLOOR_MINUTES": ("SilenceFloorMinutes", "silence_floor_minutes"),
    "SILENCE_UNLEARNED_HOURS": ("SilenceUnlearnedHours", "silence_unlearned_hours"),
    "CHECK_HEARTBEAT_MINUTES": ("CheckHeartbeatMinutes", "check_heartbeat_minutes"),
    "LOG_SAMPLE_RATE": ("LogSampleRate", "log_sample_rate"),
}


def test_tuning_settings_agree_in_template_config_and_env_local_json(monkeypatch: pytest.MonkeyPatch) -> None:
    env = json.loads((ROOT / "events" / "env.local.json").read_text())
    parameters = template.load().get("Parameters") or {}
    for name in TUNED:
        monkeypatch.delenv(name, raising=False)
    defaults = config.load_settings()
    for variable, (parameter, field) in TUNED.items():
        default = parameters[parameter]["Default"]
        assert getattr(defaults, field) == default == getattr(config.Settings, field), variable
        for function in FUNCTIONS:
            assert template.function_properties(function)["Environment"]["Variables"][variable] == {"Ref": parameter}
            assert float(env[function][variable]) == default, (function, variable)


def test_the_silence_policy_follows_the_settings() -> None:
    """The settings become the decision's SilencePolicy in one place, with the same defaults as the rule,
    but for the heartbeat: the rule's own is 0 (every check recorded, so quiet limits are exact), a
    deployment's an hour (CheckHeartbeatMinutes)."""
    assert Policy.from_settings(config.load_settings()).silence == SilencePolicy(heartbeat_seconds=3600)
