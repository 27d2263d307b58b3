"""Where the proxy's limiter keeps the keys' counters (rpm, tpm, max_parallel, quota).

Three answers, decided by one pure function over the config: a Redis the
operator names with --redis-url (shared by every replica that names it), a
private redis-server on a unix socket in the run folder (several proxy
workers must share one count to be exact; with --state-dir it keeps its
append-only file there, so counts survive a restart), or the one worker's
own memory (exact for one worker; without --api-keys-file nobody has
limits). The answer reaches the proxy as a `limits` storage URI
(names.LIMITS_STORAGE_VARIABLE). Only a store that survives a restart
(--redis-url, --state-dir) may hold quotas.

--redis-url may hold a password: it only ever shows as `***`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import EntryError
from .inside import names

PING_TIMEOUT = 2.0   # seconds the start waits for --redis-url's PONG

ACCEPTED = "redis://[[user]:password@]host[:port][/db], rediss://... or unix:///absolute/path.sock[?db=N]"
# scheme://userinfo@ : what a shown URL must never carry, whatever else is wrong with it.
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)@")


def shown_url(text: str) -> str:
    """The URL with its password replaced by ***, even when it is malformed."""
    match = _USERINFO.match(text)
    if match is None:
        return text
    userinfo = match.group(2)
    user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
    return f"{match.group(1)}{user}:***@" + text[match.end():]


@dataclass(frozen=True)
class RedisUrl:
    """A checked --redis-url."""

    text: str = field(repr=False)

    @property
    def shown(self) -> str:
        return shown_url(self.text)

    @property
    def secrets(self) -> tuple[str, ...]:
        """What the console must hide: the password as written and decoded."""
        password = urlsplit(self.text).password
        return tuple({password, unquote(password)}) if password else ()

    @property
    def storage_uri(self) -> str:
        """The same Redis as a `limits` async storage URI (query and db kept)."""
        scheme, rest = self.text.split("://", 1)
        return ("async+redis+unix" if scheme == "unix" else "async+" + scheme) + "://" + rest

    def __repr__(self) -> str:
        return f"RedisUrl({self.shown!r})"


def check_redis_url(text: str) -> RedisUrl:
    """Accept the forms redis-py and `limits` both read; refuse the rest in one sentence."""
    parts = urlsplit(text.strip())
    shown = shown_url(text.strip())
    if parts.scheme not in ("redis", "rediss", "unix") or "://" not in text:
        raise EntryError(f"--redis-url {shown} is not a Redis URL: use {ACCEPTED}.")
    if parts.fragment:
        raise EntryError(f"--redis-url {shown} has a #fragment, which Redis URLs do not have: use {ACCEPTED}.")
    if parts.scheme == "unix":
        _check_unix(parts, shown)
    else:
        _check_tcp(parts, shown)
    return RedisUrl(text.strip())


def _check_tcp(parts, shown: str) -> None:
    if "@" in parts.netloc and ":" not in parts.netloc.rsplit("@", 1)[0]:
        raise EntryError(f"--redis-url {shown} names a user without a password: "
                         "write the password after a colon (redis://:password@host or redis://user:password@host).")
    if not parts.hostname:
        raise EntryError(f"--redis-url {shown} names no host: use {ACCEPTED}.")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port is not None and not 1 <= port <= 65535:
        raise EntryError(f"--redis-url {shown} has a port that is not a TCP port: use a number from 1 to 65535.")
    _check_db(parts.path.lstrip("/"), shown)


def _check_unix(parts, shown: str) -> None:
    if parts.netloc or not parts.path.startswith("/"):
        raise EntryError(f"--redis-url {shown} must name a socket by its absolute path, "
                         "with three slashes: unix:///run/redis/redis.sock.")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name != "db" for name, _ in query):
        raise EntryError(f"--redis-url {shown} may only carry ?db=N after the socket's path.")
    for _, value in query:
        _check_db(value, shown)


def _check_db(db: str, shown: str) -> None:
    if db and not db.isdigit():
        raise EntryError(f"--redis-url {shown} names database {db!r}: a database is a whole number such as /0.")


@dataclass(frozen=True)
class LimitsPlan:
    """Who holds the keys' counters, and why, in one line."""

    holder: str                     # REDIS_URL, PRIVATE_REDIS or MEMORY_HOLDER
    reason: str
    redis_url: RedisUrl | None = None
    state_dir: Path | None = None   # where the private redis-server keeps its files

    @property
    def durable(self) -> bool:
        """Whether counts survive a restart of this container (quotas need it)."""
        return self.redis_url is not None or (self.private and self.state_dir is not None)

    @property
    def private(self) -> bool:
        """Whether llm-entry runs its own redis-server (the `limiter` program)."""
        return self.holder == PRIVATE_REDIS

    def storage_uri(self, run_dir: Path) -> str:
        if self.redis_url is not None:
            return self.redis_url.storage_uri
        if self.private:
            return "async+redis+unix://" + str(private_socket(run_dir))
        return names.MEMORY_STORAGE


