"""Schemathesis against the service's OpenAPI schema: generated requests (valid and invalid), bounded.

Every answer must be documented in the schema (status code, content type, body shape) and no request
may cause a server error.
"""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")
schemathesis = pytest.importorskip("schemathesis", reason="schemathesis (dev extra) is not installed")

from hypothesis import HealthCheck, settings  # noqa: E402

from maxsim.server import create_app  # noqa: E402
from tests.serve_data import make_corpus  # noqa: E402


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    # A request asking for re-ranking makes the server try its default reranker, which imports transformers
    # (seconds on a loaded machine): import it here so that no single request pays for it and times out.
    pytest.importorskip("transformers")
    corpus = make_corpus(tmp_path_factory.mktemp("fuzz"))
    app = create_app(corpus.engine(), ingest_root=corpus.root, max_body_bytes=64 << 10)
    # A value the schema cannot express (a time_range whose end is before its start, k above this
    # server's max_k) is refused with a documented 400, a path outside the ingest root with 403, an unknown
    # video with 404: schema-valid data may get these. Invalid data may also be refused as too large (413).
    config = schemathesis.Config.from_dict(
        {
            "checks": {
                "positive_data_acceptance": {"expected-statuses": ["2xx", 400, 401, 403, 404, 409]},
                "negative_data_rejection": {
                    "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
                },
            }
        }
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_schema(case):
    case.call_and_validate()
