# Sourced by the run-list scripts (sinusoid_seeds.sh, continual_vandeven.sh): one listed run,
# skipped when finished and shared safely between processes working down the same list.
#
#   claim_and_run <workdir> <command...>   # runs `<command...> --workdir=<workdir>`
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
