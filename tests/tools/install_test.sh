#!/usr/bin/env bash
# tests/tools/install_test.sh BUILD_DIR -- `cmake --install` into a temporary
# prefix: the command, its man page (groff, starts with .TH, documents every
# command) and its bash completion (valid bash, offers every command and
# completes their options). Removes only its own mktemp directory.
set -u
build=$1
P=$(mktemp -d "${TMPDIR:-/tmp}/bg-install-XXXXXX") || exit 1
trap 'rm -rf "$P"' EXIT
fail=0
bad() { echo "FAIL: $*" >&2; fail=1; }

cmake --install "$build" --prefix "$P" > "$P.log" 2>&1 || { cat "$P.log"; bad "cmake --install failed"; }
rm -f "$P.log"
B="$P/bin/brigade"
man="$P/share/man/man1/brigade.1"
comp="$P/share/bash-completion/completions/brigade"
[ -x "$B" ] || bad "$B missing"
[ -s "$man" ] || bad "$man missing"
[ -s "$comp" ] || bad "$comp missing"
[ $fail -eq 0 ] || exit 1

"$B" version | grep -q '^brigade ' || bad "installed brigade does not run"
head -n1 "$man" | grep -q '^\.TH BRIGADE 1' || bad "man page does not start with .TH"
bash -n "$comp" || bad "completion is not valid bash"
cmds=$("$B" help --options | cut -f1 | sort -u)
[ -n "$cmds" ] || bad "no commands listed"
for c in $cmds version help; do
    grep -qw -- "$c" "$comp" || bad "completion does not mention '$c'"
done
for c in $cmds; do
    grep -q "^\.SS \"brigade $c " "$man" || bad "man page has no section for '$c'"
done
# The man page documents every option of the table.
while IFS=$'\t' read -r c o _; do
    grep -qF -- "$(printf '%s' "--$o" | sed 's/-/\\-/g')" "$man" || bad "man page lacks --$o ($c)"
done < <("$B" help --options)

# Completion in action: commands, a command's options, a choice's values.
complete_words() {
    bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _brigade;
             printf "%s\n" "${COMPREPLY[@]}"' _ "$comp" "$@"
}
complete_words brigade pl | grep -qx plan || bad "completing 'brigade pl' does not give plan"
complete_words brigade train --mic | grep -qx -- --micro-batches \
    || bad "completing 'train --mic' does not give --micro-batches"
complete_words brigade train --device "" | grep -qx cuda \
    || bad "completing 'train --device' does not offer cuda"
if command -v man > /dev/null && command -v nroff > /dev/null; then
    MANWIDTH=80 man -l "$man" 2>/dev/null | grep -q 'micro-batches' || bad "man cannot render it"
fi
[ $fail -eq 0 ] && echo "install_test: ok ($(echo $cmds | wc -w) commands)"
exit $fail
