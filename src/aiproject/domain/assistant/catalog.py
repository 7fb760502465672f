"""The service catalogue: one TOML file per government-service item, validated at load.

Files are read with pydantic (clear errors naming the file and the key) and become frozen
:class:`ServiceItem` values. The built-in items live in ``data/services/``; operators add
directories of their own (``assistant.catalogue_dirs``), whose items replace built-in ones
with the same ``id``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aiproject.domain.assistant.errors import CatalogueError
from aiproject.domain.assistant.fields import BASIC, REQUIRED, FieldName

BUILTIN_DIR = Path(__file__).resolve().parent / "data" / "services"
MAX_FILE_BYTES = 256 * 1024


@dataclass(frozen=True)
class ServiceItem:
    """One government service: how citizens name it and how it is done."""

    id: str
    name: str  # what the handshake's `classify` says
    group: str  # the family of closely related items ("身份证"); the name when alone
    aliases: tuple[str, ...]
    phrasings: tuple[str, ...]  # how citizens typically ask for it
    department: str
    conditions: tuple[str, ...]
    materials: tuple[str, ...]
    steps: tuple[str, ...]
    fees: str
    time_limit: str
    fields: tuple[FieldName, ...]  # basic fields the item needs besides the required info
    online: str = ""
    notes: tuple[str, ...] = ()

    @property
    def examples(self) -> tuple[str, ...]:
        """Return every text that names the item: name, aliases and phrasings."""
        return (self.name, *self.aliases, *self.phrasings)


class _ItemFile(BaseModel):
    """The schema of one item file."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")
    name: str = Field(min_length=2, max_length=40)
    group: str = Field(default="", max_length=40)
    aliases: list[str] = Field(min_length=1, max_length=100)
    phrasings: list[str] = Field(default=[], max_length=200)
    department: str = Field(min_length=2)
    conditions: list[str] = Field(min_length=1)
    materials: list[str] = Field(min_length=1)
    steps: list[str] = Field(min_length=1)
    fees: str = Field(min_length=1)
    time_limit: str = Field(min_length=1)
    fields: list[FieldName] = []
    online: str = ""
    notes: list[str] = []

    @field_validator("aliases", "phrasings", "conditions", "materials", "steps", "notes")
    @classmethod
    def _no_blank(cls, values: list[str]) -> list[str]:
        cleaned = [value.strip() for value in values]
        if any(not value or len(value) > 300 for value in cleaned):
            raise ValueError("entries must be 1 to 300 characters")
        return cleaned

    @field_validator("fields")
    @classmethod
    def _basic_only(cls, values: list[FieldName]) -> list[FieldName]:
        required = [value.value for value in values if value in REQUIRED]
        if required:
            raise ValueError(f"{required} are required info, asked for every item anyway")
        return values

    def freeze(self) -> ServiceItem:
        """Return the immutable item."""
        return ServiceItem(
            id=self.id,
            name=self.name,
            group=self.group or self.name,
            aliases=tuple(self.aliases),
            phrasings=tuple(self.phrasings),
            department=self.department,
            conditions=tuple(self.conditions),
            materials=tuple(self.materials),
            steps=tuple(self.steps),
            fees=self.fees,
            time_limit=self.time_limit,
            fields=tuple(f for f in BASIC if f in self.fields),
            online=self.online,
            notes=tuple(self.notes),
        )


def load_item(path: Path) -> ServiceItem:
    """Read and validate one item file."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise CatalogueError("catalogue-file-too-large", f"{path}: over {MAX_FILE_BYTES} bytes")
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise CatalogueError("catalogue-unreadable", f"{path}: {err}") from err
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise CatalogueError("catalogue-invalid", f"{path}: not valid UTF-8 TOML: {err}") from err
    try:
        return _ItemFile.model_validate(data).freeze()
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in err.errors()
        )
        raise CatalogueError("catalogue-invalid", f"{path}: {problems}") from err


def load_directory(directory: Path) -> list[ServiceItem]:
    """Read every ``*.toml`` item in a directory, in file-name order."""
    if not directory.is_dir():
        raise CatalogueError("catalogue-missing", f"{directory} is not a directory")
    return [load_item(path) for path in sorted(directory.glob("*.toml"))]


def load_catalogue(
    extra_dirs: Iterable[Path] = (), *, builtin: bool = True
) -> tuple[ServiceItem, ...]:
    """Return the built-in items (optionally) merged with operators' directories.

    A later item with an id already seen replaces the earlier one; two items with one name
    are refused, since the handshake's ``classify`` names items by name.
    """
    items: dict[str, ServiceItem] = {}
    sources = [BUILTIN_DIR] if builtin else []
    for directory in [*sources, *extra_dirs]:
        for item in load_directory(directory):
            items[item.id] = item
    return check_unique(list(items.values()))


def check_unique(items: Sequence[ServiceItem]) -> tuple[ServiceItem, ...]:
    """Refuse an empty catalogue and names used twice; return the items as a tuple."""
    if not items:
        raise CatalogueError("catalogue-empty", "the service catalogue has no items")
    seen: dict[str, str] = {}
    for item in items:
        if item.name in seen:
            raise CatalogueError(
                "catalogue-duplicate", f"items {seen[item.name]} and {item.id} share {item.name!r}"
            )
        seen[item.name] = item.id
    return tuple(items)
