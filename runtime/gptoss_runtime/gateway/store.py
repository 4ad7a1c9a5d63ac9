"""Where the Responses API keeps stored responses (`store`, `previous_response_id`, GET/DELETE by id).

- `MemoryResponseStore`: this gateway process only, bounded (oldest dropped first). Another replica, or
  this one after a restart, does not see its responses.
- `RedisResponseStore`: any Redis-compatible server named by the deployment (`redis://host:port/db`),
  shared by every replica and kept across restarts; entries expire after `ttl_seconds`.

A record is JSON: the response object (what GET returns) and the conversation that led to it, as the
model's messages, so that a follow-up request can continue it on any replica.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Final, Protocol

RESPONSES_STORE_ENV: Final = "GPTOSS_RESPONSES_STORE_URL"  # the gateway container's setting (set by the operator)
MEMORY_CAPACITY: Final = 1024
DEFAULT_TTL_SECONDS: Final = 30 * 24 * 3600  # OpenAI keeps stored responses for 30 days
REDIS_KEY_PREFIX: Final = "gptoss:response:"
# Named in errors: the setting that gives every replica one shared store.
STORE_SETTING: Final = "spec.gateway.responsesStore.url (gateway env GPTOSS_RESPONSES_STORE_URL)"


class StoreError(Exception):
    """The shared store could not be reached or answered badly."""


class ResponseStore(Protocol):
    shared: bool  # True when every replica sees the same records

    async def get(self, response_id: str) -> dict[str, Any] | None: ...

    async def put(self, response_id: str, record: dict[str, Any]) -> None: ...

    async def delete(self, response_id: str) -> bool: ...

    async def close(self) -> None: ...


class MemoryResponseStore:
    shared = False

    def __init__(self, capacity: int = MEMORY_CAPACITY) -> None:
        self._capacity = capacity
        self._records: OrderedDict[str, str] = OrderedDict()

    async def get(self, response_id: str) -> dict[str, Any] | None:
        text = self._records.get(response_id)
        return None if text is None else dict(json.loads(text))

    async def put(self, response_id: str, record: dict[str, Any]) -> None:
        # Stored as JSON text, as Redis would: a later change to the caller's objects cannot leak in.
        self._records[response_id] = json.dumps(record)
        while len(self._records) > self._capacity:
            self._records.popitem(last=False)

    async def delete(self, response_id: str) -> bool:
        return self._records.pop(response_id, None) is not None

    async def close(self) -> None:
        self._records.clear()


class RedisResponseStore:
    shared = True

    def __init__(self, url: str, *, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> None:
        import redis.asyncio

        self._client = redis.asyncio.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._ttl_seconds = ttl_seconds

    async def get(self, response_id: str) -> dict[str, Any] | None:
        text = await self._call(self._client.get(REDIS_KEY_PREFIX + response_id))
        return None if text is None else dict(json.loads(text))

    async def put(self, response_id: str, record: dict[str, Any]) -> None:
        await self._call(self._client.set(REDIS_KEY_PREFIX + response_id, json.dumps(record), ex=self._ttl_seconds))

    async def delete(self, response_id: str) -> bool:
        return bool(await self._call(self._client.delete(REDIS_KEY_PREFIX + response_id)))

    async def close(self) -> None:
        await self._client.aclose()

    @staticmethod
    async def _call(pending: Any) -> Any:
        import redis.exceptions

        try:
            return await pending
        except redis.exceptions.RedisError as error:
            raise StoreError(f"the shared response store failed: {error}") from error


def open_store(url: str | None) -> ResponseStore:
    """`redis://...` (or `rediss://`, `unix://`): the shared store; None or empty: this process's memory."""
    if not url:
        return MemoryResponseStore()
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"{STORE_SETTING}: expected a redis:// URL, got {url!r}")
    return RedisResponseStore(url)
