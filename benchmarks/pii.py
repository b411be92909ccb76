"""PII benchmark: precision and recall per kind against Presidio, and redaction latency.

The corpus comes from a seeded random generator, so every run scores the same Chinese and
English sentences. Some contain valid identifiers, labelled with their spans. Others contain
near misses that must not be reported: resident IDs with a wrong check digit or an
impossible birth date, numbers that fail the Luhn check, credit codes with a wrong check
character, 12-digit phone-like numbers and passport-shaped product codes. The rest are
neutral sentences with order numbers, dates and amounts. The valid identifiers are built with check
functions written here from the standards' definitions, not with the ones under test.

A prediction counts as a true positive when it overlaps a labelled span of the same kind
(each span is matched once); the "exact" column gives the share of those whose span is
exactly the labelled one.

Presidio runs with its pattern recognizers only (EmailRecognizer, IpRecognizer,
CreditCardRecognizer, PhoneRecognizer for region CN) behind its NoOpNlpEngine, so no spaCy
model is loaded. Its email validator calls tldextract, which by default downloads the
public suffix list; here it reads the snapshot bundled with tldextract instead, so nothing
leaves the machine.
"""

from __future__ import annotations

import os
import random
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from benchmarks.common import markdown_table, write_results
from enclave.policy import Kind, PrivacySettings, Redactor

SEED = 20250601
LATENCY_BYTES = 2048
TARGET_RECALL = 0.995
TARGET_PRECISION = 0.99
TARGET_P50_MS = 1.0

Span = tuple[str, int, int]


@dataclass
class Sentence:
    text: str
    spans: list[Span] = field(default_factory=list)


# Identifier generators. Check functions follow the standards directly.


def resident_id_check(first17: str) -> str:
    """ISO 7064 MOD 11-2 with weights 2**(17 - i) mod 11."""
    total = sum(int(digit) * pow(2, 17 - index, 11) for index, digit in enumerate(first17))
    value = (12 - total % 11) % 11
    return "X" if value == 10 else str(value)


USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"


def uscc_check(first17: str) -> str:
    """GB 32100-2015: weights 3**i mod 31, check value 31 - (sum mod 31)."""
    total = sum(USCC_ALPHABET.index(char) * pow(3, index, 31)
                for index, char in enumerate(first17))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def organization_code_check(first8: str) -> str:
    """GB 11714-1997: weights 3 7 9 10 5 8 4 2, check 11 - (sum mod 11), 10 -> X."""
    values = [int(char) if char.isdigit() else ord(char) - 55 for char in first8]
    total = sum(value * weight for value, weight in zip(values, (3, 7, 9, 10, 5, 8, 4, 2),
                                                        strict=True))
    value = 11 - total % 11
    return {10: "X", 11: "0"}.get(value, str(value))


def luhn_complete(body: str) -> str:
    """Return ``body`` plus the digit that makes it pass the Luhn check."""
    total = 0
    for index, char in enumerate(reversed(body)):
        digit = int(char) * (2 if index % 2 == 0 else 1)
        total += digit - 9 if digit > 9 else digit
    return body + str((10 - total % 10) % 10)


REGIONS = ["110101", "110108", "310115", "440305", "440106", "510107", "330106", "420111",
           "610113", "320102", "370202", "500103", "350203", "210102", "810000", "820000"]


def digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(count))


def birth_date(rng: random.Random) -> str:
    born = date(1950, 1, 1) + timedelta(days=rng.randrange(60 * 365))
    return born.strftime("%Y%m%d")


def resident_id(rng: random.Random) -> str:
    first17 = rng.choice(REGIONS) + birth_date(rng) + digits(rng, 3)
    return first17 + resident_id_check(first17)


def resident_id_near_miss(rng: random.Random) -> str:
    valid = resident_id(rng)
    flavour = rng.randrange(3)
    if flavour == 0:
        wrong = rng.choice([char for char in "0123456789X" if char != valid[17]])
        return valid[:17] + wrong
    impossible = rng.choice(["19900230", "19851301", "20010932", "19990431", "20950101"])
    first17 = valid[:6] + impossible + valid[14:17]
    return first17 + resident_id_check(first17)


