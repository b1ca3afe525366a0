"""Media and evidence, hardware-free; never imports ``hw``, ``sim`` or ``firmware``.

Two layers live here, and the arrows between them run one way (``tests/test_layering.py``):

- the evidence format: ``records``, ``journal``, ``identity``, ``receipt``, ``verify``,
  ``failures`` (the named-failure base), ``dock_protocol`` (the dock link's wire format) and
  ``segment_info`` (what the sealer is told about a closed segment). They import only each
  other and ``common``, so the dock station (and anyone checking evidence) needs nothing
  of the media side;
- the media side: ``capture`` (the Camera/Microphone interfaces the core consumes),
  ``stamp``, ``encode``, ``timeline``, ``segmenter``, ``prebuffer``, ``recording``,
  ``pipeline``; and ``seal``, ``store``, ``salvage``, ``voice_note``, which join media to
  the evidence format. These may import the evidence format, never the other way round.
"""
