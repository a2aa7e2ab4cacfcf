"""Ingest benchmark: the COVID-QA corpus written out as files, ingested through the real
pipeline, compared with the time to only `encode` the same chunk texts with the same model and
batch size.

    python benchmarks/ingest.py [--dataset covidqa] [--embed-model auto] [--limit-docs N]
                                [--mixed] [--prefetch 0,4] [--write-behind 0,4] [--rounds 2]

Prints chunks/s, peak RSS and the ratio (whole ingest time) / (encode-only time).

- `--mixed`: the papers are written in turn as .txt, .md (a heading per 5 paragraphs), .html
  (headings and <p>) and .csv (section,text rows), and examples/docs is copied in: a folder of
  mixed formats rather than plain text only.
- `--prefetch 0,4`: compare prefetch depths (files parsed ahead while a batch embeds,
  `Ingestor.prefetch`; 0 = parse inline as before) in one run: every round ingests the folder
  once per depth into a fresh knowledge base (the depths' order alternates per round) and encodes
  the same chunk texts once; each ratio divides by that round's encode-only time. One file of
  each format is parsed before the first round, so the first run does not pay the parsers'
  first-use imports (unstructured loads spaCy) alone.
- `--write-behind 0,4`: compare the writes inline (0: each batch is written before the next one
  embeds) and in the writer thread (4, the default: `Ingestor.write_behind`, ingest/writer.py;
  each document is written while the rest embeds) in the same way; with both options every (prefetch, write-behind) pair runs each round, and the
  time outside embedding (`ingest - embedding inside it`) and the writes' own time are reported."""

from __future__ import annotations

import argparse
import html
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.datasets import Dataset, load_dataset, write_corpus_as_files  # noqa: E402
from ingest.parse import parse_bytes  # noqa: E402
from ingest.runner import PREFETCH_FILES, WRITE_BEHIND  # noqa: E402
from ingest.service import build_ingestor  # noqa: E402
from rag.factory import Services, build_services  # noqa: E402
from rag.settings import load_settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _paragraphs(text: str) -> list[str]:
    parts = [p.strip() for p in text.split("\n") if p.strip()]
    return parts or [text.strip()]


