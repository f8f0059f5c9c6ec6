"""Request and response bodies of ``/api/v1/auth`` (contract §2)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from arcana.domain.users import USER_NAME_MAX, user_name
from arcana.errors import ValidationFailed
from arcana.services.auth import SessionView
from arcana.services.emails import valid_email


def _check_email(value: str) -> str:
    # The service's rules (email-validator, no DNS; NFC, lowercase, 254 after that), so a bad
    # address is a 422 naming the field whatever the route.
    try:
        return valid_email(value)
    except ValidationFailed as exc:
        raise ValueError(exc.message) from None


def _check_name(value: str) -> str:
    try:
        user_name(value)  # the domain's rule; the service strips the name when it stores it
    except ValidationFailed as exc:
        raise ValueError(exc.message) from None
    return value


EmailStr = Annotated[
    # The raw input may be longer than the canonical form (surrounding spaces); 320 bounds it.
    str, Field(max_length=320, json_schema_extra={"format": "email"}), AfterValidator(_check_email)
]
Name = Annotated[str, Field(min_length=1, max_length=USER_NAME_MAX), AfterValidator(_check_name)]

# Passwords are length-capped here only loosely (the 128-character rule is reported together
# with the other password rules); the cap stops megabyte strings reaching Argon2.
_Password = Field(min_length=1, max_length=1024)
_Token = Field(min_length=1, max_length=512)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)


class RegisterRequest(_Body):
    name: Name
    email: EmailStr
    password: str = _Password


class LoginRequest(_Body):
    email: EmailStr
    password: str = _Password


class RefreshRequest(_Body):
    refresh_token: str = _Token


class ChangePasswordRequest(_Body):
    current_password: str = _Password
    new_password: str = _Password


class ForgotPasswordRequest(_Body):
    email: EmailStr


class ResetPasswordRequest(_Body):
    token: str = _Token
    new_password: str = _Password


class UserCreated(BaseModel):
    id: str
    name: str
    email: str


class TokenResponse(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"
    expires_in: int


class MeResponse(BaseModel):
    id: str
    name: str
    email: str
    roles: list[str]
    created_at: datetime


class SessionRead(BaseModel):
    id: str
    created_at: datetime
    last_used_at: datetime
    user_agent: str | None
    ip: str | None
    current: bool


class SessionList(BaseModel):
    data: list[SessionRead]

    @classmethod
    def of(cls, views: Sequence[SessionView], *, mark_current: bool = True) -> SessionList:
        """The wire shape of ``AuthService.list_sessions``; an admin viewing another user's
        sessions has no current one (``mark_current=False``)."""
        return cls(
            data=[
                SessionRead(
                    id=v.session.id,
                    created_at=v.session.created_at,
                    last_used_at=v.session.last_used_at,
                    user_agent=v.session.user_agent,
                    ip=v.session.ip,
                    current=mark_current and v.current,
                )
                for v in views
            ]
        )
