"""What devices report, reset and ask for (spec 03 report, reset and get), and report rules."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiproject.config import LingxiSettings
from aiproject.domain.lingxi.commands import ActionCatalogue
from aiproject.domain.lingxi.messages import (
    DATA_RESPONSE,
    RESET_COMPLETE,
    Action,
    Commands,
    GetRequest,
    LingxiError,
    ReportRequest,
    ResetRequest,
)
from aiproject.store.lingxi import DeviceState, LingxiStore, ReportRecord

# details.type values of a reset that mean every counter.
ALL_COUNTERS = frozenset({"count", "counts", "all"})
_COUNT_EVENT = re.compile(r"^get([A-Z][A-Za-z0-9]*)Count$")


@dataclass(frozen=True)
class ReportRule:
    """Commands to send when a reported value crosses a threshold."""

    name: str
    metric: str
    below: bool
    threshold: float
    actions: tuple[Action, ...]

    def fires(self, before: int | None, after: int | None) -> bool:
        """Say whether the value crossed the threshold with this report (not merely stays)."""
        if after is None:
            return False
        return self._holds(after) and (before is None or not self._holds(before))

    def _holds(self, value: int) -> bool:
        return value < self.threshold if self.below else value > self.threshold


def rules_from_settings(
    settings: LingxiSettings, catalogue: ActionCatalogue
) -> tuple[ReportRule, ...]:
    """Return the configured report rules, their actions checked against the catalogue.

    Raises:
        LingxiError: ``bad-rule`` naming the rule and the action at fault.
    """
    rules = []
    for rule in settings.rules:
        actions = []
        for entry in rule.actions:
            name, params = entry.get("action"), entry.get("params", {})
            if not isinstance(name, str) or not isinstance(params, dict):
                raise LingxiError("bad-rule", f"rule {rule.name!r}: actions are {{action, params}}")
            try:
                actions.append(catalogue.action(name, params))
            except LingxiError as err:
                raise LingxiError("bad-rule", f"rule {rule.name!r}: {err.message}") from None
        below = rule.when == "below"
        rules.append(ReportRule(rule.name, rule.metric, below, rule.threshold, tuple(actions)))
    return tuple(rules)


def snake(name: str) -> str:
    """Return a CamelCase name in snake_case (``HeadTouch`` -> ``head_touch``)."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


class DeviceRecords:
    """Stores what devices report and answers what they ask for."""

    def __init__(
        self, store: LingxiStore, settings: LingxiSettings, catalogue: ActionCatalogue
    ) -> None:
        self._store = store
        self._rules = rules_from_settings(settings, catalogue)
        try:
            self._zone = ZoneInfo(settings.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise LingxiError(
                "bad-timezone", f"lingxi.timezone={settings.timezone!r} is not a known zone"
            ) from None

    async def report(self, request: ReportRequest) -> Commands | None:
        """Store a report; return the commands of the rules it makes fire, if any."""
        counts: Counter[str] = Counter()
        for event in request.events:
            counts[event.name] += int(event.params.get("count", 1))
        change = await self._store.record_report(
            ReportRecord(
                device_id=request.device_id,
                session_id=request.session_id,
                device_ts=request.timestamp_ms,
                counts=dict(counts),
                events=[{"event": e.name, "params": dict(e.params)} for e in request.events],
                battery_level=request.battery_level,
                volume_level=request.volume_level,
            )
        )
        actions = [
            action
            for rule in self._rules
            if rule.fires(change.before.metric(rule.metric), change.after.metric(rule.metric))
            for action in rule.actions
        ]
        return Commands(tuple(actions)) if actions else None

    async def reset(self, request: ResetRequest) -> Commands:
        """Zero the counters ``request.target`` names (``count``: all) and confirm."""
        names = None if request.target in ALL_COUNTERS else [request.target]
        await self._store.reset_counters(request.device_id, names)
        return Commands((Action(RESET_COMPLETE, {"status": "success"}),))

    async def get(self, request: GetRequest) -> Commands:
        """Answer every requested event in one ``data_response``; list the unknown ones."""
        state = await self._store.device_state(request.device_id)
        params: dict[str, Any] = {}
        unknown: list[str] = []
        for event in request.events:
            answer = self._answer(event.name, state)
            if answer is None:
                unknown.append(event.name)
            else:
                params.update(answer)
        if unknown:
            params["unknown_events"] = unknown
        return Commands((Action(DATA_RESPONSE, params),))

    def _answer(self, name: str, state: DeviceState) -> Mapping[str, Any] | None:
        """Return the data one get event asks for, or None for an event we do not know."""
        now = datetime.now(self._zone)
        fixed: dict[str, Mapping[str, Any]] = {
            "getCurrentTime": {"current_time": now.strftime("%Y-%m-%d %H:%M:%S")},
            "getCurrentDate": {"current_date": now.strftime("%Y-%m-%d")},
            "getTimestamp": {"timestamp": int(now.timestamp() * 1000)},
            "getBatteryLevel": {"battery_level": state.battery_level},
            "getVolumeLevel": {"volume_level": state.volume_level},
            "getCounts": {"counts": dict(sorted(state.counters.items()))},
        }
        fixed["getCount"] = fixed["getCounters"] = fixed["getCounts"]
        if name in fixed:
            return fixed[name]
        match = _COUNT_EVENT.match(name)
        if match:
            counter = snake(match.group(1))
            return {f"{counter}_count": state.counters.get(counter, 0)}
        return None
