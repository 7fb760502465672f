"""What the flow's two surfaces (444 and 10925) share in one process: one flow, one gallery.

Both surfaces of a process get the same :class:`FlowServices`, so the understanding (the
catalogue, the classifier's embeddings) loads once and the face gallery's matrix is cached
once. Nothing here is session state: that lives in the database.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable

from aiproject.context import AppContext
from aiproject.domain.assistant.flow import AssistantFlow
from aiproject.domain.assistant.flow_faces import Enrolment, FaceChecker, gallery_for
from aiproject.domain.assistant.flow_understanding import Understanding
from aiproject.store.assistant import AssistantStore
from aiproject.store.faces import FaceGallery

UnderstandingLoader = Callable[[AppContext], Awaitable[Understanding]]


async def load_understanding(ctx: AppContext) -> Understanding:
    """Load the catalogue-based understanding of this process."""
    from aiproject.domain.assistant.flow_catalogue import load_understanding as load

    return await load(ctx.settings, ctx.engines)


class FlowServices:
    """The flow, face enrolment and their engines, built on first use."""

    def __init__(self, ctx: AppContext, load_understanding: UnderstandingLoader) -> None:
        self.ctx = ctx
        self.store = AssistantStore(ctx.db)
        self._load_understanding = load_understanding
        self._understanding: Understanding | None = None
        self._flow: AssistantFlow | None = None
        self._faces: tuple[FaceChecker, FaceGallery] | None = None
        self._lock = asyncio.Lock()

    async def understanding(self) -> Understanding:
        """Return the understanding, loading it once."""
        async with self._lock:
            if self._understanding is None:
                self._understanding = await self._load_understanding(self.ctx)
            return self._understanding

    async def flow(self) -> AssistantFlow:
        """Return the flow."""
        if self._flow is None:
            self._flow = AssistantFlow(
                self.ctx.settings,
                self.store,
                self.understanding,
                self.ctx.engines.asr,
                self.ctx.engines.audio,
            )
        return self._flow

    async def enrolment(self, user_id: str) -> Enrolment:
        """Return a new face enrolment for ``user_id``."""
        if self._faces is None:
            engine = await self.ctx.engines.face()
            self._faces = (
                FaceChecker(engine, self.ctx.settings.assistant.faces, self.ctx.engines.images),
                gallery_for(self.ctx.db, engine),
            )
        checker, gallery = self._faces
        distance = self.ctx.settings.engines.face.match_distance
        return Enrolment(user_id, checker, gallery, self.store, distance)


# The services of each live context, kept only while an app holds them.
_SHARED: weakref.WeakValueDictionary[int, FlowServices] = weakref.WeakValueDictionary()


def shared_services(
    ctx: AppContext, loader: UnderstandingLoader = load_understanding
) -> FlowServices:
    """Return the process's flow services for ``ctx`` (one per context)."""
    services = _SHARED.get(id(ctx))
    if services is None or services.ctx is not ctx:
        services = FlowServices(ctx, loader)
        _SHARED[id(ctx)] = services
    return services
