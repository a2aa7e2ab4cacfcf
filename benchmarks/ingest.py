"""Ingest benchmark: the COVID-QA corpus written out as text files, ingested through the real
pipeline, compared with the time to only `encode` the same chunk texts with the same model and
batch size.

    python benchmarks/ingest.py [--dataset covidqa] [--embed-model auto] [--limit-docs N]

Prints chunks/s, peak RSS and the ratio (whole ingest time) / (encode-only time)."""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.datasets import load_dataset, write_corpus_as_files  # noqa: E402
from ingest.service import build_ingestor  # noqa: E402
from rag.factory import build_services  # noqa: E402
from rag.settings import load_settings  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="covidqa")
    parser.add_argument("--embed-model", default="auto")
    parser.add_argument("--limit-docs", type=int, default=None)
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--backend", default="edge", choices=["edge", "local"])
    args = parser.parse_args()

    dataset = load_dataset(args.dataset)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        doc_ids = sorted(dataset.corpus)[: args.limit_docs] if args.limit_docs else None
        files = write_corpus_as_files(dataset, tmp_path / "files", doc_ids=doc_ids)
        overrides = {"data_dir": tmp_path / "data", "embed_model": args.embed_model, "vector_backend": args.backend}
        if args.chunk_size:
            overrides["chunk_size"] = args.chunk_size
        services = build_services(load_settings(**overrides))
        embedder = services.embedder
        print(f"model: {services.embedder_resolution.reason}", file=sys.stderr)
        embedder.encode_corpus(["warm up the model"])  # load outside both timings

        t0 = time.perf_counter()
        report = build_ingestor(services, "bench").ingest_folder(tmp_path / "files")
        ingest_s = time.perf_counter() - t0

        kb = services.kbs.open("bench")
        ids = sorted(kb.store.ids(kb.collection))
        chunks = list(kb.get_chunks(ids).values())
        texts = [c.match_text for c in chunks]
        batch = max(4 * services.settings.embed_batch_size, 64)
        t0 = time.perf_counter()
        for i in range(0, len(texts), batch):
            embedder.encode_corpus(texts[i : i + batch])
        encode_s = time.perf_counter() - t0
        check = kb.check()

    result = {
        "dataset": args.dataset, "files": len(files), "chunks": report.chunks_added, "model": embedder.name,
        "ingest_seconds": round(ingest_s, 2), "embed_seconds_inside_ingest": round(report.embed_seconds, 2),
        "encode_only_seconds": round(encode_s, 2), "chunks_per_second": round(report.chunks_added / ingest_s, 2),
        "ratio_ingest_over_encode": round(ingest_s / encode_s, 3), "peak_rss_mb": round(peak_rss_mb(), 1),
        "stores_agree": check.ok,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
