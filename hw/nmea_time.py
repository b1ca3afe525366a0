"""NMEA bytes in, trusted GPS fixes out: framing, checksums and time validation.

A GNSS receiver on a UART is the device's best clock in the field, and also a
source of junk: half lines after power-up, line noise, binary protocol
frames, default dates before a fix, week-number rollover, sudden jumps. This
module turns any byte stream into :class:`GpsFix` values and counts every
sentence it refuses by a named reason. It never raises on input: a recording
whose time came from a crashed or fooled parser is worthless.

The port I/O (and reconnects) lives in :mod:`hw.gps`; this module is pure so it
can be fuzzed byte by byte.

Time rules, in order (the first that fails names the reject reason):

* only RMC (status ``A``), GGA (quality > 0), GNS (a fix mode for at least one
  constellation) and ZDA (while the receiver has reported a fix in the last few
  seconds) carry trusted time; GGA and GNS carry no date and take it from the
  established time line;
* the date must lie in ``[min_date, max_date)``. Dates earlier than that by
  exactly one GPS week-number rollover (1024 weeks) are *corrected* by default:
  the receiver's time of week is right and only its week count wrapped, and a
  receiver with that firmware bug would otherwise never give time again.
  Only a window of 1024 weeks before ``min_date`` is corrected, so receiver
  default dates (1980-01-06, 1999-08-22, 2080...) are still rejected.
  ``wnro="reject"`` refuses them instead;
* the time line must be consistent with the monotonic clock: a new time line
  (first fix, or a jump) is only trusted after ``confirm_epochs`` consecutive
  consistent seconds, so one bad sentence can never step the clock.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pynmea2

log = logging.getLogger(__name__)

#: NMEA 0183 says 82 characters including ``$`` and CR LF; some receivers
#: exceed it a little, so the default limit is looser.
MAX_SENTENCE_CHARS = 120

#: Talkers accepted: GPS, multi-GNSS, GLONASS, Galileo, BeiDou (old and new
#: identifiers), QZSS, NavIC.
TALKERS = frozenset({"GP", "GN", "GL", "GA", "BD", "GB", "GQ", "GI"})

TIME_SENTENCES = frozenset({"RMC", "GGA", "GNS", "ZDA"})

GPS_WEEK_ROLLOVER = dt.timedelta(weeks=1024)

#: GGA qualities that are a satellite fix: GPS, DGPS, PPS, RTK, float RTK.
#: 6 (dead reckoning), 7 (manual) and 8 (simulator) are not.
FIX_QUALITIES = frozenset({1, 2, 3, 4, 5})
_NO_FIX_MODES = frozenset({"N", "E", "M", "S"})

#: GNS mode indicator: one character per constellation (GPS, GLONASS, Galileo, BeiDou,
#: QZSS, NavIC...). These are a satellite fix, mapped to the GGA quality they match, best
#: first: RTK fixed, RTK float, precise, differential, autonomous.
GNS_FIX_MODES = {"R": 4, "F": 5, "P": 3, "D": 2, "A": 1}
#: ... and these are not: no fix, estimated (dead reckoning), manual, simulator (as GGA 0/6/7/8).
GNS_NO_FIX_MODES = {"N": 0, "E": -6, "M": -7, "S": -8}
GNS_MAX_CONSTELLATIONS = 8
_TERMINATORS = re.compile(rb"[\r\n$]")
_WHITESPACE = b" \t\r\n\x00"
_TIME_RE = re.compile(r"^(\d\d)(\d\d)(\d\d)(\.\d{1,6})?$")
_COORD_RE = re.compile(r"^(\d{2,3})(\d\d\.\d+|\d\d)$")


# Reject reasons: every refused sentence or refused time is counted under one.
NOISE = "noise"                    # bytes outside any sentence (binary frames, half lines)
TRUNCATED = "truncated"            # a sentence cut by a new '$' before its end
TOO_LONG = "too_long"              # longer than the sentence limit
NON_ASCII = "non_ascii"            # bytes outside printable ASCII inside a sentence
NO_CHECKSUM = "no_checksum"
BAD_CHECKSUM = "bad_checksum"
UNPARSABLE = "unparsable"          # pynmea2 could not parse it
BAD_FIELD = "bad_field"            # a time, date or coordinate field is malformed
NO_TIME = "no_time"                # the sentence carries no time of day
NO_FIX = "no_fix"                  # the receiver says it has no fix (RMC V, GGA 0)
NO_DATE = "no_date"                # GGA time with no trusted date to attach it to
LEAP_SECOND = "leap_second"        # 23:59:60 cannot be represented; skipped
IMPLAUSIBLE_DATE = "implausible_date"  # receiver default date or out of range
WEEK_ROLLOVER = "week_rollover"    # WNRO date, when the policy is "reject"
UNCONFIRMED = "unconfirmed"        # new time line not yet confirmed by enough epochs
TIME_JUMP = "time_jump"            # inconsistent with the established time line
INTERNAL_ERROR = "internal_error"  # a bug caught by the safety net (tests require 0)


@dataclass(frozen=True)
class TimePolicy:
    """What the decoder accepts as trusted time."""

    min_date: dt.date = dt.date(2024, 1, 1)   # nothing real can be earlier than the firmware
    max_date: dt.date = dt.date(2044, 1, 1)
    wnro: str = "correct"                     # "correct" or "reject"
    confirm_epochs: int = 3                   # consistent seconds before a time line is trusted
    jump_tolerance_s: float = 2.0             # sentence latency is < 1 s; more is a jump
    zda_fix_window_s: float = 3.0             # ZDA is trusted only this long after a fix
    max_sentence_chars: int = MAX_SENTENCE_CHARS

    def __post_init__(self) -> None:
        if self.wnro not in ("correct", "reject"):
            raise ValueError(f"wnro must be 'correct' or 'reject', not {self.wnro!r}")
        if self.confirm_epochs < 1:
            raise ValueError("confirm_epochs must be at least 1")
        if not self.min_date < self.max_date:
            raise ValueError("min_date must be before max_date")


@dataclass(frozen=True)
class GpsFix:
    """One time/position sentence from the receiver, judged.

    ``utc`` is set only when the time passed every rule; otherwise
    ``time_rejected`` names why. ``received_mono_ns`` is the monotonic instant
    the sentence's ``$`` arrived, for time transfer.
    """

    sentence: str                       # "RMC", "GGA", "GNS" or "ZDA"
    talker: str                         # "GN", "GP", ...
    received_mono_ns: int
    utc: dt.datetime | None             # trusted UTC of the fix epoch (tz-aware)
    position: tuple[float, float] | None  # (lat, lon) in signed degrees
    fix_quality: int                    # GGA quality (negative: 6/7/8, not a fix); RMC: 1 or 0;
                                        # GNS: its best mode as the GGA quality it matches
    satellites: int | None = None
    hdop: float | None = None
    time_rejected: str | None = None
    corrections: tuple[str, ...] = ()   # e.g. ("week_rollover",)
    new_epoch: bool = False             # first trusted sentence of a new second

    @property
    def has_fix(self) -> bool:
        return self.fix_quality > 0


@dataclass
class DecoderStats:
    """Counters, by reason or type; all monotonically increasing."""

    frames: int = 0                          # complete '$'-lines examined
    noise_bytes: int = 0
    parsed: Counter[str] = field(default_factory=Counter)     # time sentences parsed, by type
    ignored: Counter[str] = field(default_factory=Counter)    # other sentence types
    rejected: Counter[str] = field(default_factory=Counter)   # reason -> sentences refused
    time_rejected: Counter[str] = field(default_factory=Counter)  # reason -> times refused
    corrected: Counter[str] = field(default_factory=Counter)  # correction -> count

    def snapshot(self) -> dict[str, Any]:
        return {
            "frames": self.frames, "noise_bytes": self.noise_bytes,
            "parsed": dict(self.parsed), "ignored": dict(self.ignored),
            "rejected": dict(self.rejected), "time_rejected": dict(self.time_rejected),
            "corrected": dict(self.corrected),
        }


class _Timeline:
    """Trusted mapping between receiver UTC and the monotonic clock.

    Sentences are checked against an anchor pair (utc, mono) that is kept for
    up to ``REANCHOR_S``, not moved with every sentence, so a frozen or slow
    receiver clock drifts out of tolerance instead of dragging the anchor along.
    """

    REANCHOR_S = 600.0
    MONO_DRIFT = 5e-4   # monotonic clock vs true time, incl. chrony's slewing

    def __init__(self, policy: TimePolicy) -> None:
        self._policy = policy
        self.anchor: tuple[dt.datetime, int] | None = None
        self._candidate: tuple[dt.datetime, int] | None = None
        self._candidate_epochs = 0
        self._candidate_last: dt.datetime | None = None

    def _consistent(self, ref: tuple[dt.datetime, int], utc: dt.datetime, mono_ns: int) -> bool:
        elapsed = (mono_ns - ref[1]) / 1e9
        expected = ref[0] + dt.timedelta(seconds=elapsed)
        tolerance = self._policy.jump_tolerance_s + self.MONO_DRIFT * abs(elapsed)
        return abs((utc - expected).total_seconds()) <= tolerance

    def expected(self, mono_ns: int) -> dt.datetime | None:
        if self.anchor is None:
            return None
        return self.anchor[0] + dt.timedelta(seconds=(mono_ns - self.anchor[1]) / 1e9)

    def check(self, utc: dt.datetime, mono_ns: int) -> tuple[str | None, bool]:
        """Return (reject reason or None, whether this re-established a jumped line)."""
        if self.anchor is not None and self._consistent(self.anchor, utc, mono_ns):
            if (mono_ns - self.anchor[1]) / 1e9 > self.REANCHOR_S:
                self.anchor = (utc, mono_ns)
            self._candidate = None
            return None, False
        if self._candidate is not None and self._consistent(self._candidate, utc, mono_ns):
            if utc != self._candidate_last:
                self._candidate_epochs += 1
                self._candidate_last = utc
        else:
            self._candidate = (utc, mono_ns)
            self._candidate_epochs = 1
            self._candidate_last = utc
        if self._candidate_epochs >= self._policy.confirm_epochs:
            prior = self.expected(mono_ns)   # None while there is no time line (no anchor)
            jumped = prior is not None
            if prior is not None:
                log.warning("GPS time line moved by %.3f s; accepted after %d consistent epochs",
                            (utc - prior).total_seconds(),
                            self._candidate_epochs)
            self.anchor = (utc, mono_ns)
            self._candidate = None
            return None, jumped
        return (TIME_JUMP if self.anchor is not None else UNCONFIRMED), False


class NmeaDecoder:
    """Feed bytes with their arrival time, get judged fixes; never raises on input."""

    def __init__(self, policy: TimePolicy | None = None) -> None:
        self.policy = policy or TimePolicy()
        self.stats = DecoderStats()
        self._line: bytearray | None = None
        self._line_mono = 0
        self._discarding = False
        self._in_noise = False
        self._timeline = _Timeline(self.policy)
        self._last_fix_mono: int | None = None
        self._last_epoch: dt.datetime | None = None
        self._warned_wnro = False

    # ----------------------------------------------------------------- framing

    def feed(self, data: bytes, mono_ns: int, char_time_ns: int = 0) -> list[GpsFix]:
        """Decode ``data`` read at ``mono_ns``.

        ``char_time_ns`` is the wire time of one character (10 bits / baud on a
        real UART, 0 for a pty): it dates each ``$`` back from the read instant.
        """
        fixes: list[GpsFix] = []
        try:
            self._frame(bytes(data), mono_ns, char_time_ns, fixes)
        except Exception:  # safety net: a parser bug must not stop the clock feed
            log.exception("NMEA framing failed; buffer dropped")
            self.stats.rejected[INTERNAL_ERROR] += 1
            self._line = None
            self._discarding = False
        return fixes

    def _noise(self, junk: bytes) -> None:
        """Count junk between sentences: one reject per run, however it is chunked."""
        junk = junk.strip(_WHITESPACE)
        if junk:
            self.stats.noise_bytes += len(junk)
            if not self._in_noise:
                self.stats.rejected[NOISE] += 1
                self._in_noise = True

    def _frame(self, data: bytes, mono_ns: int, char_ns: int, out: list[GpsFix]) -> None:
        n = len(data)
        pos = 0
        limit = self.policy.max_sentence_chars
        while pos < n:
            if self._line is None:
                start = data.find(b"$", pos)
                end = n if start < 0 else start
                if self._discarding:
                    # Drop the rest of an over-long line: up to its end or the next '$'.
                    stop = _TERMINATORS.search(data, pos, end)
                    if stop is None and start < 0:
                        break
                    self._discarding = False
                    if stop is not None:
                        self._noise(data[stop.end():end])
                else:
                    self._noise(data[pos:end])
                if start < 0:
                    break
                self._in_noise = False
                self._line = bytearray()
                self._line_mono = mono_ns - (n - 1 - start) * char_ns
                pos = start + 1
                continue
            stop = _TERMINATORS.search(data, pos)
            end = n if stop is None else stop.start()
            room = limit + 1 - len(self._line)
            self._line += data[pos:min(end, pos + room)]
            if len(self._line) > limit:
                self.stats.frames += 1
                self.stats.rejected[TOO_LONG] += 1
                self._line = None
                self._discarding = True
                pos = end
                continue
            if stop is None:
                break
            line, self._line = bytes(self._line), None
            self.stats.frames += 1
            if stop.group() == b"$":
                self.stats.rejected[TRUNCATED] += 1
                pos = end
                continue
            pos = end + 1
            try:
                fix = self._sentence(line, self._line_mono)
            except Exception:
                log.exception("NMEA sentence handling failed: %r", line[:limit])
                self.stats.rejected[INTERNAL_ERROR] += 1
                fix = None
            if fix is not None:
                out.append(fix)

    # ---------------------------------------------------------------- sentence

    def _reject(self, reason: str) -> None:
        self.stats.rejected[reason] += 1

    def _sentence(self, body: bytes, mono_ns: int) -> GpsFix | None:
        if not body.strip(_WHITESPACE):
            self._reject(TRUNCATED)
            return None
        if any(b < 0x20 or b > 0x7E for b in body):
            self._reject(NON_ASCII)
            return None
        text = body.decode("ascii")
        star = text.rfind("*")
        if star < 0 or star != len(text) - 3:
            self._reject(NO_CHECKSUM)
            return None
        try:
            given = int(text[star + 1:], 16)
        except ValueError:
            self._reject(BAD_CHECKSUM)
            return None
        computed = 0
        for ch in body[:star]:
            computed ^= ch
        if given != computed:
            self._reject(BAD_CHECKSUM)
            return None
        try:
            msg = pynmea2.parse("$" + text, check=True)
        except pynmea2.SentenceTypeError:
            self.stats.ignored[text[2:5] if len(text) >= 5 else text] += 1
            return None
        except (pynmea2.ParseError, ValueError, TypeError):
            self._reject(UNPARSABLE)
            return None
        kind = getattr(msg, "sentence_type", None)
        talker = getattr(msg, "talker", None)
        if kind not in TIME_SENTENCES or talker not in TALKERS:
            self.stats.ignored[f"{talker or 'P'}{kind or ''}"] += 1
            return None
        try:
            parsed = _PARSERS[kind](msg)
        except (ValueError, IndexError, KeyError, TypeError, OverflowError):
            self._reject(BAD_FIELD)
            return None
        self.stats.parsed[kind] += 1
        return self._judge(kind, talker, mono_ns, parsed)

    # -------------------------------------------------------------------- time

    def _judge(self, kind: str, talker: str, mono_ns: int, p: "_Parsed") -> GpsFix:
        if p.fix_quality > 0:
            self._last_fix_mono = mono_ns
        corrections: list[str] = []
        utc, reason = None, None
        try:
            utc, reason, jumped = self._trusted_time(kind, p, mono_ns, corrections)
        except (ValueError, OverflowError):
            reason, jumped = BAD_FIELD, False
        if jumped:
            corrections.append(TIME_JUMP)
        new_epoch = False
        if reason is not None:
            self.stats.time_rejected[reason] += 1
            utc = None
        else:
            for c in corrections:
                self.stats.corrected[c] += 1
            new_epoch = utc != self._last_epoch
            self._last_epoch = utc
        return GpsFix(kind, talker, mono_ns, utc,
                      p.position if p.fix_quality > 0 else None,
                      p.fix_quality, p.satellites, p.hdop, reason, tuple(corrections),
                      new_epoch)

    def _trusted_time(self, kind: str, p: "_Parsed", mono_ns: int,
                      corrections: list[str]) -> tuple[dt.datetime | None, str | None, bool]:
        if p.leap_second:
            return None, LEAP_SECOND, False
        if p.time is None:
            return None, NO_TIME, False
        if kind == "ZDA":
            recent = (self._last_fix_mono is not None and
                      mono_ns - self._last_fix_mono <= self.policy.zda_fix_window_s * 1e9)
            if not recent:
                return None, NO_FIX, False
        elif p.fix_quality <= 0:
            return None, NO_FIX, False
        date = p.date
        if date is None:
            date = self._date_for(p.time, mono_ns)
            if date is None:
                return None, NO_DATE, False
        else:
            date, reason = self._plausible_date(date, corrections)
            if reason is not None:
                return None, reason, False
        utc = dt.datetime.combine(date, p.time, tzinfo=dt.timezone.utc)
        reason, jumped = self._timeline.check(utc, mono_ns)
        return utc, reason, jumped

    def _plausible_date(self, date: dt.date, corrections: list[str]) -> tuple[dt.date, str | None]:
        pol = self.policy
        if pol.min_date <= date < pol.max_date:
            return date, None
        if pol.min_date - GPS_WEEK_ROLLOVER <= date < pol.min_date:
            if pol.wnro == "reject":
                return date, WEEK_ROLLOVER
            fixed = date + GPS_WEEK_ROLLOVER
            if pol.min_date <= fixed < pol.max_date:
                if not self._warned_wnro:
                    log.warning("GPS receiver reports %s: week-number rollover, corrected to %s",
                                date, fixed)
                    self._warned_wnro = True
                corrections.append(WEEK_ROLLOVER)
                return fixed, None
        return date, IMPLAUSIBLE_DATE

    def _date_for(self, tod: dt.time, mono_ns: int) -> dt.date | None:
        """Date for a time-only sentence (GGA, GNS), from the established time line."""
        expected = self._timeline.expected(mono_ns)
        if expected is None:
            return None
        # the nearest of yesterday, today and tomorrow at ``tod`` (the first of equally near ones)
        cands = [dt.datetime.combine(expected.date() + dt.timedelta(days=delta), tod, tzinfo=dt.timezone.utc)
                 for delta in (-1, 0, 1)]
        return min(cands, key=lambda cand: abs(cand - expected)).date()


# ------------------------------------------------------------------- fields

@dataclass
class _Parsed:
    time: dt.time | None
    date: dt.date | None
    fix_quality: int
    position: tuple[float, float] | None
    satellites: int | None = None
    hdop: float | None = None
    leap_second: bool = False


def _field(msg: pynmea2.NMEASentence, name: str) -> str:
    idx = msg.name_to_idx[name]
    return msg.data[idx].strip() if idx < len(msg.data) else ""


def _time(raw: str) -> tuple[dt.time | None, bool]:
    if not raw:
        return None, False
    m = _TIME_RE.match(raw)
    if not m:
        raise ValueError(f"bad time {raw!r}")
    hh, mm, ss = int(m[1]), int(m[2]), int(m[3])
    if ss == 60 and hh == 23 and mm == 59:
        return None, True
    micro = round(float(m[4]) * 1e6) if m[4] else 0
    return dt.time(hh, mm, ss, min(micro, 999_999), tzinfo=dt.timezone.utc), False


def _coord(raw: str, hemi: str, pos: str, neg: str, limit: float) -> float | None:
    if not raw and not hemi:
        return None
    m = _COORD_RE.match(raw)
    if not m or hemi not in (pos, neg):
        raise ValueError(f"bad coordinate {raw!r} {hemi!r}")
    minutes = float(m[2])
    if minutes >= 60:
        raise ValueError(f"bad minutes {raw!r}")
    value = int(m[1]) + minutes / 60
    if value > limit:
        raise ValueError(f"coordinate out of range {raw!r}")
    return value if hemi == pos else -value


def _position(msg: pynmea2.NMEASentence) -> tuple[float, float] | None:
    lat = _coord(_field(msg, "lat"), _field(msg, "lat_dir"), "N", "S", 90.0)
    lon = _coord(_field(msg, "lon"), _field(msg, "lon_dir"), "E", "W", 180.0)
    if lat is None or lon is None:
        return None
    return lat, lon


def _optional_int(raw: str) -> int | None:
    return int(raw) if raw else None


def _optional_float(raw: str) -> float | None:
    value = float(raw) if raw else None
    if value is not None and not (0 <= value < 1e4):
        raise ValueError(f"bad value {raw!r}")
    return value


def _parse_rmc(msg: pynmea2.NMEASentence) -> _Parsed:
    tod, leap = _time(_field(msg, "timestamp"))
    raw_date = _field(msg, "datestamp")
    date = dt.datetime.strptime(raw_date, "%d%m%y").date() if raw_date else None
    status = _field(msg, "status")
    if status not in ("A", "V"):
        raise ValueError(f"bad RMC status {status!r}")
    # NMEA 2.3+ mode indicator: no fix, estimated (dead reckoning), manual or
    # simulator output is not a satellite fix even with status A.
    mode = msg.data[11].strip() if len(msg.data) > 11 else ""
    valid = status == "A" and mode not in _NO_FIX_MODES
    position = _position(msg) if valid else None
    if valid and position is None:
        raise ValueError("RMC with fix but no position")
    return _Parsed(tod, date, 1 if valid else 0, position, leap_second=leap)


def _parse_gga(msg: pynmea2.NMEASentence) -> _Parsed:
    tod, leap = _time(_field(msg, "timestamp"))
    quality = int(_field(msg, "gps_qual") or "0")
    if not 0 <= quality <= 9:
        raise ValueError(f"bad GGA quality {quality}")
    if quality not in FIX_QUALITIES:
        quality = 0 if quality == 0 else -quality   # estimated/manual/simulated: no fix
    return _fix(msg, "GGA", tod, leap, quality, "horizontal_dil")


def _parse_gns(msg: pynmea2.NMEASentence) -> _Parsed:
    """GNS: the multi-constellation GGA. Its fix is in the mode indicator, one character
    per constellation: a fix if any of them is A/D/P/R/F; 'N' (no fix), 'E', 'M', 'S' are not."""
    tod, leap = _time(_field(msg, "timestamp"))
    mode = _field(msg, "mode_indicator")
    if not mode or len(mode) > GNS_MAX_CONSTELLATIONS or \
            any(c not in GNS_FIX_MODES and c not in GNS_NO_FIX_MODES for c in mode):
        raise ValueError(f"bad GNS mode indicator {mode!r}")
    fixes = [GNS_FIX_MODES[c] for c in GNS_FIX_MODES if c in mode]
    if fixes:
        quality = fixes[0]
    else:   # no constellation has a fix: the first that says why (estimated, manual...), else 0
        quality = next((GNS_NO_FIX_MODES[c] for c in mode if c != "N"), 0)
    return _fix(msg, "GNS", tod, leap, quality, "hdop")


def _fix(msg: pynmea2.NMEASentence, kind: str, tod: dt.time | None, leap: bool, quality: int,
         hdop_field: str) -> _Parsed:
    """What GGA and GNS share once their fix quality is known: position (required with a
    fix), satellite count and HDOP, checked the same way for both."""
    position = _position(msg) if quality > 0 else None
    if quality > 0 and position is None:
        raise ValueError(f"{kind} with fix but no position")
    sats = _optional_int(_field(msg, "num_sats"))
    if sats is not None and not 0 <= sats <= 999:
        raise ValueError(f"bad satellite count {sats}")
    return _Parsed(tod, None, quality, position, sats, _optional_float(_field(msg, hdop_field)), leap)


def _parse_zda(msg: pynmea2.NMEASentence) -> _Parsed:
    tod, leap = _time(_field(msg, "timestamp"))
    day, month, year = (_field(msg, n) for n in ("day", "month", "year"))
    date = dt.date(int(year), int(month), int(day)) if (day and month and year) else None
    return _Parsed(tod, date, 0, None, leap_second=leap)


_PARSERS = {"RMC": _parse_rmc, "GGA": _parse_gga, "GNS": _parse_gns, "ZDA": _parse_zda}
