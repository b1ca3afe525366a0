"""The evidence directory: where sealed segments live, with no way to delete or overwrite.

Rule D9: nobody deletes or alters an original recording on the device. The
store therefore has no working delete or overwrite at all; the methods exist
only so that every attempt through the service's interfaces (CLI, future
network or button paths) is refused with a specific exception *and* leaves a
signed ``tamper-attempt`` record in the journal.

When storage runs low the recorder must stop cleanly (``nearly_full``) rather
than overwrite old recordings. Space is given back only after the dock station
has verified and received the recordings (``reclaim``; the docking issue).

Layout under the root::

    journal.log                    the device journal (recorder/journal.py)
    quarantine/                    torn journal tails kept after power loss
    recordings/<recording_id>/     segment files (NAME.ts.part while written)
"""
from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import shutil
import threading
from pathlib import Path
from typing import BinaryIO, Mapping, cast

from recorder import receipt, records
from recorder.journal import Journal, JournalError, fsync_dir

log = logging.getLogger(__name__)

RECORDINGS_DIR = "recordings"
MAX_JOURNALED_PATH = 256     # a refused path is journaled truncated (+ its length and SHA-256)
_RECORDING_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class StoreError(Exception):
    """Base class for evidence-store refusals and problems."""


class TamperRefused(StoreError):
    """A request that would destroy or alter evidence; it was refused and journaled."""

    def __init__(self, message: str, record_seq: int | None) -> None:
        super().__init__(message)
        self.record_seq = record_seq  # the tamper-attempt record, None if it could not be written


class DeletionRefused(TamperRefused):
    """Deleting evidence is never allowed on the device (D9)."""


class OverwriteRefused(TamperRefused):
    """Overwriting, truncating or appending to an existing evidence file is never allowed (D9)."""


class ReclaimRequiresDockReceipt(StoreError):
    """Space is freed only against a verified dock receipt; none (or no way to check it) was given."""


