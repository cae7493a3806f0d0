"""The one top-k merge the kernels and the engine share (maxsim.kernels.merge_topk)."""

import torch

from maxsim import kernels


def test_merge_topk_orders_by_score_then_index_and_pads():
    s = torch.tensor([[0.5, 0.875, 0.5, float("-inf"), 0.75]])
    i = torch.tensor([[7, 3, 2, -1, 9]])
    top_s, top_i = kernels.merge_topk(s, i, 4)
    assert top_i.tolist() == [[3, 9, 2, 7]] and top_s.tolist() == [[0.875, 0.75, 0.5, 0.5]]
    top_s, top_i = kernels.merge_topk(s[:, :2], i[:, :2], 3)  # fewer candidates than k: -inf / -1 tail
    assert top_i.tolist() == [[3, 7, -1]] and top_s[0, 2] == float("-inf")

