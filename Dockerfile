# syntax=docker/dockerfile:1
# The rag-service API image. CPU by default; a CUDA build with a build argument:
#   docker build -t rag-service .                                  # CPU torch wheel
#   docker build -t rag-service:cuda --build-arg TORCH_VARIANT=cu130 .
# TORCH_VARIANT names a PyTorch wheel index (cpu, cu126, cu128, cu130, ...): pick the CUDA version
# the host's NVIDIA driver supports. The CUDA wheels bring their own CUDA libraries, so the base
# image stays python:slim; the host needs the NVIDIA driver and the NVIDIA Container Toolkit.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv && pip install --upgrade pip
# torch first, from the index of the chosen variant: resolving it from the project's dependencies
# would pull the default CUDA build of several GB even for a CPU image
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
 && pip freeze | grep -i '^torch==' > /opt/torch-constraint.txt \
 && cat /opt/torch-constraint.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rag ./rag
COPY ingest ./ingest
COPY api ./api
COPY eval ./eval
COPY cli ./cli
# the constraint keeps the torch installed above whatever the dependencies ask for
RUN PIP_CONSTRAINT=/opt/torch-constraint.txt pip install . \
 && python -c "import torch; print('torch', torch.__version__, 'cuda build:', torch.version.cuda)" \
 && python -c "import rapidocr_onnxruntime, pypdfium2; print('OCR models bundled')"

FROM ${PYTHON_IMAGE} AS runtime
# libgomp1: llama.cpp (xllamacpp, the embedded LLM) links the system OpenMP runtime;
# libgl1, libglib2.0-0: opencv-python (pulled by rapidocr-onnxruntime, the OCR engine) links them
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 rag \
 && mkdir -p /data /models \
 && chown rag:rag /data /models
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RAG_DATA_DIR=/data \
    RAG_MODELS_DIR=/models \
    HF_HOME=/data/huggingface
USER rag
WORKDIR /home/rag
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=5 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
CMD ["rag", "serve", "--host", "0.0.0.0", "--port", "8080"]
