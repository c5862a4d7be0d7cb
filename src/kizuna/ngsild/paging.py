"""A page of an entity selection (clause 5.5.9, 4.5.x orderBy): the store pages in its own
order; a selection with ``orderBy`` is sorted here as a whole and then paged."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kizuna.ngsild.selection import EntitySelection, Page
from kizuna.store import Entity, EntityQuery, QueryResult


@dataclass(slots=True)
class EntityPage:
    """The entities of one page, the size of the whole selection if counted (or sorted), and
    whether a next page is known to exist when nothing was counted."""

    entities: list[Entity]
    total: int | None
    has_next: bool = False

    def known(self, page: Page) -> int:
        """How many results there are at least: what the prev/next links are made from."""
        if self.total is not None:
            return self.total
        return page.offset + len(self.entities) + (1 if self.has_next else 0)


async def read_page(
    run: Callable[[EntityQuery], Awaitable[QueryResult]], selection: EntitySelection, page: Page
) -> EntityPage:
    """``run`` the selection's query (here, or across the context sources) for one page."""
    if selection.order is not None:
        result = await run(selection.entity_query())
        entities = selection.order.sort(result.entities)
        return EntityPage(entities[page.offset : page.offset + page.limit], len(entities))
    # One entity past the page says whether there is a next one, when nothing is counted.
    limit = page.limit if page.count or page.limit == 0 else page.limit + 1
    result = await run(selection.entity_query(limit=limit, offset=page.offset, count=page.count))
    if not page.count and len(result.entities) > page.limit:
        return EntityPage(result.entities[: page.limit], result.total, has_next=True)
    return EntityPage(result.entities, result.total)
