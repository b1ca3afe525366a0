"""The reason lists an officer chooses from: why recording was interrupted (D5)
and why it is lawfully not being made (D6).

Codes are stable strings written into the journal and read by the dock
station; never renumber or reuse one. ``number`` is the position the officer
selects by pressing the mark button that many times while a reason is asked
for. The Chinese terms are those of the regulations (Liaoning §14,
Luoyang §11, Wugang §12 for interruptions; Zaozhuang §8 and Liaoning §8 for
not recording).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class ReasonKind(str, enum.Enum):
    INTERRUPTION = "interruption"     # D5: recording stopped for an objective cause
    NOT_RECORDING = "not-recording"   # D6: recording lawfully not made; needs sign-off


@dataclass(frozen=True)
class Reason:
    code: str
    number: int       # press count that selects it
    zh: str
    en: str
    kind: ReasonKind

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "number": self.number, "zh": self.zh, "en": self.en,
                "kind": self.kind.value}


def _listing(kind: ReasonKind, rows: list[tuple[str, str, str]]) -> tuple[Reason, ...]:
    return tuple(Reason(code, i, zh, en, kind) for i, (code, zh, en) in enumerate(rows, start=1))


INTERRUPTION_REASONS = _listing(ReasonKind.INTERRUPTION, [
    ("device-fault", "设备故障", "device fault"),
    ("device-damage", "设备损坏", "damage"),
    ("bad-weather", "天气情况恶劣", "bad weather"),
    ("low-battery", "电量不足", "low battery"),
    ("storage-full", "存储空间不足", "storage full"),
    ("change-of-site", "检查场所变化", "change of site"),
    ("obstruction", "行政管理相对人或其他人员阻碍正常执法", "obstruction by the other party"),
    ("force-majeure", "不可抗力", "force majeure"),
    ("other", "其他客观原因", "other objective cause"),
])

NOT_RECORDING_REASONS = _listing(ReasonKind.NOT_RECORDING, [
    ("state-secret", "涉及国家秘密", "state secret"),
    ("commercial-secret", "涉及商业秘密", "commercial secret"),
    ("personal-privacy", "涉及个人隐私", "personal privacy"),
    ("work-secret", "涉及工作秘密", "work secret"),
    ("emergency", "情况紧急，不能进行执法记录", "emergency"),
    ("objective-impossibility", "因客观原因无法进行执法记录", "objective impossibility"),
])

_LISTS = {ReasonKind.INTERRUPTION: INTERRUPTION_REASONS, ReasonKind.NOT_RECORDING: NOT_RECORDING_REASONS}

# What the device itself can tell about an interruption cause (firmware.states
# causes); offered as a suggestion, the officer's own statement is still required.
SUGGESTED_FOR_CAUSE = {
    "fault": "device-fault",
    "camera-stall": "device-fault",
    "microphone-stall": "device-fault",
    "low-battery": "low-battery",
    "storage-full": "storage-full",
    "power-loss": "low-battery",
}


class UnknownReason(ValueError):
    """A code or press count that names no reason in the list asked for."""


def reasons(kind: ReasonKind) -> tuple[Reason, ...]:
    return _LISTS[ReasonKind(kind)]


def by_code(kind: ReasonKind, code: str) -> Reason:
    for reason in reasons(kind):
        if reason.code == code:
            return reason
    known = ", ".join(r.code for r in reasons(kind))
    raise UnknownReason(f"{code!r} is not a {ReasonKind(kind).value} reason; known: {known}")


def by_press_count(kind: ReasonKind, count: int) -> Reason:
    """The reason selected by ``count`` presses of the mark button (1-based)."""
    listing = reasons(kind)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(listing):
        raise UnknownReason(f"{count!r} presses select no {ReasonKind(kind).value} reason "
                            f"(1-{len(listing)})")
    return listing[count - 1]
