"""A capable LLM (an OpenAI-compatible server, faked over real HTTP) settles unsure calls."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiproject.config import Settings
from aiproject.domain.assistant.classifier import ServiceCatalog
from aiproject.domain.assistant.referee import LLMReferee, referee_wanted
from aiproject.engines.llm.openai import OpenAICompatLLM
from tests.support.http_server import FakeHTTPServer, Reply, Request

# The rules' call on this one is close (临时身份证 0.940, 护照 0.932) and wrong.
UNSURE = "下周要去新加坡开会，出境证件还没有"
SURE = "我想把住房公积金提出来"


def _chunk(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


def _model(answer: str, status: int = 200) -> Callable[[Request], Reply]:
    def complete(request: Request) -> Reply:
        if status != 200:
            return Reply.json({"error": {"message": "overloaded"}}, status)
        return Reply.sse([_chunk(answer)])

    return complete


def _llm(settings: Settings, base_url: str) -> OpenAICompatLLM:
    engines = settings.engines.model_copy(deep=True)
    engines.llm.backend = "openai"
    engines.llm.openai.base_url = base_url
    engines.llm.openai.model = "fake-capable"
    engines.llm.openai.timeout_s = 10
    assert referee_wanted(settings.model_copy(update={"engines": engines}))
    return OpenAICompatLLM(engines.llm)


async def _classify(
    catalog: ServiceCatalog, settings: Settings, answer: str, text: str, status: int = 200
) -> tuple[Any, list[Request]]:
    with FakeHTTPServer({("POST", "/v1/chat/completions"): _model(answer, status)}) as server:
        llm = _llm(settings, f"{server.base_url}/v1")
        try:
            result = await LLMReferee(catalog, llm).classify(text)
        finally:
            await llm.aclose()
        return result, list(server.requests)


async def test_the_model_settles_a_close_call(catalog: ServiceCatalog, settings: Settings) -> None:
    rules = await catalog.classify(UNSURE)
    assert rules.items[0].id != "passport"  # the rules get this one wrong
    result, requests = await _classify(
        catalog, settings, json.dumps({"services": ["passport"]}), UNSURE
    )
    assert result.label == "护照" and result.items[0].id == "passport"
    (request,) = requests
    body = request.json()
    schema = body["response_format"]["json_schema"]["schema"]
    enum = schema["properties"]["services"]["items"]["enum"]
    assert set(enum) == set(catalog.by_id) and schema["additionalProperties"] is False
    assert "passport：护照" in body["messages"][0]["content"]
    assert body["messages"][-1] == {"role": "user", "content": UNSURE}
    assert body["temperature"] == 0.0


async def test_a_sure_call_does_not_ask_the_model(
    catalog: ServiceCatalog, settings: Settings
) -> None:
    result, requests = await _classify(catalog, settings, '{"services": []}', SURE)
    assert requests == [] and result.items[0].id == "housing_fund_withdrawal"


async def test_unusable_answers_fall_back_to_the_rules(
    catalog: ServiceCatalog, settings: Settings
) -> None:
    rules = await catalog.classify(UNSURE)
    for answer, status in [
        ('{"services": ["visa_to_mars"]}', 200),  # an id outside the catalogue
        ("not json at all", 200),
        ('{"services": "passport"}', 200),
        ('{"services": ["passport", "passport", "passport", "passport"]}', 200),
        ('{"services": ["passport"]}', 500),  # the server fails
    ]:
        result, requests = await _classify(catalog, settings, answer, UNSURE, status)
        assert requests, answer
        assert result == rules, answer


async def test_the_model_may_say_it_is_no_service_request(
    catalog: ServiceCatalog, settings: Settings
) -> None:
    result, _ = await _classify(catalog, settings, '{"services": []}', UNSURE)
    assert not result.is_service and result.label == ""


async def test_several_items_in_the_order_the_model_gives(
    catalog: ServiceCatalog, settings: Settings
) -> None:
    answer = json.dumps({"services": ["passport", "hk_macao_permit", "passport"]})
    result, _ = await _classify(catalog, settings, answer, UNSURE)
    assert result.label == "护照/港澳通行证"


def test_referee_wanted_only_with_a_capable_model(settings: Settings) -> None:
    assert not referee_wanted(settings)  # the embedded Gemma 270M is test-grade
