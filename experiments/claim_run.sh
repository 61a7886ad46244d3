# Sourced by the run-list scripts (sinusoid_seeds.sh, continual_vandeven.sh, omniglot_seeds.sh):
# one listed run, skipped when finished and shared safely between processes working down the
# same list; and the scripts' common command line.
#
#   claim_and_run <workdir> <command...>   # runs `<command...> --workdir=<workdir>`
#   run_list_main "$@"                     # all | runs [pattern] | list | tables
#
# A workdir with a results.json is finished (skipped). Otherwise the run is claimed by
# creating `<workdir>.claim` (atomic: a process that cannot create it leaves the run to the
# one that did), its output goes to `<workdir>.log`, and the claim is removed when it ends.
# Returns 1 if the command failed (the log says why).
claim_and_run() {
  local wd=$1 status=0; shift
  [ -f "$wd/results.json" ] && return 0
  mkdir -p "$(dirname "$wd")"
  mkdir "$wd.claim" 2>/dev/null || return 0  # another process runs it
  echo "$(date +%T) $wd"
  "$@" --workdir="$wd" < /dev/null > "$wd.log" 2>&1 || { echo "failed: $wd (see $wd.log)"; status=1; }
  rmdir "$wd.claim"
  return $status
}

# The command line of a run-list script, which defines `list` (one run per line: <workdir>
# <config argument> [overrides]), `run <workdir> <config argument> [overrides]` and `tables`.
run_list_main() {
  case "${1:-all}" in
    runs) runs_matching "${2:-}" ;;
    list) list ;;  # the run list itself (tests/test_run_lists.py checks every line)
    tables) tables ;;
    all) runs_matching "" && tables ;;
    *) echo "usage: $0 [all | runs [pattern] | list | tables]" >&2; exit 2 ;;
  esac
}

runs_matching() {  # runs_matching <pattern>: the listed runs whose workdir contains pattern
  local status=0 wd rest
  while read -r wd rest; do
    [[ $wd == *"$1"* ]] || continue
    run $wd $rest || status=1
  done < <(list)
  return $status
}
