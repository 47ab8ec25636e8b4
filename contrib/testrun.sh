#!/bin/bash
# The unit and end-to-end suite as make test runs it: the whole -v log
# goes to $LOG; the terminal gets each package's result, how many
# end-to-end tests ran through each MTA (the tests log a line "through
# postfix: ..." or "through sendmail: ..." each), and each failure in
# full: a failed test's own output (go test -v attributes output lines to
# tests with its "=== RUN/CONT/NAME" markers), and the panic of a
# package that timed out or crashed with the tests that were running.
set -u
GO=${GO:-go}
LOG=${LOG:-bin/test.log}
mkdir -p "$(dirname "$LOG")"
"$GO" test -race -shuffle=on -count=1 -timeout 20m -v ./... >"$LOG" 2>&1
rc=$?
grep -E '^(ok|FAIL|panic:)' "$LOG"
echo "end to end through each MTA (from $LOG):"
for mta in postfix sendmail; do
	n=$(grep -cE "^ +[A-Za-z0-9_]+\.go:[0-9]+: through $mta:" "$LOG")
	echo "  $mta: $n"
	grep -E "^ +[A-Za-z0-9_]+\.go:[0-9]+: through $mta:" "$LOG" | sed -E 's/^ +[A-Za-z0-9_]+\.go:[0-9]+: /    /' | sort | uniq -c | sed 's/^/  /'
done
if [ "$rc" -ne 0 ]; then
	echo "failures:"
	awk '
		# The test the next output lines belong to.
		/^=== (RUN|CONT|NAME|PAUSE) / { cur = $3; next }
		# A failed test: its own lines (the last 150), then the verdict.
		/^ *--- FAIL: / {
			name = $3
			print "--- FAIL: " name
			n = cnt[name]; from = (n > 150) ? n - 150 : 0
			if (from > 0) print "    ... (" from " earlier lines in the log)"
			for (i = from; i < n; i++) print lines[name, i]
			next
		}
		# A package that timed out or crashed: its panic and the tests
		# that were running.
		/^panic: / { panicking = 40 }
		panicking > 0 { print; panicking--; next }
		/^(FAIL|ok|PASS)/ { cur = ""; next }
		cur != "" { lines[cur, cnt[cur]++] = $0 }
	' "$LOG" | head -3000
	echo "the whole log: $LOG"
fi
exit "$rc"
