# The two set-up commands (see README.md): `make run` and `make test`. Both install what is
# missing first (scripts/setup.sh), then configure and build with CMake presets.
PRESET ?= default
BUILD := build/$(PRESET)
JOBS ?= $(shell nproc)
STORE ?= var/store
LISTEN ?= 127.0.0.1:8080

.PHONY: all setup build test run fuzz bench format clean

all: build

setup:
	@scripts/setup.sh

$(BUILD)/build.ninja: | setup
	cmake --preset $(PRESET) >/dev/null

build: setup $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900

run: build
	scripts/run-demo.sh $(BUILD)/cli/narcache $(STORE) $(LISTEN)

# libFuzzer targets, each for FUZZ_SECONDS (default 30) with the seed corpus in tests/data/fuzz.
FUZZ_SECONDS ?= 30
fuzz: setup
	cmake --preset fuzz >/dev/null && cmake --build build/fuzz -j $(JOBS) --target fuzzers
	scripts/run-fuzzers.sh build/fuzz/fuzz $(FUZZ_SECONDS)

bench: build
	NARCACHE_SETUP_BENCH=1 scripts/setup.sh
	bench/formats.sh $(BUILD)

format:
	clang-format -i $$(git ls-files '*.cc' '*.h')

clean:
	rm -rf build
