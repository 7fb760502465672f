"""From measurements and a pet's facts to advice: the rules table, urgency and the words.

Each rule names what it saw, the likely causes, what to do and the published first-aid
guidance it follows (``SOURCES``, reviewed when the table was written; see
docs/protocols/pets.md). The most urgent rule that fires sets the urgency. The text is
Chinese, like the spec, and always ends with a note that it is not a diagnosis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from aiproject.domain.pets.vomit import Colour, VomitMeasurements

DISCLAIMER = "本结果由图片颜色和纹理的自动测量生成, 仅供参考, 不能替代兽医的诊断。"


class Urgency(StrEnum):
    """How soon a vet should see the pet, least urgent first."""

    WATCH = "watch"
    SOON = "soon"
    NOW = "now"

    @property
    def rank(self) -> int:
        """Return 0 for WATCH up to 2 for NOW."""
        return list(Urgency).index(self)

    @property
    def words(self) -> str:
        """Return the urgency in words."""
        return {
            Urgency.WATCH: "居家观察",
            Urgency.SOON: "尽快就医(24小时内联系兽医)",
            Urgency.NOW: "立即就医",
        }[self]


@dataclass(frozen=True)
class Source:
    """Published guidance a rule follows."""

    title: str
    url: str


SOURCES: dict[str, Source] = {
    "hills-blood": Source(
        "Hill's Pet Nutrition: Dog vomiting blood",
        "https://www.hillspet.com/dog-care/healthcare/dog-vomiting-blood",
    ),
    "vetclinic-blood": Source(
        "VetClinic.info: Is my dog vomiting blood an emergency?",
        "https://vetclinic.info/emergency/is-my-dog-vomiting-blood-an-emergency/",
    ),
    "acc-vomiting": Source(
        "Animal Care Center: Vomiting in dogs (when to come in)",
        "https://animalcarecenter.com/?p=3770",
    ),
    "handbook": Source(
        "Carlson & Giffin, Dog Owner's Home Veterinary Handbook: home treatment of vomiting",
        "https://www.yumpu.com/en/document/view/11536020/dog-owners-home-veterinary-handbookpdf-mr-walnuts/302",
    ),
    "folly-road": Source(
        "Folly Road Animal Hospital: My pet is vomiting",
        "https://follyroadanimalhospital.com/faqs/what-if-my-pet/vomiting/",
    ),
    "hidden-brook": Source(
        "Hidden Brook Veterinary: Cat vomiting foam and bile",
        "https://hiddenbrookveterinary.com/what-it-means-when-your-cat-is-vomiting-foam-and-bile",
    ),
    "crvet-rodenticide": Source(
        "Columbia River Veterinary Specialists: Rodenticide toxicity",
        "https://columbiarivervet.com/august-rodenticide-toxicity/",
    ),
    "avma-rodenticide": Source(
        "AVMA: What to do if your pet has ingested a rodenticide",
        "https://www.avma.org/resources/pet-owners/emergencycare/what-do-if-your-pet-has-ingested-rodenticide",
    ),
    "ucanr-plants": Source(
        "UC ANR: Lilies and other plants toxic to cats",
        "https://class.ucanr.edu/node/125748",
    ),
    "vetclinic-cat-fasting": Source(
        "VetClinic.info: Is my cat not eating an emergency? (hepatic lipidosis)",
        "https://vetclinic.info/emergency/is-my-cat-not-eating-an-emergency/",
    ),
}


@dataclass(frozen=True)
class PetFacts:
    """What is known about the pet and its recent history."""

    name: str = ""
    species: str = ""  # cat | dog | other | "" (unknown)
    breed: str = ""
    age_years: float | None = None
    weight_kg: float | None = None
    conditions: tuple[str, ...] = ()
    earlier_episodes: int = 0  # vomiting analyses within the repeat window, before this one
    window_hours: float = 24.0

    @property
    def is_young(self) -> bool:
        """Say whether the pet is under six months old."""
        return self.age_years is not None and self.age_years < 0.5

    @property
    def is_senior(self) -> bool:
        """Say whether the pet is old (dogs from 8, cats from 10 years)."""
        senior_age = 10.0 if self.species == "cat" else 8.0
        return self.age_years is not None and self.age_years >= senior_age

    def describe(self) -> str:
        """Return the pet in a few words, e.g. ``咪咪(猫, 英短, 3岁, 4.2kg)``."""
        parts = [{"cat": "猫", "dog": "狗"}.get(self.species, "")]
        parts.append(self.breed)
        if self.age_years is not None:
            parts.append(f"{self.age_years:g}岁")
        if self.weight_kg is not None:
            parts.append(f"{self.weight_kg:g}kg")
        details = ", ".join(p for p in parts if p)
        text = f"{self.name}({details})" if details else self.name
        if self.conditions:
            text += "; 已知病史: " + "、".join(self.conditions)
        return text


Test = Callable[[VomitMeasurements, PetFacts], bool]


@dataclass(frozen=True)
class Rule:
    """One row of the table: when it fires and what it then says."""

    key: str
    urgency: Urgency
    test: Test
    finding: Callable[[VomitMeasurements, PetFacts], str]
    causes: tuple[str, ...]
    actions: tuple[str, ...]
    sources: tuple[str, ...]


def _pct(m: VomitMeasurements, *colours: Colour) -> str:
    return f"{round(100 * sum(m.share(c) for c in colours))}%"


RULES: tuple[Rule, ...] = (
    Rule(
        "blood",
        Urgency.NOW,
        lambda m, f: m.share(Colour.BLOOD) >= 0.01,
        lambda m, f: f"可见鲜红色区域(约占{_pct(m, Colour.BLOOD)}), 可能是新鲜血液",
        ("食道或胃黏膜出血(剧烈呕吐、胃炎、溃疡)", "尖锐异物划伤", "误食灭鼠药等引起的凝血障碍"),
        (
            "立即联系兽医或急诊, 带上这张照片或呕吐物样本",
            "不要自行喂任何人用药, 尤其是布洛芬等止痛药",
            "若确认红色来自食物或零食的色素, 请告诉兽医",
        ),
        ("hills-blood", "vetclinic-blood", "acc-vomiting"),
    ),
    Rule(
        "dark",
        Urgency.SOON,
        lambda m, f: m.share(Colour.DARK) >= 0.15 and not m.whole_picture,
        lambda m, f: f"可见较多深褐至黑色物质(约占{_pct(m, Colour.DARK)})",
        ("深色的食物或零食", "若呈咖啡渣样颗粒, 可能是已被消化的血液(胃或小肠出血)"),
        ("对照看是否像咖啡渣: 像就立即就医; 拿不准时把照片发给兽医判断",),
        ("hills-blood", "acc-vomiting"),
    ),
    Rule(
        "dye",
        Urgency.SOON,
        lambda m, f: m.share(Colour.DYE) >= 0.01,
        lambda m, f: f"可见蓝、绿、紫等食物中少见的鲜艳颜色(约占{_pct(m, Colour.DYE)})",
        ("染色的异物(玩具、塑料等)", "灭鼠药等毒饵, 常被染成蓝绿色"),
        (
            "检查家中灭鼠药、毒饵和玩具是否缺失; 可能误食毒饵时立即联系兽医, 并带上包装",
            "不要自行催吐, 按兽医或动物中毒求助热线的指导处理",
        ),
        ("crvet-rodenticide", "avma-rodenticide", "hills-blood"),
    ),
    Rule(
        "strands",
        Urgency.SOON,
        lambda m, f: m.strands >= 1,
        lambda m, f: "可见细长条状物",
        ("毛发(猫较常见)", "线绳、布条、塑料等异物"),
        (
            "不要拉扯从口中或肛门露出的线绳",
            "若反复呕吐、不吃东西或腹痛, 可能有肠梗阻, 需立即就医",
        ),
        ("acc-vomiting", "handbook"),
    ),
    Rule(
        "grass",
        Urgency.WATCH,
        lambda m, f: m.grass >= 1,
        lambda m, f: "可见绿色条状物, 可能是草叶",
        ("吃草后呕吐, 较常见",),
        ("确认宠物接触过的植物是否有毒(百合对猫剧毒); 不确定时咨询兽医",),
        ("ucanr-plants",),
    ),
    Rule(
        "bile",
        Urgency.WATCH,
        lambda m, f: m.share(Colour.BILE_YELLOW) + m.share(Colour.GREEN) >= 0.1,
        lambda m, f: (
            f"可见黄色或黄绿色液体(约占{_pct(m, Colour.BILE_YELLOW, Colour.GREEN)}), 多为胆汁"
        ),
        ("空腹时间过长(清晨空腹呕吐常见)", "胃部受刺激或胃炎、饮食改变"),
        ("少量多餐, 可在睡前加一小餐", "一周内多次出现, 或精神、食欲变差时就医"),
        ("hidden-brook",),
    ),
    Rule(
        "food",
        Urgency.WATCH,
        lambda m, f: m.share(Colour.FOOD) >= 0.3 and m.pieces >= 10,
        lambda m, f: f"可见较多颗粒或块状物(约{m.pieces}处), 像未消化或部分消化的食物",
        ("进食过快或过量", "突然换粮或吃了不合适的东西", "急性胃肠炎"),
        (
            "暂停喂食几个小时, 让胃休息",
            "少量多次给清水; 喝水也吐时就医",
            "恢复后先少量喂清淡易消化的食物, 再逐步换回原粮; 可用慢食碗",
        ),
        ("handbook", "folly-road"),
    ),
    Rule(
        "foam",
        Urgency.WATCH,
        lambda m, f: m.share(Colour.FOAM) >= 0.3,
        lambda m, f: f"以白色泡沫状物为主(约占{_pct(m, Colour.FOAM)})",
        ("空腹或胃部受刺激, 胃液和唾液混入空气",),
        ("留意是否干呕吐不出、腹部胀大、流口水、坐立不安; 出现任何一项立即就医(可能是胃扩张扭转)",),
        ("acc-vomiting", "hidden-brook"),
    ),
    Rule(
        "repeated",
        Urgency.NOW,
        lambda m, f: f.earlier_episodes >= 2,
        lambda m, f: f"这是{f.window_hours:g}小时内第{f.earlier_episodes + 1}次记录到呕吐",
        ("持续的胃肠问题、异物、中毒或全身性疾病",),
        ("24小时内呕吐超过两次应立即就医",),
        ("acc-vomiting",),
    ),
    Rule(
        "repeat-once",
        Urgency.SOON,
        lambda m, f: f.earlier_episodes == 1,
        lambda m, f: f"这是{f.window_hours:g}小时内第2次记录到呕吐",
        (),
        ("再吐一次或精神变差就立即就医",),
        ("acc-vomiting",),
    ),
    Rule(
        "young",
        Urgency.NOW,
        lambda m, f: f.is_young,
        lambda m, f: "幼犬或幼猫(不足6个月)呕吐",
        ("幼宠更容易脱水和低血糖, 也更常见感染和寄生虫",),
        ("幼宠呕吐一次也应尽快带去看兽医, 不要长时间禁食",),
        ("acc-vomiting", "handbook"),
    ),
    Rule(
        "frail",
        Urgency.SOON,
        lambda m, f: f.is_senior or bool(f.conditions),
        lambda m, f: "老年宠物或有基础疾病",
        (),
        ("老年或有慢性病的宠物不适合居家处理, 请联系兽医并告知病史",),
        ("handbook",),
    ),
    Rule(
        "cat-fasting",
        Urgency.WATCH,
        lambda m, f: f.species == "cat",
        lambda m, f: "",
        (),
        ("猫不宜长时间禁食: 超过24小时不吃东西有脂肪肝风险, 应就医",),
        ("vetclinic-cat-fasting",),
    ),
)

# Always listed under "when to see a vet"; these come from the same sources.
RED_FLAGS = (
    "呕吐物带血或像咖啡渣",
    "想吐却吐不出、腹部胀大",
    "喝水也吐, 或24小时内吐了两次以上",
    "精神萎靡、腹痛、发烧, 或同时严重腹泻",
    "可能误食了异物、药物或毒物(带上包装)",
    "幼宠、老年宠物或有慢性病的宠物",
)


@dataclass(frozen=True)
class Assessment:
    """What the rules concluded."""

    urgency: Urgency
    rules: tuple[str, ...]  # keys of the rules that fired
    observations: tuple[str, ...]
    causes: tuple[str, ...]
    actions: tuple[str, ...]
    sources: tuple[Source, ...]


def _unique(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for i in items if i))


def assess(m: VomitMeasurements, facts: PetFacts) -> Assessment:
    """Apply every rule; the most urgent one that fires sets the urgency."""
    fired = [rule for rule in RULES if rule.test(m, facts)]
    urgency = max((r.urgency for r in fired), key=lambda u: u.rank, default=Urgency.WATCH)
    # Most urgent first; when the pet must see a vet now, home care would only delay that.
    ordered = sorted(fired, key=lambda r: -r.urgency.rank)
    observations = [r.finding(m, facts) for r in ordered]
    if not any(observations):
        observations = ["未见明显的血色、异色或异物"]
    causes = [c for r in ordered for c in r.causes] or [
        "偶发的胃部不适(如吃得太快、吃了不合适的东西)"
    ]
    advising = [r for r in ordered if urgency is not Urgency.NOW or r.urgency is not Urgency.WATCH]
    actions = [a for r in advising for a in r.actions]
    if urgency is Urgency.WATCH:
        actions += ["暂停喂食几个小时并少量多次给水, 密切观察精神和食欲"]
    return Assessment(
        urgency=urgency,
        rules=tuple(r.key for r in fired),
        observations=_unique(observations),
        causes=_unique(causes),
        actions=_unique(actions),
        sources=tuple(dict.fromkeys(SOURCES[k] for r in fired for k in r.sources)),
    )


def simple_text(a: Assessment, facts: PetFacts) -> str:
    """Return a few sentences: what was seen, why, what to do, how urgent."""
    who = f"{facts.name}的" if facts.name else "宠物"
    return (
        f"经过分析, {who}呕吐物中{'; '.join(a.observations[:3])}。"
        f"可能原因: {'、'.join(a.causes[:2])}。"
        f"建议: {'; '.join(a.actions[:2])}。"
        f"紧急程度: {a.urgency.words}。"
        f"{DISCLAIMER}"
    )


def report_text(a: Assessment, m: VomitMeasurements, facts: PetFacts) -> str:
    """Return the structured report, one section per line group."""
    lines: list[str] = []
    if facts.name or facts.species:
        lines.append(f"【宠物】{facts.describe()}")
    lines.append("【观察】")
    lines += [f"- {o}" for o in a.observations]
    lines.append(f"- 呕吐物约占画面的{round(100 * m.subject_share)}%")
    lines.append("【可能原因】")
    lines += [f"- {c}" for c in a.causes]
    lines.append(f"【紧急程度】{a.urgency.words}")
    lines.append("【现在可以做】")
    lines += [f"{i}. {action}" for i, action in enumerate(a.actions, 1)]
    lines.append("【何时就医】出现以下任何一种情况请立即就医:")
    lines += [f"- {flag}" for flag in RED_FLAGS]
    lines.append(f"【说明】{DISCLAIMER}")
    return "\n".join(lines)


def vision_prompt(
    a: Assessment, m: VomitMeasurements, facts: PetFacts, *, simple: bool, refusal: str
) -> tuple[str, str]:
    """Return the system prompt and the user prompt for a vision-language model."""
    system = (
        "你是一名谨慎的宠物健康助手, 根据照片描述宠物呕吐物并给出急救建议。"
        "只描述照片里看得到的东西, 不做确定诊断。"
        "呕吐物带血或像咖啡渣、疑似异物或毒饵、24小时内多次呕吐、幼宠呕吐时, 必须建议立即就医。"
        f"如果照片里没有宠物呕吐物, 只回答“{refusal}”加一句原因, 不要回答别的。"
    )
    style = (
        "用三四句话简要回答: 看到了什么、可能原因、现在该做什么、紧急程度。"
        if simple
        else "分段回答:【观察】【可能原因】【紧急程度】【现在可以做】【何时就医】。"
    )
    colours = ", ".join(f"{k} {round(100 * v)}%" for k, v in m.colours.items() if v >= 0.01)
    prompt = "\n".join(
        [
            f"宠物: {facts.describe() or '未提供档案'}",
            f"近{facts.window_hours:g}小时内之前的呕吐记录: {facts.earlier_episodes}次",
            f"图像测量(仅供参考, 可能有误): 主体约占画面{round(100 * m.subject_share)}%; "
            f"颜色构成 {colours}; 颗粒状物约{m.pieces}处; "
            f"细长条状物{m.strands}处; 绿色条状物{m.grass}处",
            f"规则表的初步判断: {a.urgency.words}({', '.join(a.rules) or '无特殊发现'})",
            style,
        ]
    )
    return system, prompt
