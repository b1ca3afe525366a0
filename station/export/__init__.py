"""S7: export recordings for the case file — a self-verifying package, its manifest and printed note."""
