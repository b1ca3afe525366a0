"""The bottom layer: small types and helpers every other package may import.

It imports nothing of the project, so it can never close a cycle:

- ``common.clock``: wall time with its quality (TimeQuality, TimeSample, WallClock, ...)
  and the monotonic clocks;
- ``common.media``: what a camera and a microphone deliver (Frame, AudioBlock);
- ``common.settings``: one ``[section]`` of a TOML file as a strict dataclass (Section,
  read_toml), used by the device, its adapters and the dock station alike;
- ``common.crashpoints``: named places where a test can kill the process mid-write.

The arrows (checked by ``tests/test_layering.py``)::

    firmware ──> recorder ──> common
        │  └───> hw ────────> common
        └──────> sim (only through firmware.hardware, the one place that builds a device)
    sim ──> hw, recorder, common (and firmware: the scenario runner drives the service)
    recorder's evidence-format modules ──> common only (never its media modules)
    station ─────────────────> recorder's evidence-format modules, common
"""
