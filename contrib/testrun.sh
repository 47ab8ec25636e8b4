#!/bin/bash
# The unit and end-to-end suite as make test runs it: the whole log goes
# to $LOG, the terminal gets each package's result, the failures in full,
# and how many end-to-end tests ran through each MTA (the tests log a
# line "through postfix: ..." or "through sendmail: ..." each).
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
	grep -E -A60 -- '^ *--- FAIL' "$LOG" | head -2000
	echo "the whole log: $LOG"
fi
exit "$rc"