PHONE_PREFIXES = ["130", "131", "132", "133", "134", "135", "136", "137", "138", "139", "147",
                  "150", "151", "152", "153", "155", "156", "157", "158", "159", "166", "173",
                  "177", "180", "181", "182", "185", "186", "187", "188", "189", "191", "199"]


def phone(rng: random.Random) -> str:
    number = rng.choice(PHONE_PREFIXES) + digits(rng, 8)
    layout = rng.randrange(6)
    if layout == 1:
        number = f"{number[:3]} {number[3:7]} {number[7:]}"
    elif layout == 2:
        number = f"{number[:3]}-{number[3:7]}-{number[7:]}"
    elif layout == 3:
        number = "+86 " + number
    elif layout == 4:
        number = "+86-" + f"{number[:3]}-{number[3:7]}-{number[7:]}"
    elif layout == 5:
        number = "0086" + number
    return number


def phone_near_miss(rng: random.Random) -> str:
    flavour = rng.randrange(3)
    if flavour == 0:
        return rng.choice(PHONE_PREFIXES) + digits(rng, 9)   # 12 digits
    if flavour == 1:
        return rng.choice(PHONE_PREFIXES) + digits(rng, 7)   # 10 digits
    return "12" + digits(rng, 9)                           # no 12x mobile prefix


def card_body(rng: random.Random) -> str:
    prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("62", 16), ("62", 19),
                                 ("622202", 19), ("2221", 16)])
    return prefix + digits(rng, length - len(prefix) - 1)


def group_card(number: str, rng: random.Random) -> str:
    layout = rng.randrange(3)
    if layout == 0:
        return number
    separator = " " if layout == 1 else "-"
    return separator.join(number[index:index + 4] for index in range(0, len(number), 4))


def bank_card(rng: random.Random) -> str:
    return group_card(luhn_complete(card_body(rng)), rng)


def bank_card_near_miss(rng: random.Random) -> str:
    valid = luhn_complete(card_body(rng))
    wrong = str((int(valid[-1]) + rng.randrange(1, 10)) % 10)
    return group_card(valid[:-1] + wrong, rng)


def uscc(rng: random.Random) -> str:
    head = rng.choice(["91", "92", "12", "52", "93"]) + rng.choice(REGIONS[:14])
    if rng.random() < 0.5:
        body = digits(rng, 8)
    else:
        body = "MA" + "".join(rng.choice(USCC_ALPHABET) for _ in range(6))
    first17 = head + body + organization_code_check(body)
    return first17 + uscc_check(first17)


def uscc_near_miss(rng: random.Random) -> str:
    valid = uscc(rng)
    return valid[:17] + rng.choice([char for char in USCC_ALPHABET if char != valid[17]])


NAMES = ["zhangsan", "li.si", "wang_wei", "liu.yang88", "chen.jing", "zhao.lei", "sun.li",
         "zhou.min", "wu.fang", "xu.qiang", "ma.lin", "hu.jun", "guo.hua", "he.xin"]
DOMAINS = ["example.com", "qq.com", "163.com", "corp.example.cn", "bank.example.com.cn",
           "mail.example.org", "126.com", "hospital.example.net"]


