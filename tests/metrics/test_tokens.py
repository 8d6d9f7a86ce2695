"""Masked-token accuracy and its neighbour baseline on hand-made cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from napari_squint.metrics import neighbour_token_ranking, token_accuracy


def test_token_accuracy_known_answer():
    truth = np.array([3, 7, 1, 4])
    ranked = np.array([
        [3, 9, 9, 9, 9],   # top-1 hit
        [2, 7, 9, 9, 9],   # top-5 hit only (second place)
        [5, 6, 8, 9, 1],   # hit in fifth place: top-5 only
        [0, 2, 5, 6, 8],   # miss
    ])
    acc = token_accuracy(truth, ranked)
    assert acc == {"top1": 0.25, "top5": 0.75}
    assert token_accuracy(truth, ranked, top=(2,)) == {"top2": 0.5}


def test_token_accuracy_padding_never_matches_and_shapes_checked():
    assert token_accuracy(np.array([-1]), np.array([[-1, -1]]))["top1"] == 0.0
    assert token_accuracy(np.array([5, 6]), np.array([5, 0]))["top1"] == 0.5  # a 1-d ranking is top-1 only
    with pytest.raises(ValueError, match="rows"):
        token_accuracy(np.array([1, 2, 3]), np.zeros((2, 5)))
    assert np.isnan(token_accuracy(np.array([], dtype=int), np.zeros((0, 5)))["top1"])


def test_neighbour_token_ranking_known_answer():
    # a line of cells at x = 0..9; cell 5 is held out; tokens of the observed cells:
    coords = np.arange(10.0)[:, None]
    tokens = np.array([9, 9, 9, 2, 4, 99, 4, 2, 2, 1])
    observed = np.ones(10, dtype=bool)
    observed[5] = False
    # its 4 nearest observed cells are x=4, 6 (distance 1) and x=3, 7 (distance 2): tokens 4, 4, 2, 2
    # votes tie 2-2; token 4 owns the nearer cell, so it ranks first; then 2; the held-out cell's own 99 never shows
    ranked = neighbour_token_ranking(coords, tokens, observed, np.array([5]), k=4, top=3)
    assert ranked.tolist() == [[4, 2, -1]]
    # k=6 adds x=2 (token 9) and x=8 (token 2): 2 now has 3 votes
    assert neighbour_token_ranking(coords, tokens, observed, np.array([5]), k=6, top=3).tolist() == [[2, 4, 9]]
    assert token_accuracy(np.array([2]), neighbour_token_ranking(coords, tokens, observed, np.array([5]), k=4))[
        "top1"] == 0.0


def test_neighbour_token_ranking_stays_in_section():
    coords = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [0.0, 0.05]])
    tokens = np.array([7, 8, 3, -5])
    section = np.array(["a", "b", "a", "a"])
    observed = np.array([True, True, True, False])
    # cell 1 (token 8) is the nearest but lies in another section
    assert neighbour_token_ranking(coords, tokens, observed, np.array([3]), k=1, section=section,
                                   top=2).tolist() == [[7, -1]]
    with pytest.raises(ValueError, match="no observed cell"):
        neighbour_token_ranking(coords, tokens, np.array([True, True, False, False]), np.array([3]), k=1,
                                section=np.array(["b", "b", "a", "a"]))
