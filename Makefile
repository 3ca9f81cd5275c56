# Two commands on a fresh machine:
#   make build   install everything into .venv, then build the default targets of Buildfile.toml
#   make test    install everything into .venv, then run the test suite
# On a CPU machine torch==2.13.0 resolves to the CPU wheel that lies on this workplace's disk;
# a GPU workstation installs its CUDA build of torch into .venv first and keeps it.

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: install build test servers clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[3d,test]'
	rm -f $(VENV)/.installed-*
	touch $@

servers:
	@command -v nginx >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; } || \
	  echo "nginx is not installed: the HTTP remote-cache tests will be skipped"
	@{ command -v localedef >/dev/null && [ -d /usr/share/i18n/locales ]; } || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq locales >/dev/null; } || \
	  echo "glibc's locale sources are not installed: verify --vary env will change the locale variables only"

build: install
	$(VENV)/bin/buildsys build

test: install servers
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) out store/*/ store/FORMAT store/statcache store/lock
