"""Peak memory of loading a large BEIR corpus for `rag eval`: generate a synthetic dataset
(default 100,000 passages of ~600 characters, 1,000 queries with 3 relevant passages each and
answers without doc_id), then load it in a fresh process per mode and print the peak RSS:

- `all`: `load_dataset` keeping every passage text (what scripts and benchmarks use);
- `stream`: what `rag eval` does: `keep_text="judged"`, each passage written as a file while
  corpus.jsonl is read (`CorpusFolder`), only the judged passages' texts kept.

Usage: python benchmarks/eval_stream_memory.py [--passages 100000] [--root /tmp/evalmem]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = ("virus protein cell infection patient study result clinical model data sample immune response "
         "analysis method effect risk group treatment vaccine").split()


def generate(root: Path, passages: int, queries: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    with (root / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for i in range(passages):
            text = " ".join(rng.choice(WORDS) for _ in range(85)) + f" marker{i}."
            fh.write(json.dumps({"_id": f"p{i}", "title": f"title {i}", "text": text}) + "\n")
    with (root / "queries.jsonl").open("w") as q, (root / "qrels.tsv").open("w") as r, \
            (root / "answers.jsonl").open("w") as a:
        r.write("query-id\tcorpus-id\tscore\n")
        for i in range(queries):
            q.write(json.dumps({"_id": f"q{i}", "text": f"what is marker {i}"}) + "\n")
            docs = rng.sample(range(passages), 3)
            for grade, doc in zip((2, 1, 0), docs):
                r.write(f"q{i}\tp{doc}\t{grade}\n")
            a.write(json.dumps({"_id": f"q{i}", "answers": [f"marker{docs[0]}"]}) + "\n")


def measure(root: Path, mode: str) -> None:
    from eval.datasets import CorpusFolder, load_dataset

    started = time.perf_counter()
    if mode == "all":
        dataset = load_dataset(str(root))
    else:
        writer = CorpusFolder(root.parent / (root.name + "-files"))
        dataset = load_dataset(str(root), keep_text="judged", on_passage=writer.write)
        writer.prune()
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "passages": len(dataset.doc_ids), "texts_kept": len(dataset.corpus),
                      "evaluable": len(dataset.qrels), "with_answer_spans": len(dataset.answers),
                      "seconds": round(seconds, 1), "peak_rss_mib": round(peak_mib, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--root", type=Path, default=Path("/tmp/evalmem/synthetic"))
    parser.add_argument("--measure", choices=("all", "stream"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.root, args.measure)
        return
    generate(args.root, args.passages, args.queries)
    size = (args.root / "corpus.jsonl").stat().st_size / 2**20
    print(json.dumps({"corpus_jsonl_mib": round(size, 1)}))
    for mode in ("all", "stream"):
        subprocess.run([sys.executable, __file__, "--root", str(args.root), "--measure", mode], check=True)


if __name__ == "__main__":
    main()
