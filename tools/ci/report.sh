# Sourced by the tier scripts: record a check that is not a pytest test
# (pytest runs record themselves through tests/conftest.py) for the summary
# at the end of tools/run-tests.sh.  Without NXS_RESULTS_DIR (a tier script
# run by hand) it only prints.
#
#   report passed|failed|skipped|notrun NAME [DETAIL]
#   report_counts NAME PASSED FAILED SKIPPED      (a runner such as tempest)
report() {
    local kind=$1 name=$2 detail=${3:-}
    case $kind in
        notrun) echo "!!! NOT RUN: $name${detail:+ ($detail)}" ;;
        skipped) echo "skipped: $name${detail:+ ($detail)}" ;;
    esac
    [ -n "${NXS_RESULTS_DIR:-}" ] || return 0
    mkdir -p "$NXS_RESULTS_DIR"
    printf '%s\t%s\t%s\n' "$kind" "$name" "${detail//$'\t'/ }" \
        >> "$NXS_RESULTS_DIR/checks.tsv"
}
report_counts() {
    [ -n "${NXS_RESULTS_DIR:-}" ] || return 0
    mkdir -p "$NXS_RESULTS_DIR"
    printf 'counts\t%s\t%s %s %s\n' "$1" "$2" "$3" "$4" \
        >> "$NXS_RESULTS_DIR/checks.tsv"
}
