"""Database URLs: which dialect, how each driver wants it, and redaction of passwords everywhere."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from engine.sql import Dialect

_SCHEMES: dict[str, Dialect] = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "sqlite": "sqlite",
}

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(secret: str) -> None:
    """Remember a secret so `redact` removes it from any text shown to users."""
    if secret and len(secret) >= 3:
        with _secrets_lock:
            _secrets.update({secret, quote(secret, safe="")})


def redact(text: str) -> str:
    """Hide passwords in URLs (`user:***@host`) and every registered secret anywhere in `text`."""
    text = re.sub(r"(\w+://[^:/@\s]*:)([^@\s]*)(@)", r"\1***\3", text)
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


@dataclass(frozen=True)
class DatabaseUrl:
    """A parsed database URL. `str()` is redacted; use `.raw` only to connect."""

    raw: str
    dialect: Dialect
    sqlite_path: Path | None = None

    def __str__(self) -> str:
        return redact(self.raw)

    def __repr__(self) -> str:
        return f"DatabaseUrl({redact(self.raw)!r})"

    @property
    def absolute(self) -> str:
        """The URL with any relative SQLite path made absolute (safe to hand to another process)."""
        return f"sqlite://{self.sqlite_path}" if self.dialect == "sqlite" else self.raw

    @property
    def connectorx(self) -> str:
        if self.dialect == "sqlite":
            return f"sqlite://{self.sqlite_path}"
        if self.dialect == "mysql":
            parts = urlsplit(self.raw)
            return urlunsplit(("mysql",) + tuple(parts)[1:])
        return self.raw

    @property
    def libpq(self) -> str:
        """The URL for libpq (ADBC): `postgres://` is normalised to `postgresql://`."""
        parts = urlsplit(self.raw)
        return urlunsplit(("postgresql",) + tuple(parts)[1:])

    @property
    def database(self) -> str:
        if self.dialect == "sqlite":
            return str(self.sqlite_path)
        return unquote(urlsplit(self.raw).path.lstrip("/"))


def parse_url(text: str, base_dir: Path | None = None) -> DatabaseUrl:
    """Parse a database URL. SQLite: `sqlite:///abs/path.db`, or `sqlite:rel/path.db` relative to `base_dir`."""
    scheme = text.split(":", 1)[0].lower() if ":" in text else ""
    dialect = _SCHEMES.get(scheme)
    if dialect is None:
        raise ValueError(
            f"unsupported URL scheme {scheme or '(none)'!r}; use postgresql://, mysql:// (MariaDB too) "
            "or sqlite:///absolute/path.db"
        )
    password = urlsplit(text).password if dialect != "sqlite" else None
    if password:
        register_secret(unquote(password))
    if dialect != "sqlite":
        return DatabaseUrl(text, dialect)
    rest = text.split(":", 1)[1]
    if rest.startswith("//"):
        path = Path(rest[2:])
        if not path.is_absolute():
            raise ValueError("sqlite URLs are sqlite:///absolute/path.db or sqlite:relative/path.db")
    else:
        path = (base_dir or Path.cwd()) / rest
    return DatabaseUrl(text, "sqlite", path.resolve())
