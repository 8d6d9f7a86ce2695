import pytest

from napari_squint.train.prefetch import prefetch


def test_order_preserved_and_errors_propagate():
    assert list(prefetch(range(10), lambda i: i * i, depth=3)) == [i * i for i in range(10)]

    def bad(i):
        if i == 3:
            raise RuntimeError("boom at 3")
        return i

    with pytest.raises(RuntimeError, match="boom at 3"):
        list(prefetch(range(10), bad))


def test_early_close_stops_producer():
    made = []
    gen = prefetch(range(1000), lambda i: made.append(i) or i, depth=2)
    assert next(gen) == 0
    gen.close()
    assert len(made) < 10
