"""The station's audit journal (the truth of what was done with the evidence) and its check."""
