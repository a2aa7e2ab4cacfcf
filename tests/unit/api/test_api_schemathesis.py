"""Property-based run of schemathesis over the OpenAPI schema: every documented operation, with
generated valid and invalid inputs and the admin key, never answers with a 5xx. Bounded: a few
examples per operation and mode (RAG_SCHEMATHESIS_EXAMPLES to raise it).

(schemathesis's pytest fixture loader does not work with pytest 9, so the operations are walked
here, one hypothesis run per operation and generation mode.)"""

from __future__ import annotations

import os

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis (test extra)")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from api.app import create_app  # noqa: E402
from rag.adapters.llm_fake import ScriptedLLM  # noqa: E402
from tests.unit.api_helpers import ADMIN, make_services  # noqa: E402

EXAMPLES = int(os.environ.get("RAG_SCHEMATHESIS_EXAMPLES", "10"))


def test_no_operation_answers_5xx(tmp_path):
    llm = ScriptedLLM(default="The Acme X200 warranty lasts two years [1].")
    services = make_services(tmp_path, llm=llm, max_upload_mb=1)
    app = create_app(services, warm_up=False)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    tried: list[str] = []
    try:
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
                def run(case):
                    response = case.call(headers=ADMIN)
                    case.validate_response(response, checks=[not_a_server_error])

                try:
                    run()
                except Unsatisfiable:  # no invalid input exists (an operation without parameters)
                    assert mode == GenerationMode.NEGATIVE, operation.label
                    continue
                tried.append(f"{operation.label} ({mode.value})")
    finally:
        app.state.api.jobs.close()
    assert sum(t.endswith("(positive)") for t in tried) == len(operations)
    assert sum(t.endswith("(negative)") for t in tried) >= len(operations) // 2
