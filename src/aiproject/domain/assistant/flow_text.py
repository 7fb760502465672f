"""The handshake's ``flow``: a service item's procedure as text a kiosk can show or say.

One paragraph per item: where to go, who may apply, what to bring, the steps, fees and time
limit. When the request named only a family of items ("身份证"), the text says which items
the family has and asks which one is meant; when the classifier's call was close, it names
the runners-up. A request that named no service gets a clarifying question instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiproject.domain.assistant.catalog import ServiceItem

CLARIFY = (
    "抱歉，我还不确定您要办理哪项业务。请说出要办的事情，比如“我要办身份证”、"
    "“补办户口本”、“申领社保卡”或“办理营业执照”。"
)


def _numbered(lines: Sequence[str]) -> str:
    return "；".join(f"{i}. {line.rstrip('。；;')}" for i, line in enumerate(lines, 1))


def procedure(item: ServiceItem) -> str:
    """Return how ``item`` is done, in one paragraph."""
    parts = [f"办理{item.name}，请到{item.department.rstrip('。')}。"]
    if item.conditions:
        parts.append(f"办理条件：{_numbered(item.conditions)}。")
    if item.materials:
        parts.append(f"需要携带：{_numbered(item.materials)}。")
    if item.steps:
        parts.append(f"办理流程：{_numbered(item.steps)}。")
    if item.fees:
        parts.append(f"费用：{item.fees.rstrip('。')}。")
    if item.time_limit:
        parts.append(f"办理时限：{item.time_limit.rstrip('。')}。")
    if item.online:
        parts.append(f"{item.online.rstrip('。')}。")
    return "".join(parts)


def group_question(group: str, members: Sequence[ServiceItem]) -> str:
    """Return the question that asks which item of a family is meant."""
    names = "、".join(f"“{member.name}”" for member in members)
    return f"{group}业务包括{names}，请告诉我您要办理的是哪一项。"


def flow_text(
    chosen: Sequence[ServiceItem],
    *,
    groups: Sequence[tuple[str, Sequence[ServiceItem]]] = (),
    alternatives: Sequence[ServiceItem] = (),
) -> str:
    """Return the ``flow`` for the chosen items.

    Args:
        chosen: the items matched, in the order the citizen named them.
        groups: families named without saying which member, with their members.
        alternatives: close runners-up worth naming.
    """
    if not chosen:
        return CLARIFY
    paragraphs = [group_question(group, members) for group, members in groups]
    if groups:
        paragraphs.append("先为您介绍最接近的一项：")
    paragraphs.extend(procedure(item) for item in chosen)
    others = [item for item in alternatives if item not in chosen]
    if others:
        names = "、".join(f"“{item.name}”" for item in others)
        paragraphs.append(f"如果您要办理的是{names}，请告诉我。")
    return "\n".join(paragraphs)