def email(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return phone_digits(rng) + "@" + rng.choice(["qq.com", "163.com", "139.com"])
    address = rng.choice(NAMES) + "@" + rng.choice(DOMAINS)
    return address.title() if rng.random() < 0.1 else address


def phone_digits(rng: random.Random) -> str:
    return rng.choice(PHONE_PREFIXES) + digits(rng, 8)


def email_near_miss(rng: random.Random) -> str:
    name = rng.choice(NAMES)
    return rng.choice([f"{name}@localhost", f"{name} at example dot com", f"@{name}",
                       f"{name}@@example.com", f"{name}@example"])


def ip_address(rng: random.Random) -> str:
    flavour = rng.randrange(5)
    if flavour == 0:
        return f"192.168.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    if flavour == 1:
        return f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    if flavour == 2:
        return ".".join(str(rng.randrange(1, 224)) for _ in range(4))
    groups = [f"{rng.randrange(65536):x}" for _ in range(8)]
    if flavour == 3:
        address = ":".join(groups)
    elif rng.random() < 0.5:
        address = f"2001:db8:{groups[2]}::{groups[7]}"
    else:
        address = f"fe80::{groups[7]}"
    return address.upper() if rng.random() < 0.2 else address


def ip_near_miss(rng: random.Random) -> str:
    return rng.choice([
        f"256.{rng.randrange(256)}.{rng.randrange(256)}.1",
        f"10.0.{rng.randrange(19000, 19100)}.{rng.randrange(1000, 4000)}",
        f"{rng.randrange(1, 9)}.{rng.randrange(20)}.{rng.randrange(20)}",
        f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}",
    ])


def passport(rng: random.Random) -> str:
    flavour = rng.randrange(3)
    if flavour == 0:
        return "E" + digits(rng, 8)
    if flavour == 1:
        return "E" + rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") + digits(rng, 7)
    return "G" + digits(rng, 8)


def order_number(rng: random.Random) -> str:
    day = date(2023, 1, 1) + timedelta(days=rng.randrange(700))
    return rng.choice([
        day.strftime("%Y%m%d") + digits(rng, rng.randrange(6, 11)),
        f"SO-{day.year}-{digits(rng, 6)}",
        "SF" + digits(rng, 12),
        "JD" + digits(rng, 11),
        rng.choice("123") + digits(rng, rng.choice([17, 18])),
    ])


def amount(rng: random.Random) -> str:
    value = rng.randrange(1, 10_000_000) / 100
    return rng.choice([f"{value:,.2f}", f"¥{value:,.2f}", f"{value:.2f}"])


def calendar_date(rng: random.Random) -> str:
    day = date(2020, 1, 1) + timedelta(days=rng.randrange(2000))
    return rng.choice([day.isoformat(), f"{day.year}年{day.month}月{day.day}日",
                       day.strftime("%d/%m/%Y")])


# Sentence templates; {v} is the identifier, other slots are filler.

TEMPLATES: dict[str, list[str]] = {
    Kind.ID_CARD: ["客户的身份证号码是{v}，请核实。", "身份证：{v}", "患者{v}于今日入院。",
                   "请提供身份证号{v}以完成实名认证。", "ID number {v} was verified.",
                   "Resident ID: {v}"],
    Kind.PHONE: ["请拨打{v}联系我。", "手机：{v}", "联系电话{v}（工作日）", "客户留的号码是{v}",
                 "Call me at {v} tomorrow.", "Mobile: {v}"],
    Kind.BANK_CARD: ["您的银行卡{v}已绑定成功。", "请转账至卡号{v}，户名张三。", "卡号:{v}",
                     "Card number {v} was charged.", "Please pay with card {v}."],
    Kind.USCC: ["统一社会信用代码：{v}", "公司（信用代码{v}）已完成年检。", "纳税人识别号{v}",
                "Unified social credit code {v}.", "Supplier USCC: {v}"],
    Kind.EMAIL: ["邮箱：{v}", "请发送到{v}，谢谢。", "联系人邮箱{v}。", "Email me at {v}.",
                 "Contact: {v}", "From: Zhang San <{v}>"],
    Kind.IP_ADDRESS: ["服务器{v}无法访问", "登录IP：{v}", "异常访问来自{v}。",
                      "The request came from {v}.", "Connect to {v} and retry.",
                      "日志：client={v} status=403"],
    Kind.PASSPORT: ["护照号码{v}，有效期至2030年。", "持中国护照（{v}）办理签证", "护照：{v}",
                    "Passport No. {v}", "Her passport number is {v}."],
}

