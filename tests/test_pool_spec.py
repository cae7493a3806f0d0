"""Token reduction by spec, ``"<inner spec>+pool(...)"``: load_encoder, the Engine's record, CLI, server."""

from __future__ import annotations

import json

import pytest

from maxsim import Engine, cli
from maxsim.encoders import PooledEncoder, load_encoder, register_encoder, unregister_encoder
from maxsim.encoders.spec import pool_suffix, split_pool_spec
from maxsim.errors import EncoderMismatchError
from tests.color_encoder import ColorEncoder

POOL = "+pool(factor=2,dedup=0.95,window=1024)"
SCENES = [(2.0, "red"), (2.0, "blue"), (2.0, "green")]  # fixed 2 s segments: one colour each
OLD, NEW = "a" * 40, "b" * 40


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from maxsim.testing.synthetic import write_video

    return write_video(tmp_path_factory.mktemp("pool-spec") / "rgb.mp4", SCENES)


# -- the spec -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "inner", "settings"),
    [
        ("color-test" + POOL, "color-test", {"factor": 2.0, "dedup": 0.95, "window": 1024}),
        ("color-test+pool()", "color-test", {"factor": 2.0, "dedup": 0.95, "window": 1024}),
        ("color-test+pool(factor=4)", "color-test", {"factor": 4.0, "dedup": 0.95, "window": 1024}),
        ("color-test+pool( dedup = None , window=64 )", "color-test",
         {"factor": 2.0, "dedup": None, "window": 64}),
        ("colqwen3-cpu:/models/x+y+pool(factor=1.5,dedup=0.9)", "colqwen3-cpu:/models/x+y",
         {"factor": 1.5, "dedup": 0.9, "window": 1024}),
        ("a+pool()+pool(factor=3)", "a+pool()", {"factor": 3.0, "dedup": 0.95, "window": 1024}),
    ],
)
def test_split_pool_spec(spec, inner, settings):
    assert split_pool_spec(spec) == (inner, settings)


def test_specs_without_pool_are_not_split():
    assert split_pool_spec("colqwen3") is None and split_pool_spec("org/model:pool") is None


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("color-test+pool(factor=2", r"closed by a '\)' that ends the spec"),
        ("color-test+pool(factor=2)x", r"closed by a '\)' that ends the spec"),
        ("+pool(factor=2)", r"no encoder before '\+pool\('"),
        ("color-test+pool(size=2)", r"unknown key 'size'.*expected factor, dedup, window"),
        ("color-test+pool(factor=0.5)", r"factor='0.5' is not a number >= 1"),
        ("color-test+pool(factor=two)", r"factor='two' is not a number >= 1"),
        ("color-test+pool(factor=nan)", r"factor='nan' is not a number >= 1"),
        ("color-test+pool(dedup=1.5)", r"dedup='1.5' is not a cosine in \(0, 1\] or 'none'"),
        ("color-test+pool(dedup=0)", r"dedup='0' is not a cosine"),
        ("color-test+pool(window=1)", r"window='1' is not a whole number of tokens >= 2"),
        ("color-test+pool(window=2.5)", r"window='2.5' is not a whole number"),
        ("color-test+pool(factor=2,factor=3)", r"'factor' is given twice"),
        ("color-test+pool(factor)", r"'factor' is not key=value"),
        ("color-test+pool(factor=(2))", r"unexpected parenthesis"),
    ],
)
def test_bad_specs_name_the_spec_and_what_was_expected(spec, match):
    # (the one spec grammar of maxsim.specs ignores empty items: "factor=2," is "factor=2")
    assert split_pool_spec("color-test+pool(factor=2,)") == split_pool_spec("color-test+pool(factor=2)")
    with pytest.raises(ValueError, match=match) as e:
        load_encoder(spec)
    assert repr(spec) in str(e.value)


def test_unknown_inner_encoder_names_the_whole_spec():
    with pytest.raises(ValueError, match=r"encoder spec 'nope\+pool\(\)': unknown encoder 'nope'"):
        load_encoder("nope+pool()")


