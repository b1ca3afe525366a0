"""Supervision (S10): statistics of use per officer, device and period, the sign-off of
not-recording reasons (D6) and missing interruption reasons (D5), and the usage ledger
report (台账, S9). See station/docs/supervision.md.
"""
