"""Casework: cases, labels within 48 h (S2), the S3 name that follows the label, and the record
checklist (S4). See station/docs/casework.md."""