def test_load_encoder_builds_the_pooled_encoder_the_spec_names():
    enc = load_encoder("color-test" + POOL)
    assert isinstance(enc, PooledEncoder) and type(enc.inner).__name__ == "ColorHistogramEncoder"
    assert (enc.factor, enc.dedup, enc.window) == (2.0, 0.95, 1024)
    assert enc.name == enc.spec == "color-test" + POOL  # the inner spec is the inner name: name == spec
    short = load_encoder("color-test+pool(dedup=none,factor=3)")
    assert (short.factor, short.dedup, short.window) == (3.0, None, 1024)
    assert short.spec == short.name == "color-test+pool(factor=3,dedup=none,window=1024)"  # canonical
    # an inner NAME:CHECKPOINT-like spec (package.module:attr) whose name differs from its spec
    mod = load_encoder("tests.color_encoder:ColorEncoder+pool(factor=1.5)")
    assert mod.name == "test-color+pool(factor=1.5,dedup=0.95,window=1024)"
    assert mod.spec == "tests.color_encoder:ColorEncoder+pool(factor=1.5,dedup=0.95,window=1024)"
    assert load_encoder(mod.spec).name == mod.name
    nested = load_encoder("color-test+pool()+pool(factor=2,dedup=none)")
    assert isinstance(nested.inner, PooledEncoder) and nested.spec == nested.name
    # the spec is exact: a value %g would round is written in full, so reloading gives the same encoder
    odd = PooledEncoder("color-test", factor=2.0000001, dedup=0.9512345)
    assert odd.name.endswith("+pool(factor=2.0000001,dedup=0.9512345,window=1024)")
    assert load_encoder(odd.spec).name == odd.name
    # a PooledEncoder over a spec knows its spec; over an object it does not
    assert PooledEncoder("color-test", factor=4).spec == "color-test+pool(factor=4,dedup=0.95,window=1024)"
    assert PooledEncoder(ColorEncoder()).spec is None
    assert pool_suffix() == POOL


def test_kwargs_go_to_the_inner_encoder():
    calls = []

    def factory(**kw):
        calls.append(kw)
        return ColorEncoder()

    register_encoder("kw-color", factory)
    try:
        enc = load_encoder("kw-color+pool(factor=2)", revision=OLD)
        assert calls == [{"revision": OLD}] and enc.spec == "kw-color" + POOL
        # other kwargs change what the spec would load: no spec is claimed for this encoder
        assert load_encoder("kw-color+pool(factor=2)", grid=2).spec is None and calls[-1] == {"grid": 2}
    finally:
        unregister_encoder("kw-color")


# -- the engine ---------------------------------------------------------------------------------------
def test_pooled_index_reopens_from_its_spec_and_refuses_other_settings(tmp_path, video):
    full = Engine(tmp_path / "full", encoder="color-test", segmenter="fixed:2")
    full.ingest(video, progress=False)
    eng = Engine(tmp_path / "idx", encoder="color-test+pool(factor=2)", segmenter="fixed:2")
    rec = eng.manifest.encoder
    assert rec["spec"] == rec["name"] == "color-test" + POOL  # recorded canonical, in full
    assert rec["settings"] == {"pool_factor": 2.0, "dedup": 0.95, "pool_window": 1024}
    eng.ingest(video, progress=False)
    assert sum(p["n_tokens"] for p in eng.manifest.parts) < sum(p["n_tokens"] for p in full.manifest.parts)

    again = Engine(tmp_path / "idx", segmenter="fixed:2")  # no encoder: the recorded spec and reduction
    assert isinstance(again.encoder, PooledEncoder) and again.encoder.name == rec["name"]
    for word, start in (("red", 0.0), ("blue", 2.0), ("green", 4.0)):
        assert again.search(word, k=1)[0].start == start == full.search(word, k=1)[0].start
    assert again.ingest(video, progress=False).skipped  # same settings: nothing to re-encode
    Engine(tmp_path / "idx", encoder=PooledEncoder("color-test"))  # the same reduction is accepted
    for other in ("color-test", "color-test+pool(factor=4)", "color-test+pool(dedup=none)",
                  "color-test+pool(window=512)", PooledEncoder(load_encoder("color-test"), factor=3)):
        with pytest.raises(EncoderMismatchError, match=r"built with encoder 'color-test\+pool\(factor=2,"):
            Engine(tmp_path / "idx", encoder=other)


