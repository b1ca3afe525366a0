"""Keeping the evidence: retention (S5), holds (S6), expiry and purge (S11)."""
