#!/usr/bin/env bash
# The run of the GitHub action (action.yml): `celery-doctor lint` to SARIF (for code scanning), to markdown (the
# job summary) and to text (the job log). Writes exit-code and sarif-file to $GITHUB_OUTPUT; exits 0 on findings
# (exit 1: the action's last step fails the job after the upload) and with celery-doctor's code otherwise (2:
# the app could not be loaded or bad options, 3: celery-doctor failed), so that no empty SARIF is uploaded.
# Inputs come as environment variables (never pasted into the script: a workflow's values stay data):
#   CD_APP, CD_FAIL_ON, CD_SARIF_FILE, CD_BASELINE, CD_ARGS (extra arguments, split on spaces, never globbed),
#   CD_PROGRAM (default celery-doctor).
set -uo pipefail
set -f
out_dir=${RUNNER_TEMP:-$(mktemp -d)}
sarif=${CD_SARIF_FILE:-$out_dir/celery-doctor.sarif}
args=(lint --format sarif --output "$sarif" --output "$out_dir/celery-doctor.md" --output "$out_dir/celery-doctor.txt")
if [ -n "${CD_APP:-}" ]; then args+=(--app "$CD_APP"); fi
if [ -n "${CD_FAIL_ON:-}" ]; then args+=(--fail-on "$CD_FAIL_ON"); fi
if [ -n "${CD_BASELINE:-}" ]; then args+=(--baseline "$CD_BASELINE"); fi
# shellcheck disable=SC2206  # extra arguments are words, on purpose
extra=(${CD_ARGS:-})
"${CD_PROGRAM:-celery-doctor}" "${args[@]}" "${extra[@]}"
code=$?
if [ -f "$out_dir/celery-doctor.txt" ]; then cat "$out_dir/celery-doctor.txt"; fi
if [ -n "${GITHUB_STEP_SUMMARY:-}" ] && [ -f "$out_dir/celery-doctor.md" ]; then
  cat "$out_dir/celery-doctor.md" >> "$GITHUB_STEP_SUMMARY"
fi
{ echo "exit-code=$code"; echo "sarif-file=$sarif"; } >> "${GITHUB_OUTPUT:-/dev/null}"
case $code in
  0|1) exit 0 ;;
  *) echo "::error title=celery-doctor::celery-doctor lint could not run (exit $code): see the message above"
     exit "$code" ;;
esac
