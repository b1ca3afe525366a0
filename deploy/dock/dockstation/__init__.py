"""The dock station (采集工作站): verified ingest, S3 naming, usage ledger and receipts (S1, S3, S9, D11).

Run as ``python -m dockstation ...`` with ``deploy/dock`` and the repository root on
``PYTHONPATH`` (it uses the very same ``recorder.verify`` the device runs).
"""
