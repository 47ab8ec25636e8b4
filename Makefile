# listcrypt: make build | test | demo | bench | fuzz | deb | install
GO       ?= go
BIN      := bin
FUZZTIME ?= 20s
# Fuzz targets: package:target
FUZZ_TARGETS := ./milter/inbound:FuzzExamine ./keyring:FuzzParseMemberKey ./milter/workflow:FuzzParseCommand \
	./milter/workflow:FuzzEntityText ./policy:FuzzParse ./policy:FuzzListRecipient ./policy/config:FuzzParse ./milter/bounce:FuzzParse

.PHONY: build test vet demo bench fuzz fuzz-short clean deb install

build:
	$(GO) build -o $(BIN)/ ./cmd/...

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

# The tools the tests drive live in /usr/sbin (postfix, postconf) and,
# for PostgreSQL's server, in /usr/lib/postgresql/N/bin on Debian.
PG_BIN := $(lastword $(sort $(wildcard /usr/lib/postgresql/*/bin)))
export PATH := $(PATH):/usr/sbin:/usr/local/go/bin$(if $(PG_BIN),:$(PG_BIN))

# What the tests need: installed when run as root (contrib/testdeps.sh),
# else only listed.
.PHONY: testdeps
testdeps:
	@bash contrib/testdeps.sh

# The whole suite: unit, store on SQLite and a real PostgreSQL, interop with
# gpg/sq/rnp, a real Postfix end to end, the Debian package, then each
# fuzz target briefly. As root on a fresh Debian machine it first
# installs what it needs.
test: testdeps vet
	GO=$(GO) LOG=$(BIN)/test.log bash contrib/testrun.sh
	$(GO) test -count=1 -run 'Memory' ./keyring/  # memory bounds, without the race detector's overhead
	$(MAKE) fuzz-short FUZZTIME=10s

# The multi-host races, 1,000 of each instead of make test's 200: two
# milter daemons on one real PostgreSQL (TestTwoHostsRaceForOnePost), and
# two real Postfix hosts each with its own milter on one PostgreSQL
# (TestTwoPostfixHostsRaceForOnePost). CI=1: fails, not skips, without
# PostgreSQL or Postfix.
.PHONY: race-long
race-long:
	CI=1 LISTCRYPT_RACE_TRIALS=1000 LISTCRYPT_MULTIHOST_TRIALS=1000 $(GO) test -race -count=1 -timeout 60m -v \
		-run '^(TestTwoHostsRaceForOnePost|TestTwoPostfixHostsRaceForOnePost)$$' ./milter/

fuzz-short:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$name in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

fuzz:
	$(MAKE) fuzz-short FUZZTIME=5m

# Benchmarks write their figures to docs/benchmarks.md. GnuPG with 10,000
# recipients is slow (minutes to import the keys): the run takes ~25 min.
# Run it on an otherwise idle machine: the ratios are measured in one run.
# The posts through a real Postfix (root and the postfix package; CI=1 makes
# their absence a failure) run 10 posts per list size, 3 at 10,000 members.
bench:
	@mkdir -p $(BIN)
	$(GO) test -run '^$$' -bench . -benchtime 300x -count 5 ./milter/ | tee $(BIN)/bench.txt
	LISTCRYPT_BENCH_POSTFIX=1 CI=1 $(GO) test -run '^$$' -bench 'PostThroughPostfix|PostfixFloor' -benchtime 10x -count 1 -timeout 30m ./milter/ | tee -a $(BIN)/bench.txt
	$(GO) test -run '^$$' -bench 'Post|Floor|MemberDecrypt' -count 3 -timeout 30m ./milter/outbound/ | tee -a $(BIN)/bench.txt
	$(GO) test -run '^$$' -bench 'GnuPG' -benchtime 1x -count 3 -timeout 90m ./milter/outbound/ | tee -a $(BIN)/bench.txt
	$(GO) run ./contrib/benchdoc < $(BIN)/bench.txt > docs/benchmarks.md

demo: build
	bash contrib/demo/demo.sh

clean:
	rm -rf $(BIN)

# A Debian package, bin/listcrypt_VERSION_ARCH.deb, built with dpkg-deb
# alone (contrib/debian/README.md). VERSION defaults to git describe
# --tags --always made a Debian version (0~gitDATE.HASH while there is no
# tag); "make deb VERSION=1.0" sets it.
deb:
	GO=$(GO) OUT=$(BIN) VERSION=$(VERSION) sh contrib/debian/build-deb.sh

# For systems without dpkg: binaries in $(PREFIX)/bin, man pages (if
# contrib/man has any), the unit, and the sample config as
# /etc/listcrypt/listcrypt.toml.sample (an existing listcrypt.toml is never
# touched). DESTDIR stages into a folder. Users, folders, init: README.md.
PREFIX     ?= /usr/local
DESTDIR    ?=
SYSCONFDIR ?= /etc
MANDIR     ?= $(PREFIX)/share/man
UNITDIR    ?= $(PREFIX)/lib/systemd/system
install:
	@mkdir -p $(BIN)/install
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/install/ ./cmd/...
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(SYSCONFDIR)/listcrypt $(DESTDIR)$(UNITDIR)
	install -m 0755 $(BIN)/install/listcrypt $(BIN)/install/listcrypt-milter $(BIN)/install/listcrypt-responder $(DESTDIR)$(PREFIX)/bin/
	@set -e; for m in contrib/man/*.[158]; do \
		[ -f "$$m" ] || continue; sec=$${m##*.}; \
		install -d $(DESTDIR)$(MANDIR)/man$$sec; \
		echo "install -m 0644 $$m $(DESTDIR)$(MANDIR)/man$$sec/"; \
		install -m 0644 "$$m" $(DESTDIR)$(MANDIR)/man$$sec/; \
	done
	install -m 0644 contrib/listcrypt.toml $(DESTDIR)$(SYSCONFDIR)/listcrypt/listcrypt.toml.sample
	sed 's|/usr/local/bin/|$(PREFIX)/bin/|g' contrib/systemd/listcrypt-milter.service > $(DESTDIR)$(UNITDIR)/listcrypt-milter.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/listcrypt-milter.service
