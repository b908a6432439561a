# Sourced by the test scripts under engine/tests/ (and benches/torch/compare.sh):
#   skip_or_fail NAME "what is missing" "how to get it"
# Where a script cannot run for want of something (root, a package, Java), it says so and exits:
# with 0 (SKIP) on a developer's machine, with 1 (FAIL) when CI is set (anything but empty, 0 or
# false, as CI services set it), so that CI never passes a test it did not run.
skip_or_fail() {
  local name=$1 missing=$2 how=$3
  case "${CI:-}" in
    "" | 0 | false | FALSE | False)
      echo "SKIP $name: $missing is missing ($how); CI=true makes this a failure"
      exit 0
      ;;
    *)
      echo "FAIL $name: $missing is missing and CI is set, so this fails rather than skips: $how" >&2
      exit 1
      ;;
  esac
}
