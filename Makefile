# Two commands on a fresh machine:
#   make build   install everything into .venv, then build the default targets of Buildfile.toml
#   make test    install everything into .venv, then run the test suite
#   make site    the review site of the default project's store: out/site/index.html
# On a CPU machine torch==2.13.0 resolves to the CPU wheel that lies on this workplace's disk;
# a GPU workstation installs its CUDA build of torch into .venv first and keeps it.

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

VIEWER := buildsys/views/site/static/vendor/model-viewer-umd.min.js
VALIDATOR := tools/gltf-validator/node_modules/gltf-validator/package.json

.PHONY: install build test site servers browser validator clean

install: $(STAMP) $(VIEWER)

# The review site's 3D viewer (@google/model-viewer, pinned by package-lock.json) is package
# data fetched from npm here, never at view time; without npm the site offers GLBs for download.
$(VIEWER): package.json package-lock.json
	@if command -v npm >/dev/null; then \
	  npm ci --no-audit --no-fund --legacy-peer-deps --loglevel=error && \
	  mkdir -p $(dir $(VIEWER)) && \
	  cp node_modules/@google/model-viewer/dist/model-viewer-umd.min.js $(VIEWER) && \
	  cp node_modules/@google/model-viewer/LICENSE $(dir $(VIEWER))model-viewer.LICENSE; \
	else echo "npm is not installed: the review site will have no 3D viewer (and its browser test is skipped)"; fi

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[3d,test,ray]'
	$(PY) -m compileall -q -j 0 buildsys recipes  # byte-compiled whatever PYTHONDONTWRITEBYTECODE says (CI, containers)
	rm -f $(VENV)/.installed-*
	touch $@

servers:
	@command -v nginx >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; } || \
	  echo "nginx is not installed: the HTTP remote-cache tests will be skipped"
	@{ command -v localedef >/dev/null && [ -d /usr/share/i18n/locales ]; } || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq locales >/dev/null; } || \
	  echo "glibc's locale sources are not installed: verify --vary env will change the locale variables only"

# the Khronos glTF-Validator (npm), pinned by tools/gltf-validator/package-lock.json; the tests run
# every GLB of the default project through it (tools/gltf-validator/validate.cjs)
validator: $(VALIDATOR)

$(VALIDATOR): tools/gltf-validator/package.json tools/gltf-validator/package-lock.json
	@command -v npm >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
	cd tools/gltf-validator && npm ci --no-audit --no-fund --silent
	touch $@

build: install
	$(VENV)/bin/buildsys build; status=$$?; $(VENV)/bin/buildsys report --html out/site; exit $$status

site: install
	$(VENV)/bin/buildsys report --html out/site

# Debian's Chromium for the review-site browser tests (as root; skipped with the reason otherwise)
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium is not installed: the review-site browser tests will be skipped"

test: install servers browser validator
	$(PY) -m ruff check buildsys recipes tests bench
	$(PY) -m mypy
	# two workers: the suite waits on subprocesses, servers and disks about half the time (one
	# process kept 0.6 of a core busy): 15.3 -> 9.0 min on the 2-core VM, every test the same;
	# loadgroup: the tests marked xdist_group("ray-cluster") share one Ray cluster on one worker
	$(PY) -m pytest -q -n 2 --dist loadgroup

clean:
	rm -rf $(VENV) out store/*/ store/FORMAT store/lock node_modules $(dir $(VIEWER)) tools/gltf-validator/node_modules
