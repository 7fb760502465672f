"""Classification accuracy on requests written apart from the catalogue, and rejections."""

from __future__ import annotations

from aiproject.domain.assistant.classifier import ServiceCatalog
from tests.domain.assistant.requests import MULTI_REQUESTS, SERVICE_REQUESTS, UNRELATED_REQUESTS

MIN_TOP1 = 0.95


async def test_top1_accuracy_on_independent_requests(catalog: ServiceCatalog) -> None:
    assert len(SERVICE_REQUESTS) >= 200
    misses: list[str] = []
    top3 = 0
    for text, expected in SERVICE_REQUESTS:
        result = await catalog.classify(text)
        got = result.items[0].id if result.items else None
        if got != expected:
            misses.append(f"{text!r}: expected {expected}, got {got} ({result.label!r})")
        top3 += expected in [candidate.item.id for candidate in result.top]
    total = len(SERVICE_REQUESTS)
    top1 = (total - len(misses)) / total
    print(
        f"\nclassification top-1 {top1:.1%} ({total - len(misses)}/{total}), "
        f"top-3 {top3 / total:.1%}"
    )
    for miss in misses:
        print("  miss:", miss)
    assert top1 >= MIN_TOP1, misses


async def test_unrelated_requests_are_not_service_requests(catalog: ServiceCatalog) -> None:
    assert len(UNRELATED_REQUESTS) >= 30
    accepted = []
    for text in UNRELATED_REQUESTS:
        result = await catalog.classify(text)
        if result.is_service:
            accepted.append(f"{text!r} -> {result.label!r} (gate {result.gate_score:.2f})")
        else:
            assert result.label == "" and result.items == () and result.confidence == 0.0
    rejected = len(UNRELATED_REQUESTS) - len(accepted)
    print(f"\nunrelated rejected {rejected}/{len(UNRELATED_REQUESTS)}")
    assert not accepted


async def test_several_items_in_one_request_in_the_order_said(catalog: ServiceCatalog) -> None:
    for text, expected in MULTI_REQUESTS:
        result = await catalog.classify(text)
        assert tuple(item.id for item in result.items) == expected, (text, result.label)
        assert result.label == "/".join(match.label for match in result.matches)
        assert result.label.count("/") == len(expected) - 1


async def test_spec_example_names_the_group_when_the_member_is_unsaid(
    catalog: ServiceCatalog,
) -> None:
    result = await catalog.classify("我要办身份证")
    assert result.label == "身份证"  # the spec's handshake example
    (match,) = result.matches
    assert match.is_group and match.item.group == "身份证"
    assert {item.group for item in match.alternatives} == {"身份证"}
    assert match.alternatives  # the other members, for the flow text to offer


async def test_spec_example_with_two_items(catalog: ServiceCatalog) -> None:
    result = await catalog.classify("我要办身份证和户口本")
    assert result.label == "身份证/户口本补办"


async def test_specific_request_names_the_item(catalog: ServiceCatalog) -> None:
    result = await catalog.classify("我的身份证丢了")
    assert result.label == "身份证挂失补领"
    assert result.items[0].id == "id_card_lost"
    assert 0 < result.confidence <= 1
    assert len(result.top) == 3 and result.top[0].item.id == "id_card_lost"


async def test_empty_and_garbage_text_is_no_service(catalog: ServiceCatalog) -> None:
    for text in ["", "   ", "。。。", "asdfgh", "1234567"]:
        result = await catalog.classify(text)
        assert not result.is_service, text
        assert result.label == ""


async def test_classification_is_deterministic(catalog: ServiceCatalog) -> None:
    first = await catalog.classify("我想把公积金取出来")
    second = await catalog.classify("我想把公积金取出来")
    assert first == second


async def test_a_very_long_request_is_read_up_to_its_limit(catalog: ServiceCatalog) -> None:
    text = "我要办护照" + "和" * 50 + "还有港澳通行证" * 400
    result = await catalog.classify(text)
    assert result.is_service and len(result.text) == 300
    assert result.items[0].id in {"passport", "hk_macao_permit"}
