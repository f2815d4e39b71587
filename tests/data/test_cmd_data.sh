#!/bin/sh
# tests/data/test_cmd_data.sh BRIGADE [SOURCE_DIR] -- `brigade data` end to
# end: shards a generated text file, checks file names, sizes and header
# words, and the exit codes for usage errors (2) and bad input (2); with
# SOURCE_DIR, llama-tiny trains on the shards on two stages and its loss
# falls well below ln 256 = 5.55. Removes only its own mktemp directory.
set -u
B="$1"
T=$(mktemp -d "${TMPDIR:-/tmp}/bg-cmd-data-XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
fail=0
check() { if ! eval "$1"; then echo "FAIL: $1"; fail=1; fi; }

i=0
while [ $i -lt 400 ]; do echo "line $i of the brigade test text"; i=$((i + 1)); done > "$T/in.txt"
n=$(wc -c < "$T/in.txt")

"$B" data "$T/in.txt" -o "$T/sub/tiny" --val 0.25 --shard-tokens 5000 > "$T/out" 2>&1
check '[ $? -eq 0 ]'
cat "$T/out"
check 'grep -q "tokens:$T/sub/tiny" "$T/out"'
nval=$(python3 -c "print(int($n*0.25))" 2>/dev/null || echo $((n / 4)))
ntr=$((n - nval))
shards=$(( (ntr + 4999) / 5000 ))
check '[ $(ls "$T"/sub/tiny_train_*.bin | wc -l) -eq $shards ]'
check '[ -f "$T/sub/tiny_val_000000.bin" ]'
check '[ $(wc -c < "$T/sub/tiny_train_000000.bin") -eq $((1024 + 2 * 5000)) ]'
check '[ $(wc -c < "$T/sub/tiny_val_000000.bin") -eq $((1024 + 2 * nval)) ]'
# Header words: magic 20240520 = 0x0134d888, version 1, count 5000 = 0x1388 (little-endian).
check '[ "$(od -An -tx1 -N12 "$T/sub/tiny_train_000000.bin" | tr -d " \n")" = "88d834010100000088130000" ]'
# First token is the first byte of the text ("l" = 0x6c) as uint16.
check '[ "$(od -An -tx1 -j1024 -N2 "$T/sub/tiny_train_000000.bin" | tr -d " \n")" = "6c00" ]'
check '! ls "$T"/sub/*.tmp.* > /dev/null 2>&1'

if [ $# -ge 2 ]; then
    "$B" train "$2/models/llama-tiny.graph" --data "tokens:$T/sub/tiny" --batch 8 --steps 40 \
        --log-every 40 --stages 2 --micro-batches 2 --lr 3e-3 > "$T/train" 2>&1
    check '[ $? -eq 0 ]'
    loss=$(sed -n 's/.*step 40\/40 | loss \([0-9.]*\).*/\1/p' "$T/train")
    echo "llama-tiny on the shards: loss ${loss:-none} after 40 steps"
    check 'awk "BEGIN { exit !(${loss:-0} > 0 && ${loss:-0} < 4.0) }"'
fi

"$B" data > /dev/null 2>&1;                         check '[ $? -eq 2 ]'
"$B" data "$T/in.txt" > /dev/null 2>&1;             check '[ $? -eq 2 ]'
"$B" data "$T/in.txt" -o "$T/x" --val 1.5 > /dev/null 2>&1; check '[ $? -eq 2 ]'
"$B" data "$T/in.txt" -o "$T/x" --bogus > /dev/null 2>&1; check '[ $? -eq 2 ]'
"$B" data "$T/missing.txt" -o "$T/x" > /dev/null 2>&1;    check '[ $? -eq 2 ]'
printf 'a' > "$T/one.txt"
"$B" data "$T/one.txt" -o "$T/x" > "$T/err" 2>&1;   check '[ $? -eq 2 ]'
check 'grep -q "too short" "$T/err"'
"$B" data --help > /dev/null;                        check '[ $? -eq 0 ]'

[ $fail -eq 0 ] && echo "test_cmd_data: ok"
exit $fail
