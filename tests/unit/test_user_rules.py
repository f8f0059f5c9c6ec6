"""A user's name follows one rule, the domain's, whichever way it comes in; the API's schema
publishes that rule's limit."""

from __future__ import annotations

import pytest

from arcana.api.schemas_auth import RegisterRequest
from arcana.domain.users import USER_NAME_MAX, user_name
from arcana.errors import ValidationFailed


def test_a_name_is_stored_without_surrounding_whitespace() -> None:
    assert user_name("  Ada Lovelace ") == "Ada Lovelace"
    assert user_name("x" * USER_NAME_MAX) == "x" * USER_NAME_MAX


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("x" * (USER_NAME_MAX + 1), f"must be at most {USER_NAME_MAX} characters"),
        ("Ada\x00", "must not contain control characters"),
        ("Ada\nBcc: someone", "must not contain control characters"),
        ("Ada\x7f", "must not contain control characters"),
    ],
)
def test_a_bad_name_is_refused_naming_the_field(value: str, problem: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        user_name(value)
    assert info.value.field == "name"
    assert info.value.message == problem
    assert [(p.field, p.message) for p in info.value.problems] == [("name", problem)]


def test_the_schema_publishes_the_domain_limit_and_applies_the_rule() -> None:
    schema = RegisterRequest.model_json_schema()["properties"]["name"]
    assert schema["maxLength"] == USER_NAME_MAX
    good = {"email": "ada@example.com", "password": "x"}
    with pytest.raises(ValueError, match="must not contain control characters"):
        RegisterRequest.model_validate({**good, "name": "Ada\tL"})
    with pytest.raises(ValueError, match="must not be empty"):
        RegisterRequest.model_validate({**good, "name": "  "})
