"""`kill -9` of `rag drop` (issue 31 item 3): a real forked child running the CLI command sends
itself SIGKILL right after one of the drop's steps (the catalog mark, the BM25 index deleted, the
vector collection deleted: the state the issue found). The next commands hide the half-dropped
knowledge base, `rag check` reports it, and `rag drop` finishes it: nothing of it is left."""

from __future__ import annotations

import json
import os
import signal

import pytest

from rag.adapters.bm25 import LocalBM25Index
from rag.adapters.edge_store import EdgeStore
from rag.catalog import Catalog
from tests.fault.test_kill9 import in_child
from tests.unit.cli_helpers import env, run  # noqa: F401  (env is a fixture)

pytestmark = [pytest.mark.fault, pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")]


def drop_killed_after(cls: type, method: str):
    def body() -> None:
        from cli.main import app

        original = getattr(cls, method)

        def step_then_die(self, *args, **kwargs):
            original(self, *args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)

        setattr(cls, method, step_then_die)
        app(["drop", "--kb", "dl", "--yes"], standalone_mode=False)

    return body


@pytest.mark.parametrize(("cls", "method"), [(Catalog, "mark_dropping"), (LocalBM25Index, "drop"),
                                             (EdgeStore, "drop_collection")])
def test_kill_9_of_a_drop_is_reported_by_check_and_finished_by_the_next_drop(env, tmp_path, cls, method):
    for kb in ("dl", "keep"):
        assert run("ingest", str(env), "--kb", kb, "-q").exit_code == 0
    assert in_child(drop_killed_after(cls, method)) == "killed"
    data = tmp_path / "data"
    assert [k["name"] for k in json.loads(run("kbs", "--json").stdout)] == ["keep"]
    checked = run("check", "--kb", "keep")
    assert checked.exit_code == 1 and "half_dropped: 1 (e.g. dl)" in checked.output, checked.output
    dropped = run("drop", "--kb", "dl", "--yes")
    assert dropped.exit_code == 0 and "dropped dl (finished an interrupted drop)" in dropped.output, dropped.output
    assert sorted(p.name for p in (data / "vectors-edge").iterdir()) == ["keep"]
    assert sorted(p.name for p in (data / "bm25").iterdir()) == ["keep"]
    assert run("check", "--kb", "keep").exit_code == 0
    assert run("docs", "--kb", "dl").exit_code == 2  # unknown now
