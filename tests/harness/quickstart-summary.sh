#!/usr/bin/env bash
# The end of `make up`: where the stack answers, from this machine, where the generated secrets
# are, and a first answer from the model tier through Caddy over HTTPS (the request a client
# makes). Read-only. usage: quickstart-summary.sh [SANDBOX_CONTAINER]
set -euo pipefail
sandbox=${1:-mmo-sandbox}
cache=${MMO_CACHE:-/var/cache/mmo-harness}
secrets=$cache/secrets
ca=$cache/caddy-root.crt

in_sandbox() { docker exec "$sandbox" "$@"; }

ip=$(docker inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$sandbox" | awk '{print $1}')
[ -n "$ip" ] || { echo "quickstart-summary: $sandbox has no address on a Docker network" >&2; exit 1; }
# Caddy's own CA (tls internal), for this machine's clients.
in_sandbox cat /var/lib/multimodel/caddy/caddy/pki/authorities/local/root.crt > "$ca.tmp"
mv "$ca.tmp" "$ca"

# The site's address is localhost (Caddy's certificate names it): reach it at the sandbox's IP.
started=$(date +%s%N)
answer=$(curl -sS --fail-with-body --max-time 120 --cacert "$ca" --resolve "localhost:443:$ip" \
  https://localhost/api/query -H "Authorization: Bearer $(cat "$secrets/backend_api_key")" \
  -H 'Content-Type: application/json' -d '{"query": "Hello", "max_tokens": 16}')
elapsed_ms=$(( ($(date +%s%N) - started) / 1000000 ))
first=$(printf '%s' "$answer" | python3 -c '
import json, sys
reply = json.load(sys.stdin)
# Tiny random models answer noise: shown printable, shortened.
text = " ".join("".join(c if c.isprintable() else "?" for c in str(reply.get("answer") or "")).split())
print("%s, from %s%s: %s" % (reply.get("tier"), reply.get("instance"), " (cached)" if reply.get("cached") else "",
                             text[:100] or "(empty)"))')

targets=$(in_sandbox docker exec mmo-prometheus wget -q -O - 'http://127.0.0.1:9090/api/v1/targets?state=active' |
  python3 -c 'import json, sys; t = json.load(sys.stdin)["data"]["activeTargets"]; print("%d of %d targets up" % (sum(x["health"] == "up" for x in t), len(t)))')
grafana=$(in_sandbox docker ps --filter name=^mmo-grafana$ --format '{{.Ports}}')

cat <<EOF

The stack is up (the status table above lists every service).
  Site        https://localhost at $ip (this machine: curl --cacert $ca --resolve localhost:443:$ip https://localhost/)
              /api, /v1 and /ws want the site's API key: $secrets/backend_api_key
  Prometheus  $targets; on the sandbox's internal network (docker exec $sandbox docker exec mmo-prometheus wget -qO- http://127.0.0.1:9090/api/v1/targets)
  Grafana     ${grafana:-not deployed (set MMO_GRAFANA_IMAGE_ARCHIVE to a grafana image archive)}${grafana:+ in $sandbox, admin password in $secrets/grafana_admin_password}
  Secrets     $secrets (generated at random, outside git)
  First answer, in $elapsed_ms ms: $first
EOF