def write_mixed(dataset: Dataset, folder: Path, doc_ids: list[str]) -> list[Path]:
    """The papers in turn as .txt, .md, .html and .csv, plus the files of examples/docs."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, doc_id in enumerate(doc_ids):
        doc = dataset.corpus[doc_id]
        paras = _paragraphs(doc.text)
        kind = ("txt", "md", "html", "csv")[i % 4]
        if kind == "txt":
            body = "\n\n".join(paras)
        elif kind == "md":
            body = f"# {doc.title or doc_id}\n\n" + "\n\n".join(
                (f"## Part {j // 5 + 1}\n\n" if j % 5 == 0 else "") + p for j, p in enumerate(paras))
        elif kind == "html":
            body = (f"<html><head><title>{html.escape(doc.title or doc_id)}</title></head><body>"
                    f"<h1>{html.escape(doc.title or doc_id)}</h1>"
                    + "".join((f"<h2>Part {j // 5 + 1}</h2>" if j % 5 == 0 else "") + f"<p>{html.escape(p)}</p>"
                              for j, p in enumerate(paras)) + "</body></html>")
        else:
            rows = ['"section","text"'] + [f'"Part {j // 5 + 1}","{p.replace(chr(34), chr(34) * 2)}"'
                                           for j, p in enumerate(paras)]
            body = "\n".join(rows) + "\n"
        path = folder / f"{doc_id}.{kind}"
        path.write_text(body, encoding="utf-8")
        paths.append(path)
    for example in sorted((ROOT / "examples" / "docs").iterdir()):
        if example.is_file():
            paths.append(Path(shutil.copy(example, folder / example.name)))
    return paths


def ingest_once(services: Services, kb: str, folder: Path, prefetch: int, write_behind: int) -> dict[str, float]:
    ingestor = build_ingestor(services, kb)
    ingestor.prefetch = prefetch
    ingestor.write_behind = write_behind
    t0 = time.perf_counter()
    report = ingestor.ingest_folder(folder)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "embed_seconds": report.embed_seconds, "write_seconds": report.write_seconds,
            "chunks": report.chunks_added,
            "files": report.count("indexed", "updated"), "skipped": len(report.skipped)}


def encode_only(services: Services, kb: str) -> float:
    knowledge = services.kbs.open(kb)
    ids = sorted(knowledge.store.ids(knowledge.collection))
    texts = [c.match_text for c in knowledge.get_chunks(ids).values()]
    batch = max(4 * services.settings.embed_batch_size, 64)  # the ingest's flush size
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        services.embedder.encode_corpus(texts[i : i + batch])
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="covidqa")
    parser.add_argument("--embed-model", default="auto")
    parser.add_argument("--limit-docs", type=int, default=None)
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--backend", default="edge", choices=["edge", "local"])
    parser.add_argument("--mixed", action="store_true", help="write the papers as .txt/.md/.html/.csv, add examples")
    parser.add_argument("--prefetch", default=str(PREFETCH_FILES),
                        help="comma-separated prefetch depths to compare in one run, e.g. 0,4")
    parser.add_argument("--write-behind", default=str(WRITE_BEHIND),
                        help="comma-separated write-behind depths to compare in one run (0: inline), e.g. 0,4")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    depths = [int(d) for d in args.prefetch.split(",") if d.strip()]
    writes = [int(w) for w in args.write_behind.split(",") if w.strip()]
    configs = [(d, w) for d in depths for w in writes]

    dataset = load_dataset(args.dataset)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        doc_ids = sorted(dataset.corpus)[: args.limit_docs] if args.limit_docs else sorted(dataset.corpus)
        folder = tmp_path / "files"
        files = (write_mixed(dataset, folder, doc_ids) if args.mixed
                 else write_corpus_as_files(dataset, folder, doc_ids=doc_ids))
        overrides = {"data_dir": tmp_path / "data", "embed_model": args.embed_model, "vector_backend": args.backend}
        if args.chunk_size:
            overrides["chunk_size"] = args.chunk_size
        services = build_services(load_settings(**overrides))
        embedder = services.embedder
        print(f"model: {services.embedder_resolution.reason}", file=sys.stderr)
        embedder.encode_corpus(["warm up the model"])  # load outside both timings
        for suffix in sorted({p.suffix for p in files}):  # and the parsers' first-use imports and models
            sample = next(p for p in files if p.suffix == suffix)
            parse_bytes(sample.read_bytes(), sample.suffix, sample.name)

        runs = []
        for r in range(args.rounds):
            order = configs if r % 2 == 0 else configs[::-1]
            timed = {c: ingest_once(services, f"bench-r{r}-p{c[0]}-w{c[1]}", folder, *c) for c in order}
            encode_s = encode_only(services, f"bench-r{r}-p{order[0][0]}-w{order[0][1]}")
            for d, w in configs:
                t = timed[(d, w)]
                runs.append({"round": r + 1, "prefetch": d, "write_behind": w, "ingest_seconds": round(t["seconds"], 2),
                             "embed_seconds_inside_ingest": round(t["embed_seconds"], 2),
                             "outside_embedding_seconds": round(t["seconds"] - t["embed_seconds"], 2),
                             "write_seconds": round(t["write_seconds"], 2),
                             "encode_only_seconds": round(encode_s, 2), "chunks": t["chunks"],
                             "files_indexed": t["files"], "files_skipped": t["skipped"],
                             "chunks_per_second": round(t["chunks"] / t["seconds"], 2),
                             "ratio_ingest_over_encode": round(t["seconds"] / encode_s, 3)})
            print(json.dumps(runs[-len(configs):]), file=sys.stderr)
        checks = [services.kbs.open(f"bench-r{r}-p{d}-w{w}").check().ok
                  for r in range(args.rounds) for d, w in configs]

    by_config = {c: [x["ratio_ingest_over_encode"] for x in runs if (x["prefetch"], x["write_behind"]) == c]
                 for c in configs}
    result = {
        "dataset": args.dataset, "mixed_formats": args.mixed, "files": len(files),
        "formats": sorted({p.suffix for p in files}), "model": embedder.name,
        "batch": services.settings.embed_batch_size, "runs": runs,
        "mean_ratio_by_prefetch_and_write_behind": {f"p{d}-w{w}": round(sum(v) / len(v), 3)
                                                    for (d, w), v in by_config.items()},
        "peak_rss_mb": round(peak_rss_mb(), 1), "stores_agree": all(checks),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
