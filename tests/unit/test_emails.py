"""The canonical email form, and its memo."""

from __future__ import annotations

import pytest

from arcana.errors import ValidationFailed
from arcana.services.emails import canonical_email, valid_email


def test_a_checked_address_is_remembered_and_a_refusal_is_not() -> None:
    address = "Memo.Check@Example.COM"
    first = valid_email(address)
    hits = valid_email.cache_info().hits
    assert canonical_email(address) == first == "memo.check@example.com"
    assert valid_email.cache_info().hits == hits + 1
    for _ in range(2):  # refused every time, with the field it was checked for
        with pytest.raises(ValidationFailed) as info:
            valid_email("not an address", field="new_email")
        assert info.value.field == "new_email"
