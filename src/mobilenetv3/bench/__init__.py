"""The paper's comparisons re-measured on this machine (``mnv3 bench``) and the comparison with torchvision's and
timm's models.

:mod:`.paper` holds the paper's printed figures, :mod:`.table5` the h-swish variants of Table 5, :mod:`.sections`
the table of sections, :mod:`.run` runs them (:func:`~.run.paper_comparisons`) and :mod:`.report` renders the
result; :mod:`.peers` puts ours next to the peers (:func:`~.peers.compare.compare_with_peers`).

This package imports nothing at its top: the peer worker (:mod:`.peers.worker`) is imported under another
environment's torch, and everything above it on the import path must stay that light.
"""
