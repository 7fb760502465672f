"""Module 1: is there a cat or a dog in the photo, and which ImageNet class is it closest to.

ImageNet-1k has 118 dog-breed classes and 5 domestic-cat classes; a mixed or unlisted breed
lands on the closest class, so the answer is a class name, not a breed certificate.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiproject.engines.image.base import Label
from aiproject.engines.image.labels import PetGuess, PetKind, pet_kind

NOTE = (
    "识别基于 ImageNet 的 1000 个类别(其中 118 个犬种类别、5 个家猫类别), "
    "混血或未收录的品种会归到最相近的类别, 这不是品种鉴定。"
)

KIND_WORDS = {PetKind.CAT: "猫", PetKind.DOG: "狗"}

# Chinese names of the domestic-cat classes and of common dog-breed classes; the rest keep
# their English ImageNet name.
CHINESE_NAMES: dict[int, str] = {
    281: "虎斑猫",
    282: "虎纹猫",
    283: "波斯猫",
    284: "暹罗猫",
    285: "埃及猫",
    151: "吉娃娃",
    152: "日本狆",
    153: "马尔济斯犬",
    154: "京巴犬",
    155: "西施犬",
    157: "蝴蝶犬",
    161: "巴吉度猎犬",
    162: "比格犬",
    187: "约克夏㹴",
    195: "波士顿㹴",
    196: "迷你雪纳瑞",
    203: "西高地白㹴",
    207: "金毛寻回犬",
    208: "拉布拉多寻回犬",
    219: "可卡犬",
    230: "喜乐蒂牧羊犬",
    231: "苏格兰牧羊犬",
    232: "边境牧羊犬",
    234: "罗威纳犬",
    235: "德国牧羊犬",
    236: "杜宾犬",
    239: "伯恩山犬",
    242: "拳师犬",
    245: "法国斗牛犬",
    246: "大丹犬",
    247: "圣伯纳犬",
    249: "阿拉斯加雪橇犬",
    250: "西伯利亚哈士奇",
    251: "斑点狗",
    254: "巴哥犬",
    257: "大白熊犬",
    258: "萨摩耶",
    259: "博美犬",
    260: "松狮犬",
    263: "彭布罗克威尔士柯基",
    264: "卡迪根威尔士柯基",
    265: "玩具贵宾犬",
    266: "迷你贵宾犬",
    267: "标准贵宾犬",
}


def label_words(label: Label) -> str:
    """Return a class as ``English(中文)`` where a Chinese name is known."""
    chinese = CHINESE_NAMES.get(label.index)
    return f"{label.name}({chinese})" if chinese else label.name


def recognition_text(
    guess: PetGuess, labels: Sequence[Label], *, simple: bool, profile_species: str = ""
) -> str:
    """Describe what was recognised, briefly or as a report."""
    kind = KIND_WORDS[guess.kind]
    sure = round(100 * min(1.0, guess.score))
    mismatch = ""
    if profile_species in ("cat", "dog") and profile_species != guess.kind.value:
        recorded = KIND_WORDS[PetKind(profile_species)]
        mismatch = f"注意: 宠物档案记录的是{recorded}, 与图片不一致。"
    if simple:
        return (
            f"图片里是一只{kind}, 最接近的类别是{label_words(guess.breed)}, 把握约{sure}%。"
            f"{mismatch}{NOTE}"
        )
    same_kind = [label for label in labels if pet_kind(label.index) is guess.kind][:3]
    lines = [f"【识别结果】{kind}(把握约{sure}%)", "【最接近的类别】"]
    lines += [f"- {label_words(label)}: {round(100 * label.score)}%" for label in same_kind]
    if mismatch:
        lines.append(f"【档案对比】{mismatch}")
    lines.append(f"【说明】{NOTE}")
    return "\n".join(lines)
