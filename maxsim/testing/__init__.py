"""Test and demo material with exact expectations, no weights and no downloads: synthetic colour-scene
videos (:mod:`~maxsim.testing.synthetic`), synthetic multi-vector corpora of video-index shape
(:mod:`~maxsim.testing.tokens`) and the ``color-test`` encoder that understands colour words
(:mod:`~maxsim.testing.color`)."""
