"""Batches in the dashboard and the API: each batch's progress and its callbacks' jobs,
newest first a page at a time, and one batch with its members (``jobs.query.batches``)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.params import QueryParameter
from litestar.response import Template

from jobs.effective import published_functions
from jobs.query import BatchPage, batch_members, batch_view, iso, job_view, list_batches
from jobs.query.batches import MAX_PAGE, BatchView
from jobs.store.broker import Broker
from supervisor.web.pages import page
from supervisor.web.params import BrokerDep, InPath, Query

Limit = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)]
Offset = Annotated[int, QueryParameter(ge=0)]


class BatchDetail(msgspec.Struct, kw_only=True):
    batch: BatchView
    members: list[dict[str, Any]]  # the page's members, as the job API shows a job
    total: int
    next_offset: int | None  # pass as ``offset`` for the next page; None at the end


def _detail(broker: Broker, batch_id: str, offset: int, limit: int) -> BatchDetail:
    batch = batch_view(broker, batch_id)  # JobNotFound (404) when there is none
    found = batch_members(broker, batch_id, offset, limit)
    published = published_functions(broker)
    members = [job_view(r, broker, published=published) if r is not None
               else {"id": i, "state": "expired"}
               for i, r in zip(found.ids, found.records, strict=True)]
    return BatchDetail(batch=batch, members=members, total=found.total,
                       next_offset=found.next_offset)


class BatchPages(Controller):
    path = "/batches"
    include_in_schema = False

    @get("/", sync_to_thread=True)
    def batches(self, request: Request[Any, Any, Any], broker: BrokerDep,
                cursor: Query = None) -> Template:
        return page(request, "batches.html", listing=list_batches(broker, cursor, 50),
                    cursor=cursor, iso=iso)

    @get("/{batch_id:str}", sync_to_thread=True)
    def batch(self, request: Request[Any, Any, Any], broker: BrokerDep, batch_id: InPath,
              offset: Offset = 0) -> Template:
        detail = _detail(broker, batch_id, offset, 50)
        return page(request, "batch.html", detail=detail, b=detail.batch, offset=offset,
                    iso=iso)


class BatchesApi(Controller):
    path = "/api/batches"
    tags = ("batches",)

    @get("/", sync_to_thread=True,
         summary="Batches newest first with progress and callbacks (pass `next` as cursor)")
    def batches(self, broker: BrokerDep, cursor: Query = None, limit: Limit = 50,
                ) -> BatchPage:
        return list_batches(broker, cursor, limit)

    @get("/{batch_id:str}", sync_to_thread=True,
         summary="One batch and a page of its members, in the order they were given")
    def batch(self, broker: BrokerDep, batch_id: InPath, offset: Offset = 0,
              limit: Limit = 50) -> BatchDetail:
        return _detail(broker, batch_id, offset, limit)
