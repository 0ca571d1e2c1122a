"""The one way a service opens Redis: every connect and call bounded in time, for the hot path."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError


def redis_client(url: str, *, connect_timeout_s: float, timeout_s: float) -> Redis:
    """A Redis client whose every connect and read gives up within the hot path's budget (redis-py's
    defaults wait 5 s and retry three times with backoff). A refused or reset connection is retried
    once at once (a pooled connection may have died with a restarted Redis); a timeout never is."""
    return Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
