"""The one way a service opens Redis: every connect and call bounded in time, for the hot path."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

#: Connections one client opens at most: far more than the calls a gateway has in flight at once.
MAX_CONNECTIONS = 512


def redis_client(
    url: str, *, connect_timeout_s: float, timeout_s: float, max_connections: int = MAX_CONNECTIONS
) -> Redis:
    """A Redis client whose every connect and read gives up within the hot path's budget (redis-py's
    defaults wait 5 s and retry three times with backoff). A refused or reset connection is retried
    once at once (a pooled connection may have died with a restarted Redis); a timeout never is.

    Its pool lets a call wait (within ``timeout_s`` too) for a free connection once ``max_connections``
    are in use. redis-py's own pool fails such a call at once (``MaxConnectionsError``, past 100): under
    a burst of requests Redis then looked down to the circuit breaker while it was answering fine."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
    client = Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # the client's own pool: closed with it (as from_url's)
    return client
