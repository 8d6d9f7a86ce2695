import pytest

from napari_squint.io.jsonfile import read_json


class Bad(ValueError):
    pass


def test_read_json_names_the_file_and_where_it_breaks(tmp_path):
    ok = tmp_path / "ok.json"
    ok.write_text('{"a": [1, 2]}')
    assert read_json(ok) == {"a": [1, 2]}
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "a": [1, 2\n}')
    with pytest.raises(Bad, match=r"broken\.json: not valid JSON \(.* at line 3, column 1\)"):
        read_json(broken, Bad)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(Bad, match=r"binary\.json: not a text file \(.* at byte 0\)"):
        read_json(binary, Bad)
