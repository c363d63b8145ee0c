"""What every part of newsrank shares, and nothing else: typed config reading (:mod:`.config`),
the runtime (:mod:`.runtime`: device, seeds, threads, JSON-safe numbers), the one atomic writer
(:mod:`.atomic`) and the checkpoint header (:mod:`.checkpoint`).

This package imports no other newsrank module (a test checks), so the news models, the sequence
models and the tools around them can all build on it without pulling each other in.
"""
