"""Handover of pooled devices (S9, D12): check-out to an officer over the dock link, check-in,
who has what, and whose each recording is (``attribution``, from the device's signed journal)."""
