# The README's commands. CMake does the real work; this file only names it.
#   make run    set up, build (Release), start natterd on 127.0.0.1:8080
#   make test   set up, build with ASan+UBSan, run every test
#   make build  build natterd, natter and natter-bench into build/
JOBS ?= $(shell nproc)
LISTEN ?= 127.0.0.1:8080
DATA ?= ./natter-data

.PHONY: build run test setup fuzz format clean docs bench

build:
	@scripts/setup --build
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build build -j $(JOBS)

run: build
	@mkdir -p $(DATA)
	./build/natterd --listen $(LISTEN) --data $(DATA)

FUZZ_SECONDS ?= 60

# The Release build is part of the test: `make run` must build where tests pass.
test:
	@scripts/setup
	@$(MAKE) --no-print-directory build
	@cmake -S . -B build-test -DCMAKE_BUILD_TYPE=Debug -DNT_SANITIZE=ON >/dev/null
	@cmake --build build-test -j $(JOBS)
	@cd build-test && ctest --output-on-failure -j $(JOBS)
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=10

fuzz:
	@scripts/setup
	@CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DNT_FUZZ=ON >/dev/null
	@cmake --build build-fuzz -j $(JOBS) --target fuzzers
	@tests/fuzz/run build-fuzz $(FUZZ_SECONDS)

# docs/configuration.md is generated from the settings table.
docs: build
	@{ printf '# Configuration\n\nEvery setting of natterd, generated from the settings table in\n'; \
	   printf '`src/common/config.c` by `make docs` (`natterd --help-markdown`). Each flag has\n'; \
	   printf 'an environment twin; flags win over the environment, which wins over the default.\n\n'; \
	   ./build/natterd --help-markdown; } > docs/configuration.md

# Measures natterd with natter-bench (and Mosquitto for comparison); writes
# docs/plots/. Takes several minutes; see docs/performance.md.
bench: build
	@scripts/setup --bench
	@scripts/plot-bench run --build build
	@scripts/plot-bench plot

format:
	@clang-format -i $$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' 'tests/*.h')

clean:
	rm -rf build build-test build-fuzz
