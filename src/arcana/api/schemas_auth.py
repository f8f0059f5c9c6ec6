"""Request and response bodies of ``/api/v1/auth`` (contract §2)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, EmailStr, Field

# Passwords are length-capped here only loosely (the 128-character rule is reported together
# with the other password rules); the cap stops megabyte strings reaching Argon2.
_Password = Field(min_length=1, max_length=1024)
_Token = Field(min_length=1, max_length=512)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)


class RegisterRequest(_Body):
    name: str = Field(min_length=1, max_length=200)
    email: EmailStr = Field(max_length=254)
    password: str = _Password


class LoginRequest(_Body):
    email: EmailStr = Field(max_length=254)
    password: str = _Password


class RefreshRequest(_Body):
    refresh_token: str = _Token


class ChangePasswordRequest(_Body):
    current_password: str = _Password
    new_password: str = _Password


class ForgotPasswordRequest(_Body):
    email: EmailStr = Field(max_length=254)


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