def test_pooled_encoder_object_records_its_spec_only_when_it_has_one(tmp_path, video):
    eng = Engine(tmp_path / "spec", encoder=PooledEncoder("color-test", factor=3, dedup=None),
                 segmenter="fixed:2")
    assert eng.manifest.encoder["spec"] == "color-test+pool(factor=3,dedup=none,window=1024)"
    assert Engine(tmp_path / "spec").encoder.name == eng.encoder.name
    obj = Engine(tmp_path / "obj", encoder=PooledEncoder(ColorEncoder()), segmenter="fixed:2")
    assert "spec" not in obj.manifest.encoder  # as for any encoder object: reopen it with encoder=
    with pytest.raises(ValueError, match="does not record a loadable encoder spec"):
        Engine(tmp_path / "obj").encoder  # noqa: B018


class HubEncoder(ColorEncoder):
    """A colour encoder named like a hub checkpoint (``hub-color:<id>@<commit>``), with settings."""

    head = OLD
    loads: list = []

    def __init__(self, id_or_path="org/model", revision=None, max_visual_tokens=256, dtype="float32"):
        HubEncoder.loads.append(revision)
        self.name = f"hub-color:{id_or_path}@{revision or HubEncoder.head}"
        self.settings = {"max_visual_tokens": max_visual_tokens, "dtype": dtype}


@pytest.fixture
def hub_encoder():
    register_encoder("hub-color", HubEncoder)
    HubEncoder.head, HubEncoder.loads = OLD, []
    yield
    unregister_encoder("hub-color")


def test_inner_hub_revision_is_pinned_and_runtime_settings_do_not_reingest(tmp_path, video, hub_encoder):
    eng = Engine(tmp_path / "idx", encoder="hub-color:org/model+pool(factor=2)", segmenter="fixed:2")
    rec = eng.manifest.encoder
    assert rec["spec"] == "hub-color:org/model" + POOL and rec["revision"] == OLD
    assert rec["name"] == f"hub-color:org/model@{OLD}" + POOL
    assert eng.ingest(video, progress=False).ingested
    HubEncoder.head = NEW  # the checkpoint moved on the hub: reopening still loads the recorded commit
    again = Engine(tmp_path / "idx", segmenter="fixed:2")
    assert again.search("blue", k=1)[0].start == 2.0 and HubEncoder.loads[-1] == OLD
    # the inner encoder on another device (runtime settings, nested under "inner") re-encodes nothing
    bf16 = PooledEncoder(HubEncoder(revision=OLD, dtype="bfloat16"))
    assert Engine(tmp_path / "idx", encoder=bf16, segmenter="fixed:2").ingest(video, progress=False).skipped
    # a setting that changes the vectors does
    budget = PooledEncoder(HubEncoder(revision=OLD, max_visual_tokens=64))
    rep = Engine(tmp_path / "idx", encoder=budget, segmenter="fixed:2").ingest(video, progress=False)
    assert rep.ingested


# -- the command line ---------------------------------------------------------------------------------
def run(capsys, *args):
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_ingest_with_reduction_then_search_and_info(tmp_path, video, capsys):
    idx = tmp_path / "idx"
    code, out, err = run(capsys, "ingest", idx, video, "--fixed", "2", "--encoder", "color-test",
                         "--pool-factor", "2", "--dedup", "0.95", "-q")
    assert code == 0 and "ingested 1 file (3 segments)" in out, err
    code, out, err = run(capsys, "search", idx, "blue", "-k", "1", "--json")  # no flags: from the index
    assert code == 0, err
    assert [(h["start"], h["end"]) for h in json.loads(out)] == [(2.0, 4.0)]
    code, out, err = run(capsys, "info", idx, "--json")
    info = json.loads(out)
    assert info["reduction"] == {"factor": 2.0, "dedup": 0.95, "window": 1024}
    assert info["encoder"]["spec"] == "color-test" + POOL
    code, out, _ = run(capsys, "info", idx)
    assert "token reduction: pool factor 2, dedup 0.95, window 1024" in out

    # the same settings (or none given) add to it; other settings are refused, saying what to do
    code, out, _ = run(capsys, "ingest", idx, video, "--fixed", "2", "--pool-factor", "2", "-q")
    assert code == 0 and "skipped 1" in out
    code, out, err = run(capsys, "ingest", idx, video, "--fixed", "2", "--pool-factor", "4", "-q")
    assert code == 2 and not out
    assert "built with token reduction --pool-factor 2 --dedup 0.95" in err
    assert "asks for --pool-factor 4" in err and "new index folder" in err
    code, _, err = run(capsys, "ingest", idx, video, "--dedup", "none", "-q")
    assert code == 2 and "asks for --dedup none" in err
    # an encoder named without +pool(...) is wrapped in the index's own reduction
    code, out, err = run(capsys, "search", idx, "green", "-k", "1", "--encoder", "color-test", "--json")
    assert code == 0 and json.loads(out)[0]["start"] == 4.0, err
    code, out, err = run(capsys, "ingest", idx, video, "--fixed", "2", "--encoder", "color-test", "-q")
    assert code == 0 and "skipped 1" in out, err


