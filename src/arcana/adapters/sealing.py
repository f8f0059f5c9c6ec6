"""AES-256-GCM sealing of secrets that must rest in job payloads (the password-reset token
in the outbox, the queue and the dead letters). The key is derived from the server secret
(HKDF-SHA256 with its own ``info``), so no new secret has to be configured and a backup of the
database or Redis alone does not reveal the tokens."""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "sealed:v1:"
_INFO = b"arcana job payload secrets v1"


class AesGcmSealer:
    def __init__(self, server_secret: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
            server_secret.encode()
        )
        self._aead = AESGCM(key)

    def seal(self, plaintext: str) -> str:
        nonce = os.urandom(12)
        blob = nonce + self._aead.encrypt(nonce, plaintext.encode(), PREFIX.encode())
        return PREFIX + base64.urlsafe_b64encode(blob).decode()

    def unseal(self, sealed: str) -> str:
        if not sealed.startswith(PREFIX):
            raise ValueError("not a sealed value")
        try:
            blob = base64.urlsafe_b64decode(sealed[len(PREFIX) :].encode())
            return self._aead.decrypt(blob[:12], blob[12:], PREFIX.encode()).decode()
        except (InvalidTag, ValueError) as exc:
            raise ValueError("sealed value does not open with this key") from exc
