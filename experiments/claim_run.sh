# Sourced by the run-list scripts (sinusoid_seeds.sh, continual_vandeven.sh, omniglot_seeds.sh):
# one listed run, skipped when finished and shared safely between processes working down the
# same list; its record kept in the repository; and the scripts' common command line.
#
#   claim_and_run <workdir> <command...>   # runs `<command...> --workdir=<workdir>`
#   save_record <workdir>                  # its config.json and results.json into results/
#   run_list_main "$@"                     # all | runs [pattern] | list | records | tables
#
# A run's record is `results/<workdir without its leading workdirs/>/` holding the finished run's
# `config.json` and `results.json` (what the tables read; `RECORD_FILES` names others a script's
# tables need), a few kB committed with the code: workdirs (checkpoints, logs, metrics) stay on the
# machine that ran them and are lost with it, the records are not, so the README's tables can be
# rebuilt on any clone and runs from several machines add up. A record is written whole or not at
# all (copied into a temporary directory, then renamed).
#
# A run with a record, or a workdir with a results.json, is finished (skipped). Otherwise the
# run is claimed by creating `<workdir>.claim` (atomic: a process that cannot create it leaves
# the run to the one that did), its output goes to `<workdir>.log`, the record is saved when
# it succeeds, and the claim is removed when it ends. Returns 1 if the command failed (the log
# says why).
RECORDS=${HYPERNET_RECORDS:-results}
RECORD_FILES=${RECORD_FILES:-config.json results.json}

record_dir() {  # record_dir <workdir>: where its record lives
  echo "$RECORDS/${1#workdirs/}"
}

save_record() {  # save_record <workdir>: copies a finished run's record (fails if unfinished)
  local wd=$1 rec tmp f
  rec=$(record_dir "$wd")
  for f in $RECORD_FILES; do
    [ -f "$wd/$f" ] || { echo "save_record: $wd/$f not found (run unfinished?)" >&2; return 1; }
  done
  mkdir -p "$(dirname "$rec")"
  tmp=$(mktemp -d "$RECORDS/.tmp.XXXXXX")  # a hidden name: no table's glob matches it
  for f in $RECORD_FILES; do cp "$wd/$f" "$tmp/"; done
  chmod 755 "$tmp"
  rm -rf "$rec"
  mv "$tmp" "$rec"
}

claim_and_run() {
  local wd=$1 status=0; shift
  [ -f "$(record_dir "$wd")/results.json" ] && return 0
  [ -f "$wd/results.json" ] && { save_record "$wd"; return; }
  mkdir -p "$(dirname "$wd")"
  mkdir "$wd.claim" 2>/dev/null || return 0  # another process runs it
  echo "$(date +%T) $wd"
  if "$@" --workdir="$wd" < /dev/null > "$wd.log" 2>&1; then
    save_record "$wd" || status=1
  else
    echo "failed: $wd (see $wd.log)"; status=1
  fi
  rmdir "$wd.claim"
  return $status
}

# The command line of a run-list script, which defines `list` (one run per line: <workdir>
# <config argument> [overrides]), `run <workdir> <config argument> [overrides]` and `tables`
# (which reads the records).
run_list_main() {
  case "${1:-all}" in
    runs) runs_matching "${2:-}" ;;
    list) list ;;  # the run list itself (tests/test_run_lists.py checks every line)
    records) save_records ;;
    tables) tables ;;
    all) runs_matching "" && tables ;;
    *) echo "usage: $0 [all | runs [pattern] | list | records | tables]" >&2; exit 2 ;;
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

save_records() {  # the record of every listed run finished here and not yet recorded
  local wd rest n=0
  while read -r wd rest; do
    if [ -f "$wd/results.json" ] && [ ! -f "$(record_dir "$wd")/results.json" ]; then
      save_record "$wd" && n=$((n + 1))
    fi
  done < <(list)
  echo "$n new records in $RECORDS/"
}
