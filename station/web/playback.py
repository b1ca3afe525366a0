"""Playing the verified originals in the browser: an HLS playlist over the original MPEG-TS segments.

The bytes the browser plays are the journaled bytes (hls.js transmuxes them in the page):
no re-encoded copy exists. A segment encrypted on the device is decrypted here, in memory,
for the one request, after its ciphertext and then its plaintext were checked against what
the device signed (docs/encryption.md); nothing decrypted is written to disk.
Playing is viewing (S8): "播放" goes through
``station.access.viewer.view`` — the access rules, an audited ``view`` record — and opens a
playback for this session and recording, valid ``PLAYBACK_HOURS``, or until the approval it
was opened under is revoked (checked at every fetch). Each segment is hashed
against the catalogue as it is served (not all of them when play is pressed: an hour is
gigabytes, and the first frame must not wait for them); a mismatch refuses it and raises an
integrity alert in the audit journal.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field

from station.access import viewer
from station.access.viewer import SegmentFile
from station.app import Station
from station.clock import NS_PER_HOUR
from station.db import models as m
from station.errors import NotAllowed, NotFound

PLAYBACK_HOURS = 1


@dataclass(frozen=True)
class Playback:
    access_id: int
    recording: m.Recording
    segments: dict[int, SegmentFile]
    durations: dict[int, float]
    expires_ns: int
    journal_seqs: dict[int, int] = field(default_factory=dict)   # index -> the attesting device record
    request_id: int | None = None          # the approved request it was opened under (None: own recording)


class Playbacks:
    """The open playbacks of this server, by (session, recording). In memory: a restart ends them."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, int], Playback] = {}
        self._lock = threading.Lock()

    def start(self, st: Station, session: str, user: m.User, recording_id: int, reason: str) -> Playback:
        # NotAllowed / Conflict; every segment is hashed as it is served (segment()), not all up front
        seen = viewer.view(st, user, recording_id, reason, hash_now=False)
        with st.db.session() as s:
            rows = {g.index: g for g in s.query(m.Segment).filter(m.Segment.recording == recording_id)}
        durations = {g.index: max(0.1, (rows[g.index].end_wall_ns - rows[g.index].start_wall_ns) / 1e9 + 0.04)
                     for g in seen.segments if g.index in rows}
        pb = Playback(seen.access.id, seen.recording, {g.index: g for g in seen.segments}, durations,
                      st.now_ns() + PLAYBACK_HOURS * NS_PER_HOUR,
                      {g.index: rows[g.index].journal_seq for g in seen.segments if g.index in rows},
                      seen.access.request_id)
        with self._lock:
            self._open[(session, recording_id)] = pb
        return pb

    def get(self, st: Station, session: str, recording_id: int) -> Playback:
        with self._lock:
            pb = self._open.get((session, recording_id))
        if pb is None or pb.expires_ns < st.now_ns():
            raise NotAllowed("no playback is open for this recording: press 播放 (it checks the access rules)")
        if pb.request_id is not None:
            with st.db.session() as s:
                grant = s.get(m.AccessRequest, pb.request_id)
            if grant is None or grant.status != "approved":
                with self._lock:
                    if self._open.get((session, recording_id)) is pb:
                        del self._open[(session, recording_id)]
                raise NotAllowed(f"the approval this playback was opened under (request {pb.request_id}) "
                                 "was revoked")
        return pb

    @staticmethod
    def playlist(pb: Playback, recording_id: int) -> str:
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-PLAYLIST-TYPE:VOD",
                 f"#EXT-X-TARGETDURATION:{int(max(pb.durations.values(), default=1) + 1)}",
                 "#EXT-X-MEDIA-SEQUENCE:0"]
        previous = None
        for index in sorted(pb.segments):
            if previous is not None and index != previous + 1:
                lines.append("#EXT-X-DISCONTINUITY")     # a segment not in the store (quarantined)
            lines.append(f"#EXTINF:{pb.durations.get(index, 1.0):.3f},")
            lines.append(f"/recordings/{recording_id}/segments/{index}.ts")
            previous = index
        lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"

    @staticmethod
    def segment(st: Station, user: m.User, pb: Playback, index: int) -> bytes:
        """The original segment's bytes, after checking them against the catalogue's SHA-256;
        an encrypted one decrypted with the agency key and its plaintext checked against the
        device journal (``viewer.segment_plaintext``)."""
        seg = pb.segments.get(index)
        if seg is None:
            raise NotFound(f"recording {pb.recording.id} has no stored segment {index}")
        try:
            data = seg.path.read_bytes()
        except FileNotFoundError:
            raise viewer.integrity_alert(st, user.username, pb.recording, seg, None, None, "play") from None
        found = hashlib.sha256(data).hexdigest()
        if found != seg.sha256 or len(data) != seg.size:
            raise viewer.integrity_alert(st, user.username, pb.recording, seg, found, len(data), "play")
        return viewer.segment_plaintext(st, user.username, pb.recording, seg, data,
                                        pb.journal_seqs.get(index, -1), "play")