NEAR_MISSES: dict[str, Callable[[random.Random], str]] = {
    Kind.ID_CARD: resident_id_near_miss,
    Kind.PHONE: phone_near_miss,
    Kind.BANK_CARD: bank_card_near_miss,
    Kind.USCC: uscc_near_miss,
    Kind.EMAIL: email_near_miss,
    Kind.IP_ADDRESS: ip_near_miss,
}

GENERATORS: dict[str, Callable[[random.Random], str]] = {
    Kind.ID_CARD: resident_id, Kind.PHONE: phone, Kind.BANK_CARD: bank_card, Kind.USCC: uscc,
    Kind.EMAIL: email, Kind.IP_ADDRESS: ip_address, Kind.PASSPORT: passport,
}

PASSPORT_LOOKALIKES = ["产品型号{v}已停产。", "配件编号{v}缺货", "Part number {v} is out of stock.",
                       "Error code {v} was logged."]

NEUTRAL = ["订单号{order}已发货，金额{amount}元。", "会议定于{date}下午三点。",
           "Invoice {order} total {amount} USD, due {date}.", "合同编号{order}，签订日期{date}。",
           "本月营收{amount}元，同比增长12.5%。", "Tracking number {order}, shipped on {date}."]


def fill(template: str, values: dict[str, tuple[str, str | None]]) -> Sentence:
    """Fill ``{slot}`` markers; values map a slot to (text, kind or None for no label)."""
    sentence = Sentence("")
    for piece in _split_slots(template):
        if piece.startswith("{") and piece.endswith("}"):
            text, kind = values[piece[1:-1]]
            if kind is not None:
                sentence.spans.append((kind, len(sentence.text), len(sentence.text) + len(text)))
            sentence.text += text
        else:
            sentence.text += piece
    return sentence


def _split_slots(template: str) -> Iterator[str]:
    position = 0
    while (start := template.find("{", position)) != -1:
        end = template.index("}", start)
        yield template[position:start]
        yield template[start:end + 1]
        position = end + 1
    yield template[position:]


def build_corpus(rng: random.Random, positives: int = 260, near_misses: int = 80,
                 pairs: int = 200, neutral: int = 300) -> list[Sentence]:
    """Return the labelled corpus: positives and near misses per kind, pairs, neutral."""
    corpus: list[Sentence] = []
    for kind, generate in GENERATORS.items():
        for _ in range(positives):
            corpus.append(fill(rng.choice(TEMPLATES[kind]), {"v": (generate(rng), kind)}))
        near_miss = NEAR_MISSES.get(kind)
        for _ in range(near_misses):
            if near_miss is None:
                value = passport(rng)
                corpus.append(fill(rng.choice(PASSPORT_LOOKALIKES), {"v": (value, None)}))
            else:
                corpus.append(fill(rng.choice(TEMPLATES[kind]), {"v": (near_miss(rng), None)}))

    kinds = list(GENERATORS)
    for _ in range(pairs):
        first, second = rng.sample(kinds, 2)
        template = rng.choice(TEMPLATES[first]).replace("{v}", "{a}") + " " + rng.choice(
            TEMPLATES[second]).replace("{v}", "{b}")
        corpus.append(fill(template, {"a": (GENERATORS[first](rng), first),
                                      "b": (GENERATORS[second](rng), second)}))

    for _ in range(neutral):
        corpus.append(fill(rng.choice(NEUTRAL), {
            "order": (order_number(rng), None), "amount": (amount(rng), None),
            "date": (calendar_date(rng), None)}))
    rng.shuffle(corpus)
    return corpus


# Scoring.


@dataclass
class Score:
    """Counts for one kind; predictions and labelled spans are matched one to one."""

    gold: int = 0
    predicted: int = 0
    matched: int = 0
    exact: int = 0

    def recall(self) -> float:
        return self.matched / self.gold if self.gold else 1.0

    def precision(self) -> float:
        return self.matched / self.predicted if self.predicted else 1.0

    def exact_share(self) -> float:
        return self.exact / self.matched if self.matched else 1.0


