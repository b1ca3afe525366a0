"""The catalogue: every table of the station, in SQLAlchemy 2's typed declarative form.

The database is an index over the evidence (device journals, stored files) and the
station's own audit journal, never the only record: every row a station action writes
is attested, by a digest of its columns, in that action's audit record
(``station.audit.trail``), and ``station verify`` finds a row changed behind the
station's back. So no column holds a float (a record is integer-only) and every time
is an integer of nanoseconds since the epoch (``*_ns``).

Schema changes go through Alembic (``station/db/migrations``); a test checks the
migrations and these models agree.
"""
from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

Ns = BigInteger   # nanoseconds since the epoch (UTC)


class Base(DeclarativeBase):
    pass


# ---- the station and its audit journal ------------------------------------------------
class Station(Base):
    """A station writing to this catalogue (one, or several sharing a PostgreSQL)."""

    __tablename__ = "stations"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    unit: Mapped[str] = mapped_column(Text)
    pubkey_pem: Mapped[str] = mapped_column(Text)          # its audit-journal signing key
    key_id: Mapped[str] = mapped_column(String(64))         # recorder.identity.device_id_for of that key
    created_ns: Mapped[int] = mapped_column(Ns)


class AuditEntry(Base):
    """One line of a station's audit journal, kept first here (same transaction as the change
    it attests), then appended to ``<store>/audit/journal.log``: the outbox that makes
    "changed and journaled" one step even across a crash (``station.audit.trail``)."""

    __tablename__ = "audit_entries"
    station: Mapped[str] = mapped_column(String(64), ForeignKey("stations.name"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    type: Mapped[str] = mapped_column(String(48))
    actor: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(Text)              # what it is about, e.g. "recording:12"
    wall_ns: Mapped[int] = mapped_column(Ns)
    hash: Mapped[str] = mapped_column(String(64))           # sha256 of the line (the chain)
    line: Mapped[str] = mapped_column(Text)                 # the exact signed line, ASCII
    __table_args__ = (Index("ix_audit_subject", "subject"), Index("ix_audit_actor", "actor"))


# ---- people -----------------------------------------------------------------------------
class User(Base):
    """A local account (S8). ``roles``: comma-separated of officer, clerk, approver, auditor, admin."""

    __tablename__ = "users"
    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_name: Mapped[str] = mapped_column(Text)
    officer_no: Mapped[str | None] = mapped_column(String(32), unique=True)   # 警号, for officers
    unit: Mapped[str] = mapped_column(Text, default="")
    roles: Mapped[str] = mapped_column(Text)
    supervisor: Mapped[str | None] = mapped_column(String(64), ForeignKey("users.username"))
    password_hash: Mapped[str] = mapped_column(Text)       # argon2id (argon2-cffi)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_ns: Mapped[int] = mapped_column(Ns)


# ---- devices, handovers and dockings (S9, D11, D12) ------------------------------------------
class Device(Base):
    __tablename__ = "devices"
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pubkey_pem: Mapped[str] = mapped_column(Text)
    officer_id: Mapped[str | None] = mapped_column(String(32))   # personally issued to (D12), if not pooled
    label: Mapped[str | None] = mapped_column(Text)
    registered_at_ns: Mapped[int] = mapped_column(Ns)


class Assignment(Base):
    """A device checked out to an officer (D12): a station-signed assignment sent to the device."""

    __tablename__ = "assignments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64), ForeignKey("devices.device_id"))
    officer_id: Mapped[str] = mapped_column(String(32))
    officer_unit: Mapped[str] = mapped_column(Text, default="")
    checked_out_ns: Mapped[int] = mapped_column(Ns)
    checked_out_by: Mapped[str] = mapped_column(String(64))
    checked_in_ns: Mapped[int | None] = mapped_column(Ns)
    checked_in_by: Mapped[str | None] = mapped_column(String(64))
    assignment: Mapped[str] = mapped_column(Text)             # the signed assignment as sent (JSON)
    device_ack: Mapped[str | None] = mapped_column(Text)      # the device's answer (JSON)
    __table_args__ = (Index("ix_assignments_device", "device_id"),)


class Docking(Base):
    __tablename__ = "dockings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    station: Mapped[str | None] = mapped_column(String(64))
    device_id: Mapped[str] = mapped_column(String(64))
    officer_id: Mapped[str | None] = mapped_column(String(32))
    checked_in_ns: Mapped[int] = mapped_column(Ns)
    checked_out_ns: Mapped[int | None] = mapped_column(Ns)
    status: Mapped[str] = mapped_column(String(16))   # in-progress ok partial quarantined interrupted refused
    used_from_ns: Mapped[int | None] = mapped_column(Ns)
    used_until_ns: Mapped[int | None] = mapped_column(Ns)
    head_seq: Mapped[int | None] = mapped_column(BigInteger)
    head_hash: Mapped[str | None] = mapped_column(String(64))
    records: Mapped[int | None] = mapped_column(Integer)
    files_new: Mapped[int | None] = mapped_column(Integer)
    bytes_new: Mapped[int | None] = mapped_column(BigInteger)
    bytes_resumed: Mapped[int | None] = mapped_column(BigInteger)
    purged: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(Text)
    # a docking ingested while the catalogue was unreachable, replayed later (station.dock.spool):
    # "<station>:<spool seq>:<spool record hash>", the replay's idempotency key
    spool_ref: Mapped[str | None] = mapped_column(String(160), unique=True)
    __table_args__ = (Index("ix_dockings_device", "device_id"),)


class Receipt(Base):
    __tablename__ = "receipts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64))
    docking_id: Mapped[int] = mapped_column(Integer, ForeignKey("dockings.id"))
    counter: Mapped[int] = mapped_column(BigInteger)
    nonce: Mapped[str] = mapped_column(Text)
    head_seq: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))
    files: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    sent_ns: Mapped[int] = mapped_column(Ns)
    response: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (UniqueConstraint("device_id", "counter"),)


