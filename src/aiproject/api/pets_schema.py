"""Spec 04's request bodies and the OpenAPI description of its answers.

The routes in :mod:`aiproject.api.pets` read their bodies themselves (to answer in the spec's
shapes), so FastAPI cannot derive these; the models also validate the bodies.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

MAX_ID = 2**31 - 1  # ids are 32-bit integers in the database


class SummaryBody(BaseModel):
    """The aipic/summary request body."""

    model_config = ConfigDict(extra="ignore")

    img_url: str = Field(min_length=1, max_length=16 * 1024 * 1024)
    sub_module_type: StrictInt
    pet_profile_id: StrictInt = Field(ge=0, le=MAX_ID)
    session_id: str = Field(min_length=1, max_length=64)


class ProfileBody(BaseModel):
    """A pet profile as clients send it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    species: Literal["cat", "dog", "other"]
    breed: str = Field(default="", max_length=64)
    age_years: float | None = Field(default=None, ge=0, le=40)
    weight_kg: float | None = Field(default=None, gt=0, le=200)
    conditions: list[str] = Field(default=[], max_length=20)


class PetRefusal(BaseModel):
    """A refusal of the JSON endpoints."""

    code: str
    message: str


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """Return the OpenAPI extra that documents a body the route reads itself."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


SSE_ONLY: dict[str, Any] = {"content": {"text/event-stream": {}}}
# The stream's answers, refusals included, are events (or legacy text), never JSON.
STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {**SSE_ONLY, "description": "the analysis as events or legacy text"},
    "4XX": {**SSE_ONLY, "description": "refused: a lone error event or line"},
    "5XX": {**SSE_ONLY, "description": "failed: a lone error event or line"},
}
REFUSALS: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": PetRefusal, "description": "refused; docs/protocols/pets.md lists the codes"},
    "5XX": {"model": PetRefusal, "description": "failed on the server's side"},
}
