"""Password strength rules (contract §2): length 8..128, an upper-case letter, a lower-case
letter, a digit, and not one of the most common passwords (shipped list, case-insensitive)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from arcana.errors import FieldProblem, ValidationFailed

MIN_LENGTH = 8
MAX_LENGTH = 128


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """Loaded once per process from ``arcana/data/common_passwords.txt``."""
    text = resources.files("arcana").joinpath("data/common_passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and line[0] != "#"
    )


def password_problems(password: str) -> list[str]:
    problems: list[str] = []
    if len(password) < MIN_LENGTH:
        problems.append(f"must be at least {MIN_LENGTH} characters long")
    if len(password) > MAX_LENGTH:
        problems.append(f"must be at most {MAX_LENGTH} characters long")
    if not any(c.isupper() for c in password):
        problems.append("must contain an upper-case letter")
    if not any(c.islower() for c in password):
        problems.append("must contain a lower-case letter")
    if not any(c.isdigit() for c in password):
        problems.append("must contain a digit")
    if password.lower() in common_passwords():
        problems.append("is too common")
    return problems


def check_password(password: str, field: str = "password") -> None:
    """Raise one ``ValidationFailed`` listing every rule the password breaks."""
    problems = password_problems(password)
    if problems:
        raise ValidationFailed(
            f"{field}: password " + "; ".join(problems),
            problems=[FieldProblem(field, f"Password {p}", "password_policy") for p in problems],
        )
