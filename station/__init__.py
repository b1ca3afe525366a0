"""The evidence station (采集工作站): ingest, labelling, keeping, access, export and supervision (S1–S11).

The second product of this repository. It imports only the evidence-format layer of
``recorder`` (records, journal, verify, receipt, identity, dock_protocol) and ``common``;
an import-linter contract in pyproject.toml keeps it so. Command: ``station``.
"""
__version__ = "0.2.0"
