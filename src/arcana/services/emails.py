"""Email addresses: validated with ``email-validator`` (syntax only, no DNS), then put in the
one form that is stored and compared: Unicode NFC, lowercased, at most 254 characters.

Why lowercase the local part too: the contract makes emails case-insensitive, and lowering
after NFC can change the length (e.g. ``İ`` → ``i̇``), so the 254 limit is checked on the
final form, the one that goes into the column. Characters that could add recipients or
headers in a mail (``,`` ``;`` ``"`` ``<`` ``>``, controls) are refused even where RFC 5322
would allow them quoted.

``email_validator`` is imported where an address is first checked, not with this module: the
composition root imports every service, and the CLI's commands that check no address (most of
them) would pay for it at every start.
"""

from __future__ import annotations

import functools
import re
import unicodedata

from arcana.errors import ValidationFailed

MAX_EMAIL_LENGTH = 254
_FORBIDDEN = re.compile(r'[,;"<>\\\x00-\x1f\x7f\s]')


def _validate(value: str) -> str:
    from email_validator import validate_email

    return validate_email(
        value,
        check_deliverability=False,
        allow_display_name=False,
        allow_quoted_local=False,
        allow_domain_literal=False,
        test_environment=True,
    ).normalized


def _checked(value: str) -> str:
    """email-validator refuses special-use domains (``.local``, ``.internal``...), which are
    legitimate for a service run inside a company network: such a domain is checked with its
    special-use suffix swapped for ``test`` (same syntax rules), then put back."""
    from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError

    try:
        return _validate(value)
    except EmailNotValidError:
        local, _, domain = value.rpartition("@")
        lowered = domain.lower()
        for name in SPECIAL_USE_DOMAIN_NAMES:
            if lowered.endswith("." + name):
                normalized = _validate(f"{local}@{lowered[: -len(name)]}test")
                return normalized[: -len("test")] + name
        raise


def canonical_email(email: str) -> str:
    """The stored/compared form, for look-ups (never raises): unknown or invalid input simply
    finds nobody."""
    try:
        return valid_email(email)
    except ValidationFailed:
        return unicodedata.normalize("NFC", email.strip()).lower()


@functools.lru_cache(maxsize=4096)
def valid_email(email: str, field: str = "email") -> str:
    """The canonical form of a valid address, or ``ValidationFailed`` (422).

    Memoized: a login checks its address three times (the request schema, the limiter key,
    the look-up), and email-validator costs a few hundred microseconds a call. A pure
    function of its input; refusals raise and are not remembered."""
    from email_validator import EmailNotValidError

    value = unicodedata.normalize("NFC", email.strip())
    problem: str | None = None
    if not value or _FORBIDDEN.search(value):
        problem = "value is not a valid email address"
    else:
        try:
            value = unicodedata.normalize("NFC", _checked(value)).lower()
        except EmailNotValidError:
            problem = "value is not a valid email address"
    if problem is None and len(value) > MAX_EMAIL_LENGTH:
        problem = f"must be at most {MAX_EMAIL_LENGTH} characters"
    if problem is not None:
        raise ValidationFailed(field=field, message=problem)
    return value