def test_cli_reduction_flags_on_new_and_unreduced_indexes(tmp_path, video, capsys):
    only_pool = tmp_path / "pool"
    code, _, err = run(capsys, "ingest", only_pool, video, "--encoder", "color-test", "--pool-factor", "3")
    assert code == 0, err
    info = json.loads(run(capsys, "info", only_pool, "--json")[1])
    assert info["reduction"] == {"factor": 3.0, "dedup": None, "window": 1024}  # --dedup not given: off
    plain = tmp_path / "plain"
    assert run(capsys, "ingest", plain, video, "--encoder", "color-test", "--dedup", "none", "-q")[0] == 0
    info = json.loads(run(capsys, "info", plain, "--json")[1])
    assert info["reduction"] is None and info["encoder"]["name"] == "color-test"  # all off: plain encoder
    assert "token reduction: none" in run(capsys, "info", plain)[1]
    code, _, err = run(capsys, "ingest", plain, video, "--dedup", "0.9", "-q")
    assert code == 2 and "built with no token reduction" in err and "asks for --dedup 0.9" in err
    code, _, err = run(capsys, "ingest", tmp_path / "both", video, "--encoder", "color-test+pool()",
                       "--pool-factor", "2", "-q")
    assert code == 2 and "already sets token reduction" in err
    with pytest.raises(SystemExit):
        cli.main(["ingest", str(tmp_path / "x"), str(video), "--dedup", "1.5"])
    assert "'1.5' is not a cosine in (0, 1] or 'none'" in capsys.readouterr().err
    assert not (tmp_path / "both").exists() and not (tmp_path / "x").exists()


def test_cli_reduction_wraps_the_preset_encoder(tmp_path, video, capsys, monkeypatch):
    monkeypatch.setitem(cli.PRESETS, "cpu", {"encoder": "color-test", "fps": 1.0, "max_frames": 4})
    code, _, err = run(capsys, "ingest", tmp_path / "a", video, "--preset", "cpu", "--dedup", "0.9", "-q")
    assert code == 0, err
    rec = json.loads(run(capsys, "info", tmp_path / "a", "--json")[1])["encoder"]
    assert rec["spec"] == "color-test+pool(factor=1,dedup=0.9,window=1024)"
    # a registered name with +pool(...) is not taken for a checkpoint of the preset's encoder
    code, _, err = run(capsys, "ingest", tmp_path / "b", video, "--preset", "cpu", "--encoder",
                       "color-test+pool(factor=3)", "-q")
    assert code == 0, err
    assert json.loads(run(capsys, "info", tmp_path / "b", "--json")[1])["reduction"]["factor"] == 3.0


# -- the server ---------------------------------------------------------------------------------------
def test_server_opens_a_pooled_index_from_its_path(tmp_path, video):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from fastapi.testclient import TestClient

    from maxsim.server import create_app

    Engine(tmp_path / "idx", encoder="color-test+pool(factor=2)", segmenter="fixed:2").ingest(
        video, progress=False)
    with TestClient(create_app(tmp_path / "idx")) as client:
        health = client.get("/healthz").json()
        assert health["encoder"] == "color-test" + POOL and health["segments"] == 3
        r = client.post("/search", json={"text": "green", "k": 1})
        assert r.status_code == 200, r.text
        assert r.json()["hits"][0]["start"] == 4.0