def score(corpus: list[Sentence], predict: Callable[[str], list[Span]]) -> dict[str, Score]:
    """Return precision and recall counts per kind for one system over the corpus."""
    scores: dict[str, Score] = {}
    for sentence in corpus:
        predictions = predict(sentence.text)
        for kind, _, _ in sentence.spans:
            scores.setdefault(kind, Score()).gold += 1
        matched: set[int] = set()
        for kind, start, end in predictions:
            entry = scores.setdefault(kind, Score())
            entry.predicted += 1
            hit = next((index for index, (gold_kind, gold_start, gold_end)
                        in enumerate(sentence.spans)
                        if index not in matched and gold_kind == kind
                        and start < gold_end and gold_start < end), None)
            if hit is None:
                continue
            matched.add(hit)
            entry.matched += 1
            entry.exact += 1 if sentence.spans[hit][1:] == (start, end) else 0
    return scores


def enclave_predictor(redactor: Redactor) -> Callable[[str], list[Span]]:
    def predict(text: str) -> list[Span]:
        return [(item.kind, item.start, item.end) for item in redactor.scan(text)]
    return predict


PRESIDIO_KINDS = {"EMAIL_ADDRESS": Kind.EMAIL.value, "IP_ADDRESS": Kind.IP_ADDRESS.value,
                  "CREDIT_CARD": Kind.BANK_CARD.value, "PHONE_NUMBER": Kind.PHONE.value}


def presidio_analyzer() -> Any:
    """Return a Presidio AnalyzerEngine with pattern recognizers only, or raise ImportError."""
    import tldextract
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine.no_op_nlp_engine import NoOpNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IpRecognizer,
        PhoneRecognizer,
    )

    offline_extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return bool(offline_extract(pattern_text).fqdn)

    registry = RecognizerRegistry(
        recognizers=[OfflineEmailRecognizer(), IpRecognizer(), CreditCardRecognizer(),
                     PhoneRecognizer(supported_regions=("CN",))],
        supported_languages=["en"],
    )
    nlp_engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    nlp_engine.load()
    return AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"])


def presidio_predictor(analyzer: Any) -> Callable[[str], list[Span]]:
    def predict(text: str) -> list[Span]:
        results = analyzer.analyze(text, language="en")
        return [(PRESIDIO_KINDS[item.entity_type], item.start, item.end) for item in results
                if item.entity_type in PRESIDIO_KINDS]
    return predict


# Latency.


def latency_text(corpus: list[Sentence]) -> str:
    """Return corpus sentences joined until the text has at least LATENCY_BYTES of UTF-8."""
    text = ""
    for sentence in corpus:
        if len(text.encode()) >= LATENCY_BYTES:
            break
        text += sentence.text + " "
    return text


def timings_ms(function: Callable[[], object], runs: int, warmup: int = 50) -> list[float]:
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(runs):
        started = time.perf_counter_ns()
        function()
        samples.append((time.perf_counter_ns() - started) / 1e6)
    return sorted(samples)


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# Report.


@dataclass
class Results:
    corpus: list[Sentence]
    enclave: dict[str, Score]
    passport_without_context: Score
    presidio: dict[str, Score] | None
    presidio_note: str
    latency_bytes: int
    latency_ms: dict[str, list[float]]
    load_average: float


def percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def accuracy_rows(results: Results) -> list[list[Any]]:
    rows = []
    for kind in GENERATORS:
        ours = results.enclave.get(kind, Score())
        meets = ours.recall() >= TARGET_RECALL and ours.precision() >= TARGET_PRECISION
        theirs = results.presidio.get(kind) if results.presidio is not None else None
        covered = theirs is not None and kind in PRESIDIO_KINDS.values()
        rows.append([
            kind, ours.gold, percent(ours.recall()), percent(ours.precision()),
            percent(ours.exact_share()), "yes" if meets else "no",
            percent(theirs.recall()) if theirs and covered else "n/a",
            percent(theirs.precision()) if theirs and covered else "n/a",
        ])
    free = results.passport_without_context
    rows.append([f"{Kind.PASSPORT} (no context word required)", free.gold,
                 percent(free.recall()), percent(free.precision()),
                 percent(free.exact_share()), "", "n/a", "n/a"])
    return rows


def render_markdown(results: Results) -> str:
    with_spans = sum(1 for sentence in results.corpus if sentence.spans)
    latency_rows = [[name, f"{percentile(samples, 0.5):.3f}", f"{percentile(samples, 0.99):.3f}"]
                    for name, samples in results.latency_ms.items()]
    return (
        f"# PII detection\n\nCorpus: {len(results.corpus)} sentences (seed {SEED}), "
        f"{with_spans} with labelled identifiers, the rest near misses and neutral text. "
        f"Targets: recall >= {percent(TARGET_RECALL)}, precision >= "
        f"{percent(TARGET_PRECISION)}. {results.presidio_note}\n\n"
        + markdown_table(["kind", "labelled", "Enclave recall", "Enclave precision",
                          "exact spans", "meets target", "Presidio recall",
                          "Presidio precision"], accuracy_rows(results))
        + f"\nLatency on one {results.latency_bytes}-byte request (ms, target p50 <= "
        f"{TARGET_P50_MS:g} ms; 1-minute load average {results.load_average:.1f} at the "
        f"end):\n\n"
        + markdown_table(["call", "p50", "p99"], latency_rows)
    )


def results_data(results: Results) -> dict[str, Any]:
    presidio: Any = results.presidio_note
    if results.presidio is not None:
        presidio = {kind: vars(value) for kind, value in results.presidio.items()}
    return {
        "seed": SEED,
        "sentences": len(results.corpus),
        "sentences_with_identifiers": sum(1 for sentence in results.corpus if sentence.spans),
        "enclave": {kind: vars(value) for kind, value in results.enclave.items()},
        "enclave_passport_without_context": vars(results.passport_without_context),
        "presidio": presidio,
        "latency_text_bytes": results.latency_bytes,
        "load_average_1min": results.load_average,
        "latency_ms": {name: {"p50": percentile(samples, 0.5),
                              "p99": percentile(samples, 0.99)}
                       for name, samples in results.latency_ms.items()},
    }


def main() -> None:
    corpus = build_corpus(random.Random(SEED))
    redactor = Redactor(PrivacySettings())
    enclave = score(corpus, enclave_predictor(redactor))
    passport_free = score(corpus, enclave_predictor(
        Redactor(PrivacySettings(passport_context=False))))

    try:
        analyzer = presidio_analyzer()
    except ImportError as exc:
        analyzer, presidio_note = None, f"Presidio not available: {exc}."
    else:
        presidio_note = ("Presidio 2.2 pattern recognizers (email, IP, credit card, phone with "
                         "region CN), NoOpNlpEngine, no spaCy model.")
    presidio = score(corpus, presidio_predictor(analyzer)) if analyzer is not None else None

    text = latency_text(corpus)
    latency = {
        "Enclave Redactor.redact": timings_ms(lambda: redactor.redact(text), runs=2000),
        "Enclave Redactor.scan": timings_ms(lambda: redactor.scan(text), runs=2000),
    }
    if analyzer is not None:
        latency["Presidio AnalyzerEngine.analyze"] = timings_ms(
            lambda: analyzer.analyze(text, language="en"), runs=200)

    results = Results(corpus, enclave, passport_free.get(Kind.PASSPORT, Score()), presidio,
                      presidio_note, len(text.encode()), latency, os.getloadavg()[0])
    markdown = render_markdown(results)
    path = write_results("pii", results_data(results), markdown)
    print(markdown)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