class QuarantinedFile(Base):
    __tablename__ = "quarantined_files"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64))
    docking_id: Mapped[int] = mapped_column(Integer, ForeignKey("dockings.id"))
    path: Mapped[str] = mapped_column(Text)
    recording_id: Mapped[str | None] = mapped_column(Text)
    seg_index: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    expected_sha256: Mapped[str | None] = mapped_column(String(64))
    expected_size: Mapped[int | None] = mapped_column(BigInteger)
    found_sha256: Mapped[str | None] = mapped_column(String(64))
    found_size: Mapped[int | None] = mapped_column(BigInteger)
    detail: Mapped[str | None] = mapped_column(Text)
    quarantine_dir: Mapped[str | None] = mapped_column(Text)
    quarantined_ns: Mapped[int] = mapped_column(Ns)
    resolved_docking_id: Mapped[int | None] = mapped_column(Integer)


# ---- what was recorded (S1, S3) -------------------------------------------------------------------
class Recording(Base):
    """One recording of one device as ingested; ``status`` stored or purged (the row stays: S11
    tombstone). ``name`` is the S3 name of the human-readable view (renamed on labelling)."""

    __tablename__ = "recordings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64))
    recording_id: Mapped[str] = mapped_column(String(128))
    station: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(Text)
    unit: Mapped[str] = mapped_column(Text)
    counterpart: Mapped[str] = mapped_column(Text)
    content: Mapped[str] = mapped_column(Text)
    date: Mapped[str] = mapped_column(String(8))
    officer_id: Mapped[str | None] = mapped_column(String(32))
    start_wall_ns: Mapped[int | None] = mapped_column(Ns)
    end_wall_ns: Mapped[int | None] = mapped_column(Ns)
    time_quality: Mapped[str | None] = mapped_column(String(16))   # worst stamp quality of its segments
    segments: Mapped[int | None] = mapped_column(Integer)
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    docking_id: Mapped[int | None] = mapped_column(Integer)
    ingested_ns: Mapped[int | None] = mapped_column(Ns)            # first stored: the S2 clock starts here
    status: Mapped[str] = mapped_column(String(16), default="stored")   # stored | purged
    retention_end_ns: Mapped[int | None] = mapped_column(Ns)       # computed (S5); None while held
    purged_ns: Mapped[int | None] = mapped_column(Ns)
    __table_args__ = (UniqueConstraint("device_id", "recording_id"),
                      Index("ix_recordings_officer", "officer_id"),
                      Index("ix_recordings_start", "start_wall_ns", "id"))   # the list: newest first, paged


