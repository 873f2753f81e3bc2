#!/bin/sh
# The enforcer demo, run inside a VM by `cargo xtask demo`. Read it top to bottom: every
# `enforcer` line is a command a security team or an operator would type.
set -u
POLICIES=/usr/share/enforcer/policies
FIXTURES=/usr/libexec/enforcer-tests
SCOPE=/sys/fs/cgroup/agents
WORK=/tmp/demo
LOG=$WORK/agent-decisions.log
mkdir -p $WORK/keys $WORK/bundles $WORK/out $WORK/audit

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '  \033[2m$ %s\033[0m\n' "$*"; "$@" 2>&1 | sed 's/^/    /'; }
# Runs a program inside the governed scope: the subshell moves itself into the cgroup,
# then execs the program, so that exec is the one the kernel decides on.
in_scope() {
    label=$1; shift
    out=$(sh -c 'echo 0 > '"$SCOPE"'/cgroup.procs && exec "$@"' sh "$@" 2>&1)
    verdict_of "$label" "$?" "$out"
}
outside() {
    label=$1; shift
    out=$("$@" 2>&1)
    verdict_of "$label" "$?" "$out"
}
verdict_of() {
    case "$3" in
        *"Operation not permitted"*) printf '  %-46s \033[31mDENIED\033[0m  (EPERM from the kernel)\n' "$1" ;;
        *"failed to map segment"*) printf '  %-46s \033[31mDENIED\033[0m  (the loader could not map it)\n' "$1" ;;
        *) printf '  %-46s \033[32mRAN\033[0m     (exit %s: %s)\n' "$1" "$2" "$3" ;;
    esac
}
# Sleeps until the given Unix time (if it is still ahead).
wait_until() { left=$(( $1 - $(date +%s) )); [ "$left" -gt 0 ] && sleep "$left"; return 0; }
start_agent() {
    enforcer run --trust $POLICIES/trust.toml --bundle-dir $WORK/bundles --scope /agents \
        --state-dir $WORK/state --audit-dir $WORK/audit --host-key $WORK/keys/host.key \
        $HTTP >> $LOG 2>>$WORK/agent.err &
    AGENT=$!
    for _ in $(seq 1 120); do
        [ "$(grep -c 'following decisions' $LOG 2>/dev/null)" -ge "$1" ] && return 0
        sleep 0.5
    done
    echo "agent did not start:"; cat $WORK/agent.err; exit 1
}

# The web console: the VM's NIC (an e1000 on qemu's user network, whose port 9464 xtask
# forwards to the host's loopback), and the agent's read-only HTTP window on it. Beyond
# loopback the window needs a token. A kernel without the e1000 module has no console.
CONSOLE_PORT=9464
HOLD_PORT=7001
HTTP=
console_up() {
    module=$(ls /usr/lib/enforcer-tests/modules/e1000.ko* 2>/dev/null | head -n 1)
    [ -n "$module" ] || return 1
    case $module in *.xz) unxz -c "$module" > $WORK/e1000.ko; module=$WORK/e1000.ko ;; esac
    insmod "$module" 2>/dev/null || [ -d /sys/module/e1000 ] || return 1
    for _ in $(seq 1 50); do [ -e /sys/class/net/eth0 ] && break; sleep 0.2; done
    ip addr add 10.0.2.15/24 dev eth0 2>/dev/null && ip link set eth0 up || return 1
    head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > $WORK/http-token
    printf '[http]\nlisten = "0.0.0.0:%s"\ntoken_file = "%s"\n' $CONSOLE_PORT \
        $WORK/http-token > $WORK/http.toml
    HTTP="--config $WORK/http.toml"
}

step "Host: $(uname -r), active LSMs: $(cat /sys/kernel/security/lsm)"
if console_up; then
    # xtask prints the host's address of the console from this line.
    echo "ENFORCER-DEMO-CONSOLE $CONSOLE_PORT $(cat $WORK/http-token)"
else
    echo "  (no web console: this kernel has no e1000 module for the VM's NIC)"
fi

