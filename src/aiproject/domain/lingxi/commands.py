"""The catalogue of device actions: parameter schemas, phrase rules, and checks of LLM output.

The built-in catalogue (``domain/lingxi/data/actions.json``) is replaced by
``lingxi.catalogue_path`` when set and amended by ``lingxi.actions``. Each action has a
description, a confirmation phrase (``say``, may use ``{param}``), regular expressions that
ask for it in what the user said (a named group captures a parameter), and parameters in a
small JSON-schema subset (type, minimum, maximum, enum, default, and ``units``: words after
a spoken number that give the parameter, as in 摇尾巴5秒).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from aiproject.config import LingxiSettings
from aiproject.domain.lingxi.messages import Action, LingxiError

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_TYPES = ("integer", "number", "string", "boolean")
_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4}
_CN_DIGITS |= {"五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_NUMBER = r"[0-9]+(?:\.[0-9]+)?|[零〇一二两三四五六七八九十百]+"
_CLAUSE_END = re.compile(r"[，,。！？!?；;\n]")
# A request preceded by one of these is a refusal ("别摇尾巴了").
_NEGATION = re.compile(r"(?:不要|不用|不许|不准|别|不)再?$|(?:don't|do not|never)\s+$")
# An action talked about rather than asked for: an ability or a liking (你会跳舞吗, 喜欢转圈),
# a why-question, or something told (跳舞了, 跳舞比赛, 摇尾巴的故事). Measured on labelled
# requests (docs/benchmarks.md): without these, 7 of 20 remarks made the device act.
_MENTION_BEFORE = re.compile(r"(?:(?<![一待])会|喜欢|爱|讨厌|怕)$|为什么|为啥|怎么会")
_MENTION_AFTER = re.compile(r"了|过|的|比赛|视频|故事|电影|节目")
_SPOKEN_SMALL = "零一两三四五六七八九十"


def parse_number(text: str) -> float | None:
    """Return the value of ``text`` in digits or Chinese numerals below 1000 (两 is 2)."""
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", text):
        return float(text)
    total, digit = 0, 0
    for ch in text:
        if ch in _CN_DIGITS:
            digit = _CN_DIGITS[ch]
        elif ch in "十百":
            total += (digit or 1) * (10 if ch == "十" else 100)
            digit = 0
        else:
            return None
    return float(total + digit) if text else None


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of an action."""

    name: str
    type: str
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[str, ...] | None = None
    default: Any = None  # None: the parameter is required
    units: tuple[str, ...] = ()

    def check(self, value: Any) -> Any:
        """Return ``value`` as this parameter's type, numbers clamped to the range.

        Raises:
            ValueError: the value has the wrong type or is not one of ``enum``.
        """
        if self.type in ("integer", "number"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{self.name} must be a number, not {value!r}")
            if self.type == "integer" and value != int(value):
                raise ValueError(f"{self.name} must be a whole number, not {value!r}")
            number = float(value)
            if self.minimum is not None:
                number = max(number, self.minimum)
            if self.maximum is not None:
                number = min(number, self.maximum)
            return int(number) if self.type == "integer" else number
        if self.type == "boolean":
            if not isinstance(value, bool):
                raise ValueError(f"{self.name} must be true or false, not {value!r}")
            return value
        if not isinstance(value, str) or len(value) > 200:
            raise ValueError(f"{self.name} must be a short string, not {value!r:.40}")
        if self.enum is not None and value not in self.enum:
            raise ValueError(f"{self.name} must be one of {', '.join(self.enum)}")
        return value

    def schema(self) -> dict[str, Any]:
        """Return the JSON schema of this parameter."""
        schema: dict[str, Any] = {"type": self.type}
        if self.description:
            schema["description"] = self.description
        if self.enum is not None:
            schema["enum"] = list(self.enum)
        for key in ("minimum", "maximum"):
            bound = getattr(self, key)
            if bound is not None:
                schema[key] = int(bound) if self.type == "integer" else bound
        return schema


@dataclass(frozen=True)
class ActionSpec:
    """One action the device can perform."""

    name: str
    description: str
    say: str
    phrases: tuple[re.Pattern[str], ...] = ()
    params: tuple[ParamSpec, ...] = ()

    def make(self, params: Mapping[str, Any]) -> Action:
        """Return the action with checked parameters, defaults filled in, unknown ones dropped.

        Raises:
            LingxiError: ``bad-action`` when a parameter is missing or invalid.
        """
        checked: dict[str, Any] = {}
        for spec in self.params:
            value = params.get(spec.name, spec.default)
            if value is None:
                raise LingxiError("bad-action", f"{self.name}: parameter {spec.name} is missing")
            try:
                checked[spec.name] = spec.check(value)
            except ValueError as err:
                raise LingxiError("bad-action", f"{self.name}: {err}") from None
        return Action(self.name, checked)

    def spoken(self, action: Action) -> str:
        """Return the confirmation phrase with the action's parameters in it."""
        values = {
            key: _SPOKEN_SMALL[value] if isinstance(value, int) and 0 <= value <= 10 else value
            for key, value in action.params.items()
        }
        return self.say.format_map(_Keep(values))

    def schema(self) -> dict[str, Any]:
        """Return the JSON schema of one ``{"action", "params"}`` object (strict style)."""
        return {
            "type": "object",
            "properties": {
                "action": {"type": "string", "enum": [self.name]},
                "params": {
                    "type": "object",
                    "properties": {p.name: p.schema() for p in self.params},
                    "required": [p.name for p in self.params],
                    "additionalProperties": False,
                },
            },
            "required": ["action", "params"],
            "additionalProperties": False,
        }


class _Keep(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class ActionCatalogue:
    """The actions a device understands, found in speech by phrase rules or chosen by an LLM."""

    def __init__(self, actions: Iterable[ActionSpec], *, max_actions: int = 5) -> None:
        self._actions = {action.name: action for action in actions}
        self.max_actions = max_actions

    @classmethod
    def from_settings(cls, settings: LingxiSettings) -> ActionCatalogue:
        """Load the configured catalogue and apply the per-action overrides.

        Raises:
            LingxiError: ``bad-catalogue`` naming the file, action and field at fault.
        """
        if settings.catalogue_path is not None:
            source, text = str(settings.catalogue_path), _read(settings.catalogue_path)
        else:
            resource = files("aiproject.domain.lingxi").joinpath("data/actions.json")
            source, text = "built-in catalogue", resource.read_text(encoding="utf-8")
        try:
            entries = json.loads(text)["actions"]
        except (ValueError, KeyError, TypeError) as err:
            raise LingxiError("bad-catalogue", f"{source}: not a catalogue: {err}") from None
        if not isinstance(entries, dict):
            raise LingxiError("bad-catalogue", f"{source}: 'actions' must be an object")
        merged = {name: dict(entry) for name, entry in entries.items()}
        for name, override in settings.actions.items():
            merged[name] = {**merged.get(name, {}), **override}
        return cls(
            _action(name, entry, source)
            for name, entry in merged.items()
            if entry.get("enabled", True)
        )

    @property
    def names(self) -> list[str]:
        """Return the action names in catalogue order."""
        return list(self._actions)

    def get(self, name: str) -> ActionSpec | None:
        """Return the action called ``name``, if the catalogue has it."""
        return self._actions.get(name)

    def action(self, name: str, params: Mapping[str, Any]) -> Action:
        """Return a checked action.

        Raises:
            LingxiError: ``bad-action`` for an unknown action or invalid parameters.
        """
        spec = self._actions.get(name)
        if spec is None:
            raise LingxiError("bad-action", f"the catalogue has no action {name!r}")
        return spec.make(params)

    def match(self, text: str) -> tuple[Action, ...]:
        """Return the actions ``text`` asks for, in the order it asks, by phrase rules."""
        text = re.sub(r"(?<=[\u4e00-\u9fff])\s+(?=[\u4e00-\u9fff])", "", text.lower())
        hits = self._hits(text)
        actions: list[Action] = []
        for index, (at, spec) in enumerate(hits):
            if _NEGATION.search(text[: at.start()]) or spec.name in {a.name for a in actions}:
                continue
            if _mentioned(text, at):
                continue
            # Numbers said with a request belong to it up to the next request or clause.
            limit = hits[index + 1][0].start() if index + 1 < len(hits) else len(text)
            clause_end = _CLAUSE_END.search(text, at.end())
            window = text[at.start() : min(limit, clause_end.start() if clause_end else limit)]
            try:
                actions.append(spec.make(_spoken_params(spec, at, window)))
            except LingxiError:
                continue  # a required parameter was not said ("调一下音量")
            if len(actions) == self.max_actions:
                break
        return tuple(actions)

    def _hits(self, text: str) -> list[tuple[re.Match[str], ActionSpec]]:
        """Return the phrase matches in ``text``, earliest first, overlaps left out."""
        found = [
            (at, spec)
            for spec in self._actions.values()
            for pattern in spec.phrases
            for at in pattern.finditer(text)
            if at.end() > at.start()
        ]
        found.sort(key=lambda hit: (hit[0].start(), -hit[0].end()))
        hits: list[tuple[re.Match[str], ActionSpec]] = []
        for hit in found:
            if not hits or hit[0].start() >= hits[-1][0].end():
                hits.append(hit)
        return hits

    def from_model(self, value: Any) -> tuple[Action, ...]:
        """Return the valid actions of an LLM's JSON answer; invalid entries are logged, dropped."""
        items = value.get("actions") if isinstance(value, dict) else None
        if not isinstance(items, list):
            log.warning("lingxi: the model's actions are not a list: %.200r", value)
            return ()
        actions: list[Action] = []
        for item in items[: self.max_actions]:
            name = item.get("action") if isinstance(item, dict) else None
            params = item.get("params", {}) if isinstance(item, dict) else None
            try:
                if not isinstance(name, str) or not isinstance(params, dict):
                    raise LingxiError("bad-action", f"not an action object: {item!r:.100}")
                action = self.action(name, params)
            except LingxiError as err:
                log.warning("lingxi: dropped an action the model chose: %s", err.message)
                continue
            if action.name not in {a.name for a in actions}:
                actions.append(action)
        return tuple(actions)

    def json_schema(self) -> dict[str, Any]:
        """Return the JSON schema an LLM's action choice must satisfy."""
        return {
            "title": "device_actions",
            "type": "object",
            "properties": {
                "actions": {
                    "type": "array",
                    "maxItems": self.max_actions,
                    "items": {"anyOf": [spec.schema() for spec in self._actions.values()]},
                }
            },
            "required": ["actions"],
            "additionalProperties": False,
        }

    def describe(self) -> str:
        """Return one line per action for a prompt: name, description and parameters."""
        lines = []
        for spec in self._actions.values():
            params = ", ".join(_describe_param(p) for p in spec.params)
            lines.append(f"- {spec.name}: {spec.description}" + (f" ({params})" if params else ""))
        return "\n".join(lines)

    def confirmation(self, actions: Sequence[Action], template: str) -> str:
        """Return the sentence that confirms ``actions`` ("好的,我来摇摇尾巴!")."""
        spoken = [spec.spoken(a) for a in actions if (spec := self._actions.get(a.name))]
        return template.replace("{actions}", ",再".join(spoken))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise LingxiError("bad-catalogue", f"cannot read {path}: {err.strerror}") from None


def _mentioned(text: str, hit: re.Match[str]) -> bool:
    """Say whether the phrase at ``hit`` is talked about, not asked for (see _MENTION_*)."""
    starts = [end.end() for end in _CLAUSE_END.finditer(text, 0, hit.start())]
    before = text[starts[-1] if starts else 0 : hit.start()]
    return bool(_MENTION_BEFORE.search(before) or _MENTION_AFTER.match(text, hit.end()))


def _spoken_params(spec: ActionSpec, hit: re.Match[str], window: str) -> dict[str, Any]:
    """Return the parameters said with a request: named groups first, then number+unit."""
    params: dict[str, Any] = {}
    for param in spec.params:
        said = hit.groupdict().get(param.name)
        if said is None and param.units:
            units = "|".join(re.escape(unit) for unit in param.units)
            near = re.search(rf"({_NUMBER})\s*(?:{units})", window)
            said = near.group(1) if near else None
        value = parse_number(said) if said else None
        if value is not None:
            params[param.name] = value if param.type == "number" else int(value)
    return params


def _describe_param(param: ParamSpec) -> str:
    text = f"{param.name}: {param.description or param.type}"
    if param.minimum is not None and param.maximum is not None:
        text += f" {param.minimum:g}-{param.maximum:g}"
    if param.enum:
        text += " " + "/".join(param.enum)
    return text


def _action(name: str, entry: Mapping[str, Any], source: str) -> ActionSpec:
    """Build one action from its catalogue entry, refusing anything malformed."""
    where = f"{source}: action {name!r}"
    if not _NAME.match(name):
        raise LingxiError("bad-catalogue", f"{where}: names are lower_snake_case")
    unknown = set(entry) - {"enabled", "description", "say", "phrases", "params"}
    if unknown:
        raise LingxiError("bad-catalogue", f"{where}: unknown fields {sorted(unknown)}")
    description, say = entry.get("description", name), entry.get("say", name)
    phrases, params = entry.get("phrases", []), entry.get("params", {})
    if not isinstance(description, str) or not isinstance(say, str):
        raise LingxiError("bad-catalogue", f"{where}: description and say must be strings")
    if not isinstance(phrases, list) or not isinstance(params, dict):
        raise LingxiError("bad-catalogue", f"{where}: phrases is a list, params an object")
    try:
        patterns = tuple(re.compile(str(p)) for p in phrases)
    except re.error as err:
        raise LingxiError("bad-catalogue", f"{where}: bad phrase pattern: {err}") from None
    spec = ActionSpec(
        name, description, say, patterns, tuple(_param(k, v, where) for k, v in params.items())
    )
    for param in spec.params:
        if param.default is not None:
            try:
                param.check(param.default)
            except ValueError as err:
                raise LingxiError("bad-catalogue", f"{where}: bad default: {err}") from None
    return spec


def _param(name: str, entry: Any, where: str) -> ParamSpec:
    if not isinstance(entry, dict) or entry.get("type", "integer") not in _TYPES:
        raise LingxiError("bad-catalogue", f"{where}: parameter {name!r} needs a known type")
    unknown = set(entry) - {"type", "description", "minimum", "maximum", "enum", "default", "units"}
    if unknown or not _NAME.match(name):
        raise LingxiError("bad-catalogue", f"{where}: parameter {name!r} is malformed")
    enum = entry.get("enum")
    for bound in ("minimum", "maximum"):
        if not isinstance(entry.get(bound, 0), int | float):
            raise LingxiError("bad-catalogue", f"{where}: parameter {name!r}: {bound} is a number")
    return ParamSpec(
        name=name,
        type=entry.get("type", "integer"),
        description=str(entry.get("description", "")),
        minimum=entry.get("minimum"),
        maximum=entry.get("maximum"),
        enum=tuple(str(v) for v in enum) if isinstance(enum, list) else None,
        default=entry.get("default"),
        units=tuple(str(u) for u in entry.get("units", [])),
    )
