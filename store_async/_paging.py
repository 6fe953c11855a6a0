"""``AsyncPager``: every item of a paged query, Azure SDK style.

::

    async for item in store.list_products(query):           # every item of every page
        ...
    async for page in store.list_products(query).by_page():  # page by page
        save(page.continuation_token)                        # resume later from here:
    store.list_products(query).by_page(continuation_token=saved)

Continuation tokens are opaque (never parsed); a service that repeats one would loop forever,
so a repeated token ends the iteration with :class:`~store_async.ResponseFormatError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar

from store_async.errors import ResponseFormatError

__all__ = ["AsyncPager", "Page"]

ItemT = TypeVar("ItemT", covariant=True)
PageT = TypeVar("PageT", bound="Page[object]")


class Page(Protocol[ItemT]):
    """What a page record offers: its items and the token of the next page (``None``: last)."""

    @property
    def items(self) -> Sequence[ItemT]: ...

    @property
    def continuation_token(self) -> str | None: ...


class AsyncPager(Generic[ItemT, PageT]):
    """Iterate the items of every page; :meth:`by_page` iterates the pages themselves.

    :param fetch: ``fetch(continuation_token)`` returns one page (``None``: the first page).
    """

    __slots__ = ("_fetch",)

    def __init__(self, fetch: Callable[[str | None], Awaitable[PageT]]) -> None:
        self._fetch = fetch

    def __aiter__(self) -> AsyncIterator[ItemT]:
        return self._items()

    async def _items(self) -> AsyncIterator[ItemT]:
        async for page in self.by_page():
            for item in page.items:
                yield item  # type: ignore[misc]

    async def by_page(self, continuation_token: str | None = None) -> AsyncIterator[PageT]:
        """Every page from ``continuation_token`` on (from the first page when ``None``)."""
        seen: set[str] = set()
        token = continuation_token
        while True:
            page = await self._fetch(token)
            yield page
            token = page.continuation_token
            if not token:
                return
            if token in seen:  # a service bug must not become an endless loop
                raise ResponseFormatError("the service repeated a continuation token")
            seen.add(token)