step "An agent workspace: its tool, and what else may end up there"
mkdir -p /opt/agent/bin /tmp/downloads
cp $FIXTURES/probe /opt/agent/bin/report-tool
cp $FIXTURES/unlisted /tmp/downloads/payload
cp $FIXTURES/probe /tmp/downloads/renamed-report-tool
cp $FIXTURES/probe /tmp/downloads/patched-report-tool
printf '\001' | dd of=/tmp/downloads/patched-report-tool bs=1 seek=4000 conv=notrunc 2>/dev/null
chmod 755 /opt/agent/bin/* /tmp/downloads/*
echo '  /opt/agent/bin/report-tool          the tool the security team will authorize'
echo '  /tmp/downloads/payload               something nobody authorized'
echo '  /tmp/downloads/renamed-report-tool   the same bytes as report-tool, another name'
echo '  /tmp/downloads/patched-report-tool   report-tool with one byte changed'

step "Operator: start the agent. /agents is governed; nothing is authorized yet"
# The example trust store needs 2 of 2 bundle keys (TEST-ONLY alice and bob) and 1 key
# for revocations and break-glass (TEST-ONLY carol). Private keys must be private.
for who in alice bob carol; do
    cp $POLICIES/keys/TEST-ONLY-$who.key $WORK/keys/$who.key; chmod 600 $WORK/keys/$who.key
done
show enforcer key generate --out $WORK/keys/host
start_agent 1
show enforcer status
in_scope "report-tool (nothing authorized yet)" /opt/agent/bin/report-tool

step "Security team: authorize report-tool for /agents, signed by two people, and push it"
show enforcer bundle create --issuer demo-team --bundle-id agents-tools --serial 1 \
    --scope /agents --valid-for 2h --with-libraries \
    --file /opt/agent/bin/report-tool,name=report-tool --out $WORK/out/agents-tools.json
show enforcer bundle sign --key $WORK/keys/alice.key $WORK/out/agents-tools.json
show enforcer bundle sign --key $WORK/keys/bob.key $WORK/out/agents-tools.json
show enforcer push $WORK/out/agents-tools.json

step "Inside the governed scope (cgroup /agents): only authorized content runs"
in_scope "report-tool (authorized)" /opt/agent/bin/report-tool
in_scope "payload (not authorized)" /tmp/downloads/payload
in_scope "renamed-report-tool (same content)" /tmp/downloads/renamed-report-tool
in_scope "patched-report-tool (one byte changed)" /tmp/downloads/patched-report-tool
in_scope "ld.so payload (loader trick)" /lib64/ld-linux-x86-64.so.2 /tmp/downloads/payload

step "Outside every governed scope nothing changes"
outside "payload" /tmp/downloads/payload

step "A short authorization (15 s) expires in the kernel, even with the agent killed"
show enforcer bundle create --issuer incident-team --bundle-id payload-once --serial 1 \
    --scope /agents --valid-for 15s --with-libraries \
    --file /tmp/downloads/payload,name=payload --out $WORK/out/payload-once.json
show enforcer bundle sign --key $WORK/keys/alice.key $WORK/out/payload-once.json
show enforcer bundle sign --key $WORK/keys/bob.key $WORK/out/payload-once.json
PUSHED=$(date +%s)
show enforcer push $WORK/out/payload-once.json
in_scope "payload (authorized for 15 s)" /tmp/downloads/payload
kill -9 $AGENT; wait $AGENT 2>/dev/null
echo "  agent killed with SIGKILL; waiting for the 15 s to pass"
wait_until $((PUSHED + 16))
in_scope "payload, expired, no agent running" /tmp/downloads/payload
in_scope "report-tool, no agent running" /opt/agent/bin/report-tool

step "The agent restarts and reattaches: no gap, nothing reloaded from scratch"
start_agent 2
show enforcer list

step "Security team: revoke report-tool (signed by the revocation key); denied at once"
show enforcer revoke create --issuer security --bundle-id agents-tools --reason "demo" \
    --out $WORK/out/revoke-agents-tools.json
show enforcer revoke sign --key $WORK/keys/carol.key $WORK/out/revoke-agents-tools.json
show enforcer revoke $WORK/out/revoke-agents-tools.json
in_scope "report-tool, after the revocation" /opt/agent/bin/report-tool
show enforcer status

step "Incident: a signed, time-boxed break-glass puts /agents in monitor mode for 15 s"
show enforcer break-glass create --issuer oncall --scope /agents --valid-for 15s \
    --reason "INC-42: agents blocked during outage" --out $WORK/out/break-glass.json
show enforcer break-glass sign --key $WORK/keys/carol.key $WORK/out/break-glass.json
# The log's times have whole seconds here: a second apart from the revocation above.
sleep 1
PUSHED=$(date +%s)
GLASS=$(date -u +%Y-%m-%dT%H:%M:%SZ)
show enforcer push $WORK/out/break-glass.json
in_scope "payload, during break-glass (recorded)" /tmp/downloads/payload
wait_until $((PUSHED + 16))
in_scope "payload, break-glass over (enforce again)" /tmp/downloads/payload

step "After the incident: learn a bundle from what ran, replay the log against it, push it"
# What /agents ran since the break-glass began, from the audit log: a review list, and an
# unsigned bundle of the content that is still on disk as it ran: the programs, and the
# loader and libraries they mapped (found by file name and content in the loader's
# directories).
show enforcer bundle create --issuer demo-team --bundle-id agents-learned --serial 2 \
    --scope /agents --valid-for 2h --from-audit --audit-dir $WORK/audit --since "$GLASS" \
    --out $WORK/out/learned.json
# Before anyone signs it: which recorded decisions it would change.
show enforcer audit --dir $WORK/audit replay --with $WORK/out/learned.json \
    --since "$GLASS" --scope /agents
show enforcer bundle sign --key $WORK/keys/alice.key $WORK/out/learned.json
show enforcer bundle sign --key $WORK/keys/bob.key $WORK/out/learned.json
show enforcer push $WORK/out/learned.json
in_scope "payload, under the learned bundle" /tmp/downloads/payload
kill -TERM $AGENT; wait $AGENT 2>/dev/null

step "The operator's way out: enforcer unload"
show enforcer unload
in_scope "payload, after unload" /tmp/downloads/payload

step "The audit trail: every decision, hash-chained, checkpoints signed by the host key"
show enforcer audit --dir $WORK/audit show
show enforcer audit --dir $WORK/audit verify --trust $WORK/keys/host.pub

step "Proof of one exec, checked offline with only the host's public key and a trust store"
REC=$(enforcer audit --dir $WORK/audit show --json | grep '"decision":"allow"' \
    | grep '"path":"/opt/agent/bin/report-tool"' | head -n 1)
BOOT=$(echo "$REC" | sed 's/.*"boot_id":"\([^"]*\)".*/\1/')
EXEC=$(echo "$REC" | sed 's/.*"exec_id":\([0-9]*\).*/\1/')
show enforcer audit --dir $WORK/audit prove --exec "$BOOT:$EXEC" --out $WORK/out/exec.proof.json
show enforcer proof verify $WORK/out/exec.proof.json --host-key $WORK/keys/host.pub \
    --trust $POLICIES/trust.toml
echo '  the same proof with one byte of the record changed:'
sed 's/report-tool\\"/report-tooX\\"/' $WORK/out/exec.proof.json > $WORK/out/forged.proof.json
show enforcer proof verify $WORK/out/forged.proof.json --host-key $WORK/keys/host.pub \
    --trust $POLICIES/trust.toml
if [ -n "$HTTP" ]; then
    step "The web console: the agent again, its whole log browsable"
    start_agent 3
    # xtask answers on the hold port at once, or, with `cargo xtask demo --console`, when
    # the person at the host is done looking.
    echo "ENFORCER-DEMO-HOLD $HOLD_PORT"
    nc -l -p $HOLD_PORT > /dev/null
    kill -TERM $AGENT; wait $AGENT 2>/dev/null
fi
echo
echo "Demo finished."
