"""Late-interaction (MaxSim) scoring over ragged multi-vectors.

``score(q, s) = sum_i max_j <q_i, s_j>`` for every query ``q`` and segment ``s``. Both sides are ragged:
a flat ``(total_tokens, dim)`` matrix plus CSR offsets ``(n + 1,)`` whose consecutive pairs bound each
item's rows. Nothing is padded; a segment with no token scores ``-inf``, and a query with no token scores 0
(an empty sum).
"""

from maxsim.kernels.reference import maxsim_scores, maxsim_topk

__all__ = ["maxsim_scores", "maxsim_topk"]
