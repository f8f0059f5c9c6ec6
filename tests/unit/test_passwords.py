"""Password rules and the Argon2 adapter."""

from __future__ import annotations

import pytest

from arcana.adapters.passwords import Argon2PasswordHasher
from arcana.errors import ValidationFailed
from arcana.services.passwords import check_password, common_passwords, password_problems


def test_common_list_is_shipped_and_loaded_once() -> None:
    words = common_passwords()
    assert len(words) >= 5000
    assert "password1" in words
    assert common_passwords() is words


@pytest.mark.parametrize("password", ["Password1", "pASSWORD1", "Qwerty123"])
def test_common_passwords_are_rejected_whatever_the_case(password: str) -> None:
    assert password_problems(password) == ["is too common"]


def test_every_failed_rule_is_listed() -> None:
    with pytest.raises(ValidationFailed) as info:
        check_password("")
    assert len(info.value.problems) == 4  # length, upper, lower, digit
    assert password_problems("Good-Passw0rd-Here") == []


def test_hasher_verify_and_rehash() -> None:
    cheap = Argon2PasswordHasher(memory_kib=1024, time_cost=1, parallelism=1)
    h = cheap.hash("Secret-123")
    assert h.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    assert cheap.verify(h, "Secret-123")
    assert not cheap.verify(h, "Secret-124")
    assert not cheap.verify("garbage", "Secret-123")
    assert not cheap.needs_rehash(h)
    stronger = Argon2PasswordHasher(memory_kib=2048, time_cost=2, parallelism=1)
    assert stronger.needs_rehash(h)
    assert stronger.verify(h, "Secret-123")  # old hashes still verify


def test_dummy_hash_costs_a_verification_and_never_matches() -> None:
    hasher = Argon2PasswordHasher(memory_kib=1024, time_cost=1, parallelism=1)
    dummy = hasher.dummy_hash()
    assert dummy.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    assert not hasher.needs_rehash(dummy)
    assert not hasher.verify(dummy, "")
    assert not hasher.verify(dummy, "anything")