class Segment(Base):
    __tablename__ = "segments"
    recording: Mapped[int] = mapped_column(Integer, ForeignKey("recordings.id"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text)          # in the device mirror (devices/<id>/mirror/<path>)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    start_wall_ns: Mapped[int] = mapped_column(Ns)
    end_wall_ns: Mapped[int] = mapped_column(Ns)
    time_quality: Mapped[str] = mapped_column(String(16))
    journal_seq: Mapped[int] = mapped_column(BigInteger)   # the device record that attests it
    present: Mapped[bool] = mapped_column(Boolean, default=True)   # False: quarantined or purged


class Interruption(Base):
    """An interruption or a not-recording reason from a device journal (D5, D6), for S4 and S10.
    ``needs_signoff``: a D6 reason, awaiting a supervisor's sign-off until ``signed_off_by``."""

    __tablename__ = "interruptions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64))
    journal_seq: Mapped[int] = mapped_column(BigInteger)
    recording_id: Mapped[str | None] = mapped_column(String(128))
    officer_id: Mapped[str | None] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32))          # the record type: interruption, reason, ...
    cause: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)       # None: reason missing
    wall_ns: Mapped[int] = mapped_column(Ns)
    needs_signoff: Mapped[bool] = mapped_column(Boolean, default=False)
    signed_off_by: Mapped[str | None] = mapped_column(String(64))
    signed_off_ns: Mapped[int | None] = mapped_column(Ns)
    signoff_note: Mapped[str | None] = mapped_column(Text)
    signoff_decision: Mapped[str | None] = mapped_column(String(16))   # approved | rejected (S10 sign-off)
    late: Mapped[bool] = mapped_column(Boolean, default=False)   # reason-given after its reason-missing
    __table_args__ = (UniqueConstraint("device_id", "journal_seq"),)


# ---- cases, labels (S2, S3, S4) -------------------------------------------------------------------
class Case(Base):
    __tablename__ = "cases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_no: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(Text)
    department: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="open")   # open | closed
    opened_ns: Mapped[int] = mapped_column(Ns)
    opened_by: Mapped[str] = mapped_column(String(64))
    closed_ns: Mapped[int | None] = mapped_column(Ns)


class Label(Base):
    """One version of a recording's label (S2). A correction adds a version and retires the old
    one (``current`` False, ``superseded_by``): history is never overwritten."""

    __tablename__ = "labels"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    recording: Mapped[int] = mapped_column(Integer, ForeignKey("recordings.id"))
    version: Mapped[int] = mapped_column(Integer)
    current: Mapped[bool] = mapped_column(Boolean, default=True)
    case_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("cases.id"))
    activity: Mapped[str | None] = mapped_column(Text)      # when not a case: the activity
    category: Mapped[str] = mapped_column(Text)
    counterpart: Mapped[str] = mapped_column(Text)          # 行政执法相对人
    content: Mapped[str] = mapped_column(Text)              # 检查内容
    place: Mapped[str] = mapped_column(Text)
    range_start_ns: Mapped[int | None] = mapped_column(Ns)  # a time range of the recording, or all
    range_end_ns: Mapped[int | None] = mapped_column(Ns)
    labelled_by: Mapped[str] = mapped_column(String(64))
    labelled_ns: Mapped[int] = mapped_column(Ns)
    correction_reason: Mapped[str | None] = mapped_column(Text)
    superseded_by: Mapped[int | None] = mapped_column(Integer)
    __table_args__ = (Index("ix_labels_recording", "recording"),)


# ---- keeping: holds, purges (S6, S11) ---------------------------------------------------------------
class Hold(Base):
    __tablename__ = "holds"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    recording: Mapped[int] = mapped_column(Integer, ForeignKey("recordings.id"))
    kind: Mapped[str] = mapped_column(String(32))   # dispute complaint assault mass-incident other
    text: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text, default="")   # why it was placed (S6; also in the audit record)
    placed_by: Mapped[str] = mapped_column(String(64))
    placed_ns: Mapped[int] = mapped_column(Ns)
    released_by: Mapped[str | None] = mapped_column(String(64))
    released_ns: Mapped[int | None] = mapped_column(Ns)
    release_reason: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (Index("ix_holds_recording", "recording"),)


class Purge(Base):
    """The tombstone of a purged recording (S11): what, why, who, when, and the hashes."""

    __tablename__ = "purges"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    recording: Mapped[int] = mapped_column(Integer, ForeignKey("recordings.id"), unique=True)
    purged_by: Mapped[str] = mapped_column(String(64))
    confirmed_by: Mapped[str] = mapped_column(String(64))
    purged_ns: Mapped[int] = mapped_column(Ns)
    reason: Mapped[str] = mapped_column(Text)
    retention_end_ns: Mapped[int] = mapped_column(Ns)
    files: Mapped[str] = mapped_column(Text)        # JSON: [{path, sha256, size}]