class EvidenceStore:
    """The evidence directory of one device. All refusals are journaled."""

    def __init__(self, root: Path | str, journal: Journal) -> None:
        self.root = Path(root).resolve()
        self.journal = journal
        self._reclaim_lock = threading.Lock()
        (self.root / RECORDINGS_DIR).mkdir(parents=True, exist_ok=True)

    # ---- where things go ---------------------------------------------------
    def recording_dir(self, recording_id: str) -> Path:
        """The directory for one recording's segments (created if needed)."""
        if not isinstance(recording_id, str) or not _RECORDING_ID.match(recording_id):
            raise ValueError(f"recording id {recording_id!r} must match {_RECORDING_ID.pattern}")
        d = self.root / RECORDINGS_DIR / recording_id
        d.mkdir(parents=True, exist_ok=True)
        return d

    def relpath(self, path: Path | str) -> str:
        """POSIX path relative to the root; StoreError if it is outside the store."""
        try:
            return records.relpath_in(self.root, Path(path) if Path(path).is_absolute()
                                      else self.root / path)
        except ValueError:
            raise StoreError(f"{path} is outside the evidence store {self.root}") from None

    # ---- space ------------------------------------------------------------------
    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def nearly_full(self, threshold_bytes: int) -> bool:
        """True when free space is at or below ``threshold_bytes``: stop recording cleanly."""
        if threshold_bytes < 0:
            raise ValueError("threshold_bytes must be >= 0")
        return self.free_bytes() <= threshold_bytes

    # ---- refused operations ------------------------------------------------
    def remove(self, path: Path | str, actor: str = "unknown") -> None:
        """Always refused: raises DeletionRefused after journaling the attempt."""
        raise DeletionRefused(*self._journal_attempt("remove", path, actor,
                                                     "evidence is never deleted on the device (D9)"))

    def overwrite(self, path: Path | str, actor: str = "unknown") -> None:
        """Always refused: raises OverwriteRefused after journaling the attempt."""
        raise OverwriteRefused(*self._journal_attempt("overwrite", path, actor,
                                                      "evidence is never modified on the device (D9)"))

    def open(self, path: Path | str, mode: str = "rb", actor: str = "unknown") -> BinaryIO:
        """Open a file in the store. Reading is fine; writing an existing file is refused.

        The only writable mode is exclusive creation ("xb") of a file that does not exist.
        """
        target = Path(path) if Path(path).is_absolute() else self.root / path
        self.relpath(target)
        writing = any(c in mode for c in "wax+")
        if not writing:
            return cast(BinaryIO, open(target, mode))   # mode is a str: typeshed can't tell it is binary
        if os.path.lexists(target) or "x" not in mode or "+" in mode:
            raise OverwriteRefused(*self._journal_attempt(
                f"open-{mode}", target, actor,
                "an existing evidence file is never opened for writing (D9)"
                if os.path.lexists(target) else "only exclusive creation ('xb') may write"))
        return cast(BinaryIO, open(target, mode))   # "xb" here (checked above)

    def reclaim(self, dock_receipt: bytes | None = None, *,
                validator: "receipt.ReceiptValidator | None" = None,
                peer_dock_id: str | None = None,
                served: frozenset[str] | None = None,
                served_as: "Mapping[str, receipt.ServedIdentity] | None" = None) -> "receipt.PurgeResult":
        """Free space for files the dock has verified and stored, against its signed receipt.

        ``dock_receipt`` is the receipt's wire bytes; ``validator`` holds the agency
        CA and this session's nonces. A refused receipt removes nothing, leaves a
        ``dock-receipt-refused`` record and raises the named ``receipt.ReceiptRefused``.
        An accepted one is journaled (``dock-receipt``), then every file about to be
        removed is journaled (``purge``) *before* it is unlinked, so a power cut in
        between leaves files that are released but still present and still verify.

        ``served`` (given by the dock link): the paths served in full in the TLS session
        of the receipt. Only those are purged; the others named are refused by name
        (``not_served`` in the ``purge`` record, ``PurgeResult.refused``) and stay.
        ``served_as`` (also the link's): each of those files' identity as it was served; one
        still that identity is not hashed again (``receipt.ServedIdentity`` says why).
        """
        if dock_receipt is None or validator is None:
            raise ReclaimRequiresDockReceipt(
                "reclaiming space requires a dock receipt and a validator; nothing was removed")
        with self._reclaim_lock:
            try:
                if served is None:
                    signed = validator.validate(dock_receipt, self.root, self.journal.path, peer_dock_id)
                elif served_as is None:
                    signed = validator.validate(dock_receipt, self.root, self.journal.path, peer_dock_id, served)
                else:
                    signed = validator.validate(dock_receipt, self.root, self.journal.path, peer_dock_id, served,
                                                served_as=served_as)
            except receipt.ReceiptRefused as exc:
                self._journal_refusal(dock_receipt, exc)
                raise
            r = signed.receipt
            accepted = self.journal.append(receipt.DOCK_RECEIPT, {
                "receipt": r.as_dict(), "receipt_sha256": hashlib.sha256(signed.message).hexdigest(),
                "signature": base64.b64encode(signed.signature).decode("ascii"),
                "dock_cert": signed.dock_cert_pem.decode("ascii"), "accepted": True})
            unserved = set(validator.unserved) if served is not None else set()
            purgeable = [f for f in r.files if f.path not in unserved]
            payload = {"receipt_seq": accepted.seq, "dock": r.dock,
                       "files": [f.as_dict() for f in purgeable],
                       "bytes": sum(f.size for f in purgeable)}
            if unserved:
                payload["not_served"] = sorted(unserved)
            purge = self.journal.append(receipt.PURGE, payload)
            removed, failed = [], []
            for f in purgeable:
                path = self.root / f.path
                try:
                    os.unlink(path)
                    removed.append(f)
                except OSError as exc:
                    failed.append({**f.as_dict(), "error": str(exc)})
            for d in sorted({(self.root / f.path).parent for f in removed}):
                try:
                    fsync_dir(d)
                except OSError as exc:
                    log.error("store: fsync of %s after purge failed: %s", d, exc)
            if failed:
                log.error("store: %d released files could not be removed; they stay and still verify",
                          len(failed))
                self.journal.append(receipt.PURGE_FAILED, {"purge_seq": purge.seq, "files": failed})
            log.info("store: purged %d files (%d bytes) against dock %s receipt (record %d)",
                     len(removed), sum(f.size for f in removed), r.dock, accepted.seq)
            return receipt.PurgeResult(accepted.seq, purge.seq, tuple(removed),
                                       tuple(x["path"] for x in failed), tuple(sorted(unserved)))

    def _journal_refusal(self, wire: bytes, exc: "receipt.ReceiptRefused") -> None:
        digest = hashlib.sha256(wire if isinstance(wire, (bytes, bytearray)) else b"").hexdigest()
        log.warning("store: dock receipt %s refused: %s: %s", digest[:16], exc.reason, exc)
        try:
            self.journal.append(receipt.DOCK_RECEIPT_REFUSED, {
                "reason": exc.reason, "detail": str(exc)[:500], "wire_sha256": digest,
                "removed": []})
        except (JournalError, ValueError) as jexc:
            log.error("store: could not journal the refused receipt: %s", jexc)

    def _journal_attempt(self, action: str, path: Path | str, actor: str,
                         why: str) -> tuple[str, int | None]:
        # a path outside the store is journaled as given (truncated), never looked up: whether
        # it exists on the device is not the requester's business (the journal goes to the dock)
        try:
            shown = self.relpath(path)
            exists: bool | None = os.path.lexists(self.root / shown)
        except StoreError:
            shown, exists = str(path), None
        extra = {}
        if len(shown) > MAX_JOURNALED_PATH:
            extra = {"path_chars": len(shown),
                     "path_sha256": hashlib.sha256(shown.encode("utf-8", "surrogateescape")).hexdigest()}
            shown = shown[:MAX_JOURNALED_PATH]
        seq = None
        try:
            rec = self.journal.append(records.TAMPER_ATTEMPT, {
                "action": action, "path": shown, "actor": str(actor)[:MAX_JOURNALED_PATH],
                "exists": exists, "refused": True, **extra})
            seq = rec.seq
        except (JournalError, ValueError) as exc:
            log.error("store: could not journal refused %s of %s: %s", action, shown, exc)
        log.warning("store: refused %s of %s by %s (record %s)", action, shown, actor, seq)
        return f"refused {action} of {shown}: {why}", seq
