#!/usr/bin/env bash
# The main job until the devnet lands: a PAK-KSA corridor log written, proved and checked with the log CLI.
# Every step is a real command an operator would run; the data lives in a temporary folder (or $1).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/.venv/bin"
dir=${1:-$(mktemp -d -t sez-demo.XXXXXX)}
mkdir -p "$dir/data"
origin=sez.gov.pk/corridor/PAK-KSA
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "keygen: the PAK signing key for $origin (mode 0600)"
[ -f "$dir/pak.key" ] || "$bin/sez-node" keygen --name "$origin" --out "$dir/pak.key"
ls -l "$dir/pak.key"

step "log append: 1,000 transfers PAK -> KSA as one signed, durable batch"
"$bin/python" - "$dir/transfers.jsonl" <<'PY'
import json, random, sys
rng = random.Random(7)
with open(sys.argv[1], "w") as out:
    for i in range(1000):
        payload = {"transfer_id": f"PK-SA-{i:06d}",
                   "sender": {"entity_id": f"pk-entity-{rng.randrange(50)}", "jurisdiction": "PAK"},
                   "receiver": {"entity_id": f"sa-entity-{rng.randrange(50)}", "jurisdiction": "SAU"},
                   "currency": rng.choice(["PKR", "SAR", "USD"]), "amount": str(rng.randrange(1, 10**12))}
        out.write(json.dumps({"kind": "transfer", "payload": payload}) + "\n")
PY
"$bin/sez-node" log append --data-dir "$dir/data" --corridor PAK-KSA --origin "$origin" --key "$dir/pak.key" "$dir/transfers.jsonl"

step "log append: a bad batch (a float amount on line 2) is refused whole"
printf '%s\n%s\n' \
  '{"kind":"attestation","payload":{"subject":"pk-entity-1","attestation_type":"licence","digest_sha256":"'"$(printf x | sha256sum | cut -c1-64)"'"}}' \
  '{"kind":"transfer","payload":{"transfer_id":"bad","sender":{"entity_id":"a","jurisdiction":"PAK"},"receiver":{"entity_id":"b","jurisdiction":"SAU"},"currency":"PKR","amount":1.5}}' \
  | "$bin/sez-node" log append --data-dir "$dir/data" --corridor PAK-KSA --origin "$origin" --key "$dir/pak.key" - \
  || echo "(refused as expected, exit $?)"

step "log checkpoint: the C2SP signed checkpoint"
"$bin/sez-node" log checkpoint --data-dir "$dir/data" --origin "$origin"

step "log receipt: receipt 417 as canonical JSON"
"$bin/sez-node" log receipt --data-dir "$dir/data" --origin "$origin" --index 417

step "log proof: a c2sp.org/tlog-proof@v1 bundle for receipt 417"
"$bin/sez-node" log proof --data-dir "$dir/data" --origin "$origin" --index 417 | tee "$dir/417.tlog-proof"

step "sez-light: verify that bundle offline with only the log's verifier key"
vkey=$("$bin/python" -c "import sys; from node.keyfile import load_signing_key; print(load_signing_key(sys.argv[1]).verifier().to_vkey())" "$dir/pak.key")
"$bin/sez-light" verify "$dir/417.tlog-proof" --log-key "$vkey"

step "log consistency: proof that the tree of 100 is a prefix of the tree of 1000"
"$bin/sez-node" log consistency --data-dir "$dir/data" --origin "$origin" --old 100 --new 1000

step "fsck: recompute every root from the stored leaves"
"$bin/sez-node" fsck --data-dir "$dir/data"
printf '\nData kept in %s\n' "$dir"
