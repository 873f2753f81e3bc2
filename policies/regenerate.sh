#!/bin/sh
# Regenerates the example artifacts in policies/examples/ with the enforcer CLI, signed by
# the TEST-ONLY keys in policies/keys/. Times are fixed, and Ed25519 signatures are
# deterministic, so a rerun reproduces the committed files byte for byte.
#
#   policies/regenerate.sh              # examples only, with the existing test keys
#   policies/regenerate.sh --new-keys   # first replace the test keys and trust.toml
#
# ENFORCER names the binary to use; by default it is built from this checkout.
set -eu
cd "$(dirname "$0")"

if [ -z "${ENFORCER:-}" ]; then
    cargo build --quiet --package enforcer --bin enforcer
    ENFORCER="$(cargo metadata --format-version 1 --no-deps | sed 's/.*"target_directory":"\([^"]*\)".*/\1/')/debug/enforcer"
fi
enforcer() { "$ENFORCER" "$@"; }

if [ "${1:-}" = "--new-keys" ]; then
    rm -f keys/TEST-ONLY-*.key keys/TEST-ONLY-*.pub
    for name in alice bob carol; do
        enforcer key generate --out "keys/TEST-ONLY-$name" >/dev/null
        sed -i '1i # TEST ONLY: committed on purpose so tests and the demo can sign. Anyone can\
# sign with this key; never put its public key in a real trust store.' "keys/TEST-ONLY-$name.key"
    done
    pub() { cat "keys/TEST-ONLY-$1.pub"; }
    cat > trust.toml <<EOF
# Example trust store. Its keys are TEST-ONLY: their private halves are committed in
# policies/keys/, so anyone can sign with them. Never trust them on a real machine.
version = 1

[thresholds]
# Two distinct keys with the "bundle" role must sign every bundle (alice and bob).
bundle = 2
# One key with the "revocation" role must sign every revocation (carol).
revocation = 1
# One key with the "break-glass" role must sign every break-glass artifact (carol). Leave
# this out and no break-glass artifact is accepted at all.
break_glass = 1

[break_glass]
# The longest window a break-glass may have (the default, written down).
max_duration = "4h"

[[keys]]
name = "TEST-ONLY-alice"
public_key = "$(pub alice)"
roles = ["bundle"]

[[keys]]
name = "TEST-ONLY-bob"
public_key = "$(pub bob)"
roles = ["bundle"]

[[keys]]
name = "TEST-ONLY-carol"
public_key = "$(pub carol)"
roles = ["revocation", "break-glass"]
EOF
fi

# git does not keep file modes beyond the executable bit; signing refuses loose keys.
chmod 600 keys/TEST-ONLY-*.key

times="--issued-at 2025-01-01T00:00:00Z"
enforcer bundle create --force --out examples/demo-bundle.json $times \
    --issuer demo --bundle-id enforcer-demo --serial 1 --scope /enforcer-demo \
    --not-before 2025-01-01T00:00:00Z --not-after 2035-01-01T00:00:00Z \
    --file examples/hello.sh,name=hello.sh --mode enforce --on-revoke deny-new >/dev/null
enforcer bundle sign --key keys/TEST-ONLY-alice.key examples/demo-bundle.json >/dev/null
enforcer bundle sign --key keys/TEST-ONLY-bob.key examples/demo-bundle.json >/dev/null

enforcer revoke create --force --out examples/demo-revocation.json $times \
    --issuer demo --bundle-id enforcer-demo-retired --reason "example: retire an old bundle line" >/dev/null
enforcer revoke sign --key keys/TEST-ONLY-carol.key examples/demo-revocation.json >/dev/null

# A break-glass is short-lived by design, so this one lies in a fixed past window (around
# the fuzz target's clock, 2027-01-15T08:00:00Z): it shows the format and is verified with
# --at, never against today's date.
enforcer break-glass create --force --out examples/demo-break-glass.json \
    --issuer demo-oncall --scope /enforcer-demo \
    --not-before 2027-01-15T07:00:00Z --not-after 2027-01-15T09:00:00Z \
    --reason "example: demo tool blocked, investigating" >/dev/null
enforcer break-glass sign --key keys/TEST-ONLY-carol.key examples/demo-break-glass.json >/dev/null

enforcer bundle verify --trust trust.toml examples/demo-bundle.json
enforcer revoke verify --trust trust.toml examples/demo-revocation.json
enforcer break-glass verify --trust trust.toml --at 2027-01-15T08:00:00Z examples/demo-break-glass.json