REDIS_URL, PRIVATE_REDIS, MEMORY_HOLDER = "redis-url", "private", "memory"


def plan_limits(redis_url: RedisUrl | None, api_keys_file: Path | None, proxy_workers: int,
                state_dir: Path | None = None) -> LimitsPlan:
    if redis_url is not None:
        return LimitsPlan(REDIS_URL, f"limits: the Redis at --redis-url {redis_url.shown} holds them, "
                                     "shared by every replica that names it", redis_url)
    if api_keys_file is None:
        return LimitsPlan(MEMORY_HOLDER, "limits: none to keep (no --api-keys-file), so no Redis runs")
    if state_dir is not None:
        return LimitsPlan(PRIVATE_REDIS, "limits and quotas: a private redis-server on a unix socket holds them, "
                                         f"with its append-only file in --state-dir {state_dir} (written every "
                                         "second), so counts survive a restart", state_dir=state_dir)
    if proxy_workers > 1:
        return LimitsPlan(PRIVATE_REDIS, "limits: a private redis-server on a unix socket holds them, "
                                         f"so {proxy_workers} proxy workers share exact counts")
    return LimitsPlan(MEMORY_HOLDER, "limits: the one proxy worker keeps them in its memory, exact for one worker")


def quota_needs_a_store(line: int, api_keys_file: Path) -> str:
    return (f"the key on line {line} of --api-keys-file {api_keys_file} has a quota, whose count must survive "
            "a restart: add --state-dir DIR (a volume for the private redis-server's files) "
            "or --redis-url (a Redis shared by the replicas).")


def check_state_dir(state_dir: Path) -> None:
    """--state-dir is a folder this user may write (made when missing), or an EntryError."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise EntryError(f"cannot make --state-dir {state_dir} ({error.strerror}): "
                         "mount a writable volume there.") from error
    if not os.access(state_dir, os.W_OK | os.X_OK):
        raise EntryError(f"--state-dir {state_dir} is not writable by this user: mount a writable volume there.")


def private_socket(run_dir: Path) -> Path:
    return run_dir / names.REDIS_SOCKET


def missing_redis_server(proxy_workers: int) -> str:
    return (f"--api-keys-file with {proxy_workers} proxy workers needs redis-server to keep the keys' "
            "limits exact across workers: install it (apt-get install redis-server), or pass --redis-url, "
            "or --proxy-workers 1.")


def ping(url: RedisUrl, timeout: float = PING_TIMEOUT) -> str:
    """'' when the Redis answers PING within the timeout, else why not, in a few words."""
    import redis  # LiteLLM's dependency; imported only when there is a Redis to ask

    try:
        client = redis.Redis.from_url(url.text, socket_timeout=timeout, socket_connect_timeout=timeout)
    except ValueError as error:   # an option in the query that redis-py does not know
        return str(error)
    try:
        client.ping()
        return ""
    except redis.exceptions.RedisError as error:
        return describe_redis_error(error, timeout, bool(url.secrets))
    finally:
        client.close()


def unreachable(url: RedisUrl, why: str) -> str:
    return (f"cannot reach --redis-url {url.shown} ({why}): start that Redis or correct the URL "
            "(host, port, password), or leave --redis-url out to keep the limits in this container.")


def describe_redis_error(error: Exception, timeout: float, has_password: bool) -> str:
    import redis

    if isinstance(error, redis.exceptions.TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(error, redis.exceptions.AuthenticationError) or re.search(r"\b(NOAUTH|WRONGPASS|AUTH)\b", str(error)):
        return "it refused the password" if has_password else "it asks for a password"
    cause = error.__cause__ or error.__context__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return f"{type(error).__name__}: {error}"
