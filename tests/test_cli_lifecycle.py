"""The lifecycle commands of the CLI (delete, compact, info with versions), run in-process."""

import json

from maxsim.cli import main
from maxsim.testing.synthetic import write_video

ENC = "tests.color_encoder:ColorEncoder"


def test_delete_compact_info(tmp_path, capsys):
    vids = tmp_path / "videos"
    for i, sub in enumerate(("cam1", "cam1", "cam2")):
        write_video(vids / sub / f"v{i}.mp4", [(2.0, "red"), (2.0, "blue")], seed=i)
    idx = tmp_path / "idx"
    assert main(["ingest", str(idx), str(vids), "--fixed", "2", "--encoder", ENC, "-q"]) == 0
    capsys.readouterr()

    assert main(["delete", str(idx), "--prefix", str(vids / "cam1")]) == 0
    out = capsys.readouterr().out
    assert "deleted 2 videos; index version 2" in out and "v0.mp4 (2 segments)" in out

    assert main(["delete", str(idx), str(vids / "cam1" / "v0.mp4")]) == 1  # no longer there
    assert "not in the index" in capsys.readouterr().err

    assert main(["compact", str(idx), "--keep-versions", "1", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["segments_dropped"] == 4 and rep["version"] == 3 and rep["parts_after"] == 1

    assert main(["info", str(idx), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["videos"] == 1 and info["segments"] == 2 and info["deleted_segments"] == 0
    assert info["versions_kept"] == [3] and [h["op"] for h in info["history"]] == [
        "create", "ingest", "delete", "compact"]
    assert main(["info", str(idx), "--version", "1"]) == 2
    assert "no longer kept" in capsys.readouterr().err
    assert main(["info", str(idx), "--history", "1"]) == 0
    out = capsys.readouterr().out
    assert "compact" in out and "  v1 " not in out
