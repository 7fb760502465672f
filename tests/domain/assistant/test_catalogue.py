"""The built-in catalogue's content and the loader's checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aiproject.domain.assistant.catalog import ServiceItem, load_catalogue, load_item
from aiproject.domain.assistant.errors import CatalogueError
from aiproject.domain.assistant.fields import BASIC

# The items the issue names, by id.
NAMED = {
    "id_card_first", "id_card_renewal", "id_card_lost", "hukou_transfer", "newborn_hukou",
    "hukou_book_reissue", "residence_permit", "passport", "hk_macao_permit", "taiwan_permit",
    "driving_license", "vehicle_registration", "social_security_card", "medical_insurance",
    "maternity_allowance", "housing_fund_withdrawal", "marriage_registration",
    "divorce_registration", "birth_certificate", "business_license", "individual_business",
    "real_estate_registration", "individual_income_tax", "unemployment_registration",
    "retirement", "disability_certificate", "senior_card", "minimum_living_allowance",
    "school_enrollment",
}  # fmt: skip

VALID = """
id = "dog_licence"
name = "犬只登记"
aliases = ["养狗登记", "办狗证"]
phrasings = ["我家新养了一条狗要登记"]
department = "所在地公安机关犬类管理窗口"
conditions = ["在限养区内饲养犬只"]
materials = ["居民身份证", "犬只免疫证明"]
steps = ["提交申请", "领取登记证"]
fees = "按当地标准"
time_limit = "当场办结"
fields = ["address"]
"""


def test_builtin_catalogue_covers_the_named_items(items: tuple[ServiceItem, ...]) -> None:
    assert len(items) >= 30
    assert NAMED <= {item.id for item in items}
    assert len({item.name for item in items}) == len(items)


def test_every_item_is_complete(items: tuple[ServiceItem, ...]) -> None:
    for item in items:
        assert item.aliases and item.materials and item.steps and item.conditions, item.id
        assert item.department and item.fees and item.time_limit, item.id
        assert set(item.fields) <= set(BASIC), item.id
        assert list(item.fields) == [f for f in BASIC if f in item.fields], item.id
        assert len(item.examples) >= 5, item.id
        # No invented contact details: no phone-number-like digit runs in what is shown.
        shown = "".join((item.department, *item.materials, *item.steps, item.online, item.fees))
        assert not re.search(r"\d{7,}", shown), item.id


def test_groups_have_several_members(items: tuple[ServiceItem, ...]) -> None:
    groups: dict[str, list[str]] = {}
    for item in items:
        groups.setdefault(item.group, []).append(item.id)
    assert sorted(groups["身份证"]) == ["id_card_first", "id_card_lost", "id_card_renewal"]
    assert sorted(groups["户口"]) == ["hukou_book_reissue", "hukou_transfer", "newborn_hukou"]


def test_operator_directory_adds_and_replaces(tmp_path: Path) -> None:
    (tmp_path / "dog.toml").write_text(VALID, encoding="utf-8")
    replaced = VALID.replace('id = "dog_licence"', 'id = "passport"').replace("犬只登记", "护照")
    (tmp_path / "passport.toml").write_text(replaced, encoding="utf-8")
    items = {item.id: item for item in load_catalogue([tmp_path])}
    assert items["dog_licence"].name == "犬只登记"
    assert items["dog_licence"].group == "犬只登记"
    assert items["passport"].department == "所在地公安机关犬类管理窗口"
    only = load_catalogue([tmp_path], builtin=False)
    assert {item.id for item in only} == {"dog_licence", "passport"}


@pytest.mark.parametrize(
    ("text", "code", "words"),
    [
        ("id = [", "catalogue-invalid", "not valid UTF-8 TOML"),
        (VALID.replace('fees = "按当地标准"\n', ""), "catalogue-invalid", "fees: Field required"),
        (VALID + 'colour = "red"\n', "catalogue-invalid", "colour: Extra inputs"),
        (VALID.replace('["address"]', '["phone"]'), "catalogue-invalid", "required info"),
        (VALID.replace('["address"]', '["shoe_size"]'), "catalogue-invalid", "fields.0"),
        (VALID.replace('id = "dog_licence"', 'id = "Dog Licence"'), "catalogue-invalid", "id:"),
        (
            VALID.replace('materials = ["居民身份证", "犬只免疫证明"]', "materials = []"),
            "catalogue-invalid",
            "materials",
        ),
        (
            VALID.replace('["养狗登记", "办狗证"]', '["养狗登记", "  "]'),
            "catalogue-invalid",
            "1 to 300 characters",
        ),
    ],
)
def test_bad_files_are_refused_with_the_file_and_key(
    tmp_path: Path, text: str, code: str, words: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CatalogueError) as caught:
        load_item(path)
    assert caught.value.code == code
    assert str(path) in caught.value.message and words in caught.value.message


def test_duplicate_names_empty_and_missing_directories(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(VALID, encoding="utf-8")
    (tmp_path / "b.toml").write_text(VALID.replace("dog_licence", "dog_two"), encoding="utf-8")
    with pytest.raises(CatalogueError) as caught:
        load_catalogue([tmp_path], builtin=False)
    assert caught.value.code == "catalogue-duplicate"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CatalogueError) as caught:
        load_catalogue([empty], builtin=False)
    assert caught.value.code == "catalogue-empty"
    with pytest.raises(CatalogueError) as caught:
        load_catalogue([tmp_path / "nowhere"])
    assert caught.value.code == "catalogue-missing"


def test_binary_and_oversized_files(tmp_path: Path) -> None:
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CatalogueError) as caught:
        load_item(binary)
    assert caught.value.code == "catalogue-invalid"
    huge = tmp_path / "huge.toml"
    huge.write_text(VALID + "# " + "x" * 300_000 + "\n", encoding="utf-8")
    with pytest.raises(CatalogueError) as caught:
        load_item(huge)
    assert caught.value.code == "catalogue-file-too-large"
