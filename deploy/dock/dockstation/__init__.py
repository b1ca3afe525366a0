"""The dock station (采集工作站): verified ingest, S3 naming, usage ledger and receipts (S1, S3, S9, D11).

Installed with the repository as the ``dockstation`` command (``python -m dockstation``);
it uses the very same ``recorder.verify`` the device runs.
"""
