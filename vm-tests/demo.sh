#!/bin/sh
# The enforcer demo, run inside a VM by `cargo xtask demo`. Read it top to bottom: every
# step is a command an operator or a security team would type.
set -u
POLICIES=/usr/share/enforcer/policies
FIXTURES=/usr/libexec/enforcer-tests
SCOPE=/sys/fs/cgroup/agents
LOG=/tmp/enforcer-decisions.log

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# Runs a program inside the governed scope: the subshell moves itself into the cgroup,
# then execs the program, so the exec is the one the kernel decides on.
in_scope() {
    label=$1; shift
    out=$(sh -c 'echo 0 > '"$SCOPE"'/cgroup.procs && exec "$@"' sh "$@" 2>&1)
    code=$?
    verdict_of "$label" "$code" "$out"
}
outside() {
    label=$1; shift
    out=$("$@" 2>&1); code=$?
    verdict_of "$label" "$code" "$out"
}
verdict_of() {
    case "$3" in
        *"Operation not permitted"*) printf '  %-44s \033[31mDENIED\033[0m  (EPERM from the kernel)\n' "$1" ;;
        *) printf '  %-44s \033[32mRAN\033[0m     (exit %s: %s)\n' "$1" "$2" "$3" ;;
    esac
}

step "Host: $(uname -r), active LSMs: $(cat /sys/kernel/security/lsm)"

step "An agent workspace: its tools, and a payload it downloaded"
mkdir -p /opt/agent/bin /tmp/downloads
cp $FIXTURES/probe /opt/agent/bin/report-tool
cp $FIXTURES/unlisted /tmp/downloads/payload
cp $FIXTURES/probe /tmp/downloads/renamed-report-tool
cp $FIXTURES/probe /tmp/downloads/patched-report-tool
printf '\001' | dd of=/tmp/downloads/patched-report-tool bs=1 seek=4000 conv=notrunc 2>/dev/null
chmod 755 /opt/agent/bin/* /tmp/downloads/*
echo '  /opt/agent/bin/report-tool          the tool the policy grants (by SHA-256)'
echo '  /tmp/downloads/payload               something the policy never granted'
echo '  /tmp/downloads/renamed-report-tool   the same bytes as report-tool, another name'
echo '  /tmp/downloads/patched-report-tool   report-tool with one byte changed'

step "Start the agent on the example policy ($POLICIES/demo.unsigned.toml)"
sed 's/^/  | /' $POLICIES/demo.unsigned.toml
enforcer run --unsigned-policy $POLICIES/demo.unsigned.toml > $LOG 2>/tmp/enforcer-agent.err &
AGENT=$!
for _ in $(seq 1 120); do grep -q "following decisions" $LOG 2>/dev/null && break; sleep 0.5; done
grep -q "following decisions" $LOG || { echo "agent did not start:"; cat /tmp/enforcer-agent.err; exit 1; }
enforcer status | sed 's/^/  /'

step "Inside the governed scope (cgroup /agents): only granted content runs"
in_scope "report-tool (granted)" /opt/agent/bin/report-tool
in_scope "payload (not granted)" /tmp/downloads/payload
in_scope "renamed-report-tool (same content)" /tmp/downloads/renamed-report-tool
in_scope "patched-report-tool (one byte changed)" /tmp/downloads/patched-report-tool

step "Outside every governed scope nothing changes"
outside "payload" /tmp/downloads/payload

step "What the agent saw (one line per decision in a governed scope)"
sleep 1
grep -v "following decisions" $LOG | sed 's/^/  /'

step "The agent dies; enforcement does not (program and maps are pinned)"
kill -9 $AGENT; wait $AGENT 2>/dev/null
in_scope "payload, with no agent running" /tmp/downloads/payload
in_scope "report-tool, with no agent running" /opt/agent/bin/report-tool

step "The operator's way out: enforcer unload"
enforcer unload | sed 's/^/  /'
in_scope "payload, after unload" /tmp/downloads/payload
echo
echo "Demo finished."