# ---- access (S8) --------------------------------------------------------------------------------------
class AccessRequest(Base):
    __tablename__ = "access_requests"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    recording: Mapped[int] = mapped_column(Integer, ForeignKey("recordings.id"))
    requester: Mapped[str] = mapped_column(String(64), ForeignKey("users.username"))
    action: Mapped[str] = mapped_column(String(8))           # view | copy
    reason: Mapped[str] = mapped_column(Text)
    requested_ns: Mapped[int] = mapped_column(Ns)
    status: Mapped[str] = mapped_column(String(16), default="pending")   # pending approved refused revoked
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_ns: Mapped[int | None] = mapped_column(Ns)
    decision_note: Mapped[str | None] = mapped_column(Text)
    valid_until_ns: Mapped[int | None] = mapped_column(Ns)
    revoked_by: Mapped[str | None] = mapped_column(String(64))         # an approval withdrawn early
    revoked_ns: Mapped[int | None] = mapped_column(Ns)
    revoke_note: Mapped[str | None] = mapped_column(Text)


class Access(Base):
    """Every attempt to view or copy (S8), granted or refused: who, why, when, under which approval."""

    __tablename__ = "accesses"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    recording: Mapped[int] = mapped_column(Integer, ForeignKey("recordings.id"))
    username: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(8))
    granted: Mapped[bool] = mapped_column(Boolean)
    request_id: Mapped[int | None] = mapped_column(Integer)
    approver: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    at_ns: Mapped[int] = mapped_column(Ns)


# ---- exports (S7) ----------------------------------------------------------------------------------------
class Export(Base):
    __tablename__ = "exports"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("cases.id"))
    directory: Mapped[str] = mapped_column(Text)
    maker: Mapped[str] = mapped_column(Text)        # 制作人
    extractor: Mapped[str] = mapped_column(Text)    # 提取人
    extracted_ns: Mapped[int] = mapped_column(Ns)
    copies: Mapped[int] = mapped_column(Integer, default=1)
    recordings: Mapped[str] = mapped_column(Text)   # JSON list of recording ids
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))   # complete
    created_by: Mapped[str] = mapped_column(String(64))


# ---- the web interface's sessions (not evidence: sign-in and sign-out are audited, the rows are not) --
class WebSession(Base):
    __tablename__ = "web_sessions"
    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)   # the cookie is never stored
    username: Mapped[str] = mapped_column(String(64), ForeignKey("users.username"))
    csrf: Mapped[str] = mapped_column(String(64))
    created_ns: Mapped[int] = mapped_column(Ns)
    last_seen_ns: Mapped[int] = mapped_column(Ns)
    ended_ns: Mapped[int | None] = mapped_column(Ns)


# ---- the agency store (station.sync, station/docs/agency.md) -------------------------------------------
class AgencyObject(Base):
    """One object this catalogue's stations put into the agency store: the outbox's memory of what
    is there (so a push is never repeated) and of the retention and legal hold it was given.
    Not attested by the audit journal: it is a cache of the store, which ``station sync --verify``
    reads back. ``state``: stored, conflict (other bytes under the key: alerted), deleted."""

    __tablename__ = "agency_objects"
    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    station: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))          # file | journal | audit
    device_id: Mapped[str | None] = mapped_column(String(64))
    recording: Mapped[int | None] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[str] = mapped_column(String(128), default="")
    retain_until_ns: Mapped[int | None] = mapped_column(Ns)
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(16), default="stored")
    last_seq: Mapped[int | None] = mapped_column(BigInteger)   # audit: the chunk's last line
    pushed_ns: Mapped[int] = mapped_column(Ns)
    deleted_ns: Mapped[int | None] = mapped_column(Ns)
    __table_args__ = (Index("ix_agency_objects_recording", "recording"),
                      Index("ix_agency_objects_station_kind", "station", "kind"))


# the tables whose rows every action attests (station verify compares them with the journal)
AUDITED = (User, Device, Assignment, Docking, Receipt, QuarantinedFile, Recording, Segment, Interruption,
           Case, Label, Hold, Purge, AccessRequest, Access, Export)
